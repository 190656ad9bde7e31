"""Subcommands beyond the core ones, one module each.

A module here defines ``register(sub: argparse._SubParsersAction) -> None`` that adds its
parser(s) and sets ``handler=`` to an ``async def (args, settings) -> int``. The CLI finds
the modules by itself.
"""
