"""The database's copy of the SID rule (sink.is_sid) agrees with sink.twilio's."""

from __future__ import annotations

from typing import Any

import asyncpg
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from sink.twilio import SID_KINDS, is_sid

HEX = "0123456789abcdefABCDEF"
near_sids = st.builds(
    lambda prefix, digits, tail: prefix + digits + tail,
    st.sampled_from([*SID_KINDS, "fn", "FX", "", "FNFN"]),
    st.text(alphabet=HEX + "gz-", min_size=30, max_size=34),
    st.sampled_from(["", "\n", " ", "0"]),
)


@settings(
    max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(value=st.one_of(near_sids, st.text(max_size=40)), prefix=st.sampled_from(sorted(SID_KINDS)))
async def test_python_and_sql_agree_on_what_a_sid_is(
    conn: asyncpg.Connection[Any], value: str, prefix: str
) -> None:
    in_sql = await conn.fetchval("SELECT sink.is_sid($1, $2)", value.replace("\x00", ""), prefix)
    assert in_sql == is_sid(value.replace("\x00", ""), prefix)
