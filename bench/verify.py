"""``python -m bench.verify``: the signature check's time with 1 and 500 accounts.

The receiver's own check (``sink.web.verify.check_signature``) of one signed delivery, as
``POST /events/{AccountSid}`` (that account's tokens only) and as ``POST /events`` (every
account's tokens, tried in constant time each). Each account has two tokens (a rotation).
The figures are microseconds of CPU per check, the median of several rounds (each round
runs every case), and ratios against the path form with one account measured in the same
run: the path form must stay flat.
"""

from __future__ import annotations

import argparse
import hashlib
import secrets
import statistics
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from pydantic import SecretStr

from sink.accounts.model import Account, Accounts
from sink.config import Settings, load_settings
from sink.ingest import signature
from sink.maintenance.quarantine import KeptRequest
from sink.web.verify import check_signature

PUBLIC_URL = "https://sink.example.com/events"
BODY = b'[{"specversion":"1.0","id":"EZ1","source":"/x","type":"t","data":{}}]'
TOKENS_PER_ACCOUNT = 2


def make_accounts(count: int) -> Accounts:
    return Accounts.of(
        Account(
            sid="AC" + secrets.token_hex(16),
            label=f"account-{n}",
            auth_tokens=tuple(SecretStr(secrets.token_hex(16)) for _ in range(TOKENS_PER_ACCOUNT)),
        )
        for n in range(count)
    )


def signed(accounts: Accounts, *, path_form: bool) -> KeptRequest:
    """A delivery signed, as Twilio signs, with the current token of the last account."""
    account = accounts.listed()[-1]
    path = f"/events/{account.sid}" if path_form else "/events"
    query = f"bodySHA256={hashlib.sha256(BODY).hexdigest()}"
    url = f"https://sink.example.com{path}?{query}"
    key = account.signing_keys[0]
    headers = [
        (signature.SIGNATURE_HEADER, signature.compute_signature(url, key)),
        ("Content-Type", "application/json"),
    ]
    return KeptRequest.of("http", "10.0.0.7:8080", f"{path}?{query}", headers)


@dataclass(frozen=True, slots=True)
class Figure:
    accounts: int
    form: str
    micros: float


@dataclass(slots=True)
class Case:
    accounts: int
    form: str
    run: Callable[[], object]
    calls: int = 1
    runs: list[float] = field(default_factory=list)

    def calibrate(self, seconds: float) -> None:
        """Enough calls for one run to take about ``seconds`` of CPU."""
        while (took := self.time()) < seconds / 4:
            self.calls *= 4
        self.calls = max(1, int(self.calls * seconds / took))

    def time(self) -> float:
        started = time.process_time()  # CPU time: other processes on the machine count less
        for _ in range(self.calls):
            self.run()
        return time.process_time() - started


def case(count: int, form: str, settings: Settings) -> Case:
    accounts = make_accounts(count)
    request = signed(accounts, path_form=form == "path")
    check = check_signature(request, BODY, settings, accounts)
    assert check.ok and check.account == accounts.listed()[-1].sid, check
    return Case(count, form, lambda: check_signature(request, BODY, settings, accounts))


def measure(counts: Sequence[int], seconds: float, rounds: int) -> list[Figure]:
    """Every case once per round, round after round, so that a slower moment of the
    machine weighs on all of them alike; the median of the rounds."""
    settings = load_settings(public_url=PUBLIC_URL, twilio_auth_token="")
    cases = [case(count, form, settings) for count in counts for form in ("path", "plain")]
    for c in cases:
        c.calibrate(seconds)
    for _ in range(rounds):
        for c in cases:
            c.runs.append(c.time() / c.calls * 1e6)
    return [Figure(c.accounts, c.form, statistics.median(c.runs)) for c in cases]


def lines(figures: Sequence[Figure]) -> list[str]:
    base = next(
        f for f in figures if f.form == "path" and f.accounts == min(g.accounts for g in figures)
    )
    out = [f"{'accounts':>8}  {'form':<6} {'µs/check':>10}  vs path form, {base.accounts} account"]
    for f in figures:
        route = "/events/{AccountSid}" if f.form == "path" else "/events"
        out.append(
            f"{f.accounts:>8}  {f.form:<6} {f.micros:>10.1f}  {f.micros / base.micros:>6.2f}x"
            f"  ({route})"
        )
    return out


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.verify", description=__doc__)
    parser.add_argument(
        "--accounts",
        default="1,500",
        help="comma-separated account counts (default 1,500)",
    )
    parser.add_argument("--seconds", type=float, default=0.3, help="length of one run")
    parser.add_argument("--rounds", type=int, default=5, help="runs per figure (median)")
    args = parser.parse_args(argv)
    counts = sorted({int(n) for n in args.accounts.split(",") if n.strip()})
    print(f"== signature check, {TOKENS_PER_ACCOUNT} tokens per account")
    for line in lines(measure(counts, args.seconds, args.rounds)):
        print(line)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
