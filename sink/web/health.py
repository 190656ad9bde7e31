"""Liveness and readiness state (pure: the probes in ``sink.web.probes`` fill it)."""

from __future__ import annotations

import time
from dataclasses import dataclass

from sink.errors import SchemaBehind


@dataclass
class Health:
    draining: bool = False
    schema_ok: bool = False
    last_db_ok: float = 0.0
    last_db_check: float = 0.0
    last_db_error: str | None = None
    schema_behind: SchemaBehind | None = None  # set while migrations are pending

    def fresh(self, max_age: float) -> bool:
        return time.monotonic() - self.last_db_check < max_age
