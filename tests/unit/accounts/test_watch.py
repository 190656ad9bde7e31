"""Reloading the accounts file: a change is picked up, a bad file keeps the previous accounts."""

from __future__ import annotations

import asyncio
import os
from pathlib import Path

import pytest

from sink.accounts.model import Accounts
from sink.accounts.watch import AccountsHolder
from sink.config import Settings
from sink.errors import AccountsFileError

A = "AC" + "a" * 32
B = "AC" + "b" * 32


def write(path: Path, *sids: str) -> None:
    path.write_text("".join(f'[accounts.{sid}]\nauth_tokens = ["tok-{sid[-1]}"]\n' for sid in sids))


def test_a_bad_file_at_start_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "accounts.toml"
    path.write_text("[accounts.nope]\n")
    with pytest.raises(AccountsFileError, match=r"accounts.toml:1: \[accounts.nope\]"):
        AccountsHolder(Settings(accounts_file=path))


def test_the_same_account_in_the_file_and_the_settings_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "accounts.toml"
    write(path, A)
    with pytest.raises(AccountsFileError, match="also set by SINK_TWILIO_ACCOUNT_SID"):
        AccountsHolder(Settings(accounts_file=path, twilio_account_sid=A))


def test_a_missing_file_names_the_variable(tmp_path: Path) -> None:
    with pytest.raises(AccountsFileError, match=r"no such file \(SINK_ACCOUNTS_FILE\)"):
        AccountsHolder(Settings(accounts_file=tmp_path / "absent.toml"))


def test_reload_swaps_and_a_refused_file_keeps_the_previous(tmp_path: Path) -> None:
    path = tmp_path / "accounts.toml"
    write(path, A)
    holder = AccountsHolder(Settings(accounts_file=path))
    seen: list[Accounts] = []
    holder.on_change(seen.append)
    write(path, A, B)
    assert holder.reload() and holder.current.get(B) is not None and seen == [holder.current]
    before = holder.current
    path.write_text('[accounts.AC1]\nauth_tokens = ["x"]\n')
    assert not holder.reload()
    assert holder.current is before and len(seen) == 1
    assert holder.last_error is not None and "accounts.toml:1:" in holder.last_error


async def test_a_secret_swapped_by_symlinks_is_reloaded(tmp_path: Path) -> None:
    """As Kubernetes updates a mounted Secret: a new directory, then the ..data link moved."""
    mount = tmp_path / "secret"
    mount.mkdir()
    first = mount / "..2026_01"
    first.mkdir()
    write(first / "accounts.toml", A)
    (mount / "..data").symlink_to(first.name)
    (mount / "accounts.toml").symlink_to("..data/accounts.toml")
    holder = AccountsHolder(Settings(accounts_file=mount / "accounts.toml"))
    watch = asyncio.create_task(holder.watch(interval=0.01))
    try:
        second = mount / "..2026_02"
        second.mkdir()
        write(second / "accounts.toml", A, B)
        (mount / "..data_tmp").symlink_to(second.name)
        os.replace(mount / "..data_tmp", mount / "..data")
        for _ in range(200):
            if holder.current.get(B) is not None:
                break
            await asyncio.sleep(0.01)
        assert holder.current.get(B) is not None
    finally:
        watch.cancel()
