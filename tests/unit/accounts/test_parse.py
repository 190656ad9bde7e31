"""The accounts file: what it accepts, and a refusal that names the line and the fix."""

from __future__ import annotations

import pytest

from sink.accounts.parse import parse_accounts
from sink.errors import AccountsFileError

A = "AC" + "a" * 32
B = "AC" + "b" * 32
KEY = "SK" + "c" * 32


def refusal(text: str) -> str:
    with pytest.raises(AccountsFileError) as caught:
        parse_accounts(text, "accounts.toml")
    return str(caught.value)


def test_every_key_is_read() -> None:
    text = f"""
[accounts.{A}]
label = "acme-prod"
auth_tokens = ["current", "next"]
api_key_sid = "{KEY}"
api_key_secret = "key-secret"
backfill_rate_limit = 3

[accounts.{B}]
auth_tokens = "only"
"""
    first, second = parse_accounts(text, "accounts.toml")
    assert (first.sid, first.label, first.api_key_sid, first.backfill_rate_limit) == (
        A,
        "acme-prod",
        KEY,
        3.0,
    )
    assert [t.get_secret_value() for t in first.auth_tokens] == ["current", "next"]
    assert first.signing_keys == (b"current", b"next")
    assert (second.label, second.signing_keys, second.api_key_sid) == (B, (b"only",), None)


def test_an_empty_file_has_no_accounts() -> None:
    assert parse_accounts("", "accounts.toml") == []


def test_broken_toml_names_its_line() -> None:
    message = refusal(f'[accounts.{A}]\nlabel = x\nauth_tokens = ["a"]\n')
    assert message.startswith("accounts.toml:2: not valid TOML (Invalid value);")
    assert refusal(f'[accounts.{A}]\nauth_tokens = ["a",\n').startswith("accounts.toml:2: ")


@pytest.mark.parametrize(
    ("table", "line", "reason"),
    [
        ('label = "x"\nauth_token = ["t"]', 3, "unknown key 'auth_token'"),
        ('label = "x"', 1, "needs auth_tokens"),
        ("auth_tokens = []", 2, "needs auth_tokens"),
        (f'auth_tokens = ["t"]\napi_key_sid = "{KEY}"', 3, "without api_key_secret"),
        ('auth_tokens = ["t"]\napi_key_secret = "s"', 3, "api_key_sid must be an API key SID"),
        ('auth_tokens = ["t"]\nbackfill_rate_limit = 0', 3, "positive number"),
        ('auth_tokens = ["t"]\nbackfill_rate_limit = true', 3, "positive number"),
        ('label = ""\nauth_tokens = ["t"]', 2, "label must be"),
    ],
)
def test_a_bad_table_names_the_line_of_the_key(table: str, line: int, reason: str) -> None:
    message = refusal(f"[accounts.{A}]\n{table}\n")
    assert message.startswith(f"accounts.toml:{line}: ")
    assert reason in message


def test_a_bad_sid_names_its_header() -> None:
    message = refusal(
        f'[accounts.{A}]\nauth_tokens = ["t"]\n\n[accounts.AC123]\nauth_tokens = ["t"]\n'
    )
    assert message.startswith("accounts.toml:4: [accounts.AC123]: an Account SID is AC")


def test_two_accounts_with_one_label_are_refused() -> None:
    message = refusal(
        f'[accounts.{A}]\nlabel = "prod"\nauth_tokens = ["t"]\n'
        f'[accounts.{B}]\nlabel = "prod"\nauth_tokens = ["u"]\n'
    )
    assert message.startswith("accounts.toml:5: label 'prod' is used by")


def test_unknown_top_level_keys_are_refused() -> None:
    assert "unknown top-level key 'account'" in refusal(f'[account.{A}]\nauth_tokens = ["t"]\n')


def test_no_secret_appears_in_a_refusal_or_a_repr() -> None:
    text = f'[accounts.{A}]\nauth_tokens = ["tok-secret-1"]\napi_key_sid = "{KEY}"\n'
    assert "tok-secret-1" not in refusal(text)
    (account,) = parse_accounts(f'[accounts.{A}]\nauth_tokens = ["tok-secret-1"]\n', "f")
    assert "tok-secret-1" not in repr(account)
