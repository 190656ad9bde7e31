"""studio-sink: a Twilio Event Streams sink that keeps Studio flow data in Postgres."""

__version__ = "0.1.0"
