"""``studio-sink serve --workers N``: a supervisor and N full sinks sharing the port.

``count`` turns the setting into a number of processes, ``supervisor`` starts the workers
and forwards signals to them, ``role`` is a worker's side of the arrangement.
"""
