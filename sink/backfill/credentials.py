"""Which REST credentials one account's Studio calls use, and which one worked. Pure.

An account has several during a token rotation (``auth_tokens = ["current", "next"]``, or
``SINK_TWILIO_AUTH_TOKEN=current,next``), and Twilio accepts only some of them at a given
moment: both until the new token is promoted, then only the new one. The client tries them
in the order ``candidates`` gives; the one that worked after another was refused goes first
from then on, so each later call costs no refused attempt. The accounts are read at each
call, so a reload is seen at once; a remembered credential that is no longer configured is
forgotten.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence

from sink.accounts.model import RestCredential
from sink.backfill.client import StudioCredentials

log = logging.getLogger(__name__)


def studio_credentials(credential: RestCredential) -> StudioCredentials:
    return StudioCredentials(
        credential.username, credential.password.get_secret_value(), credential.name
    )


class AccountCredentials:
    """``CredentialSource`` of one account (``sink.backfill.client``): its credentials in
    the configured order (API key, then each auth token), the last that worked first."""

    def __init__(self, label: str, current: Callable[[], Sequence[RestCredential]]) -> None:
        self._label = label  # the account, as log lines name it
        self._current = current
        self._preferred: StudioCredentials | None = None

    @property
    def preferred(self) -> StudioCredentials | None:
        return self._preferred

    def candidates(self) -> Sequence[StudioCredentials]:
        found = [studio_credentials(credential) for credential in self._current()]
        if self._preferred in found:
            found.remove(self._preferred)
            found.insert(0, self._preferred)
        return found

    def worked(self, credentials: StudioCredentials) -> None:
        if credentials == self._preferred:
            return
        self._preferred = credentials
        log.warning(
            "account %s: %s works where Twilio refused the credential tried before it; it is"
            " tried first from now on (a token rotation: once Twilio promoted the new token,"
            " configure it alone)",
            self._label,
            credentials.name,
        )
