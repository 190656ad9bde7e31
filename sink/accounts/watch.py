"""The accounts in force for a running sink, reloaded without a restart.

The accounts file is read again on SIGHUP and when it changes on disk. On Kubernetes a
mounted Secret changes by a swap of symlinks, so the watch compares what ``stat`` says of
the file it points to (inode, size, modification time), not the path's own entry. A file
that is refused leaves the previous accounts in force, and the reason is logged and kept.
"""

from __future__ import annotations

import asyncio
import logging
import os
from collections.abc import Callable
from pathlib import Path

from sink.accounts.load import load_accounts
from sink.accounts.model import Accounts
from sink.config import Settings
from sink.errors import AccountsFileError

log = logging.getLogger(__name__)

Stamp = tuple[int, int, int] | None
Listener = Callable[[Accounts], None]


def _stamp(path: Path | None) -> Stamp:
    if path is None:
        return None
    try:
        found = os.stat(path)  # follows the symlinks of a mounted Secret
    except OSError:
        return None
    return (found.st_ino, found.st_size, found.st_mtime_ns)


class AccountsHolder:
    """``current``: the accounts in force, swapped whole on a reload (a reader never sees
    half of a file). Raises ``AccountsFileError`` at construction: a sink does not start
    with a refused file."""

    def __init__(self, settings: Settings) -> None:
        self._settings = settings
        self._path = settings.accounts_file
        self._stamp = _stamp(self._path)
        self.current: Accounts = load_accounts(settings)
        self.last_error: str | None = None
        self._listeners: list[Listener] = []

    @classmethod
    def fixed(cls, settings: Settings, accounts: Accounts) -> AccountsHolder:
        """A holder of given accounts, never reloaded (commands, tests)."""
        holder = cls.__new__(cls)
        holder._settings = settings
        holder._path = None
        holder._stamp = None
        holder.current = accounts
        holder.last_error = None
        holder._listeners = []
        return holder

    def on_change(self, listener: Listener) -> None:
        """Call ``listener`` with the new accounts after each reload that is accepted."""
        self._listeners.append(listener)

    def reload(self) -> bool:
        """Read the file again: True when the new accounts are in force."""
        self._stamp = _stamp(self._path)
        try:
            accounts = load_accounts(self._settings)
        except AccountsFileError as exc:
            self.last_error = str(exc)
            log.error("accounts file refused, the previous accounts stay in force: %s", exc)
            return False
        self.current = accounts
        self.last_error = None
        log.info("accounts reloaded: %d configured", len(accounts))
        for listener in self._listeners:
            listener(accounts)
        return True

    def changed_on_disk(self) -> bool:
        return self._path is not None and _stamp(self._path) != self._stamp

    async def watch(self, interval: float = 2.0) -> None:
        """Reload whenever the file changes; runs until cancelled."""
        if self._path is None:
            return
        while True:
            await asyncio.sleep(interval)
            if self.changed_on_disk():
                self.reload()
