"""saml/time.py: the one xs:dateTime parser and formatter every module uses."""

from __future__ import annotations

import datetime as dt

import pytest

from idp_bridge.saml import metadata, requests, response_checks, responses
from idp_bridge.saml.time import (
    NaiveTimeError,
    format_display,
    format_xs_datetime,
    parse_instant,
    parse_xs_datetime,
)

T = dt.datetime(2025, 3, 1, 12, 0, 5, 123456, tzinfo=dt.UTC)


@pytest.mark.parametrize(("text", "expected"), [
    ("2025-03-01T12:00:05Z", T.replace(microsecond=0)),
    ("2025-03-01T12:00:05", T.replace(microsecond=0)),  # no zone: UTC (SAML core §1.3.3)
    ("2025-03-01T20:00:05+08:00", T.replace(microsecond=0)),
    ("2025-03-01T12:00:05.123456789Z", T),
    ("  2025-03-01T12:00:05.123456Z ", T),
])
def test_parse(text: str, expected: dt.datetime) -> None:
    assert parse_xs_datetime(text) == expected and parse_xs_datetime(text).tzinfo is dt.UTC
    assert parse_instant(text) == expected


@pytest.mark.parametrize("text", ["yesterday", "2025-03-01", "2025-13-01T00:00:00Z", "2025-03-01T12:00:05+8"])
def test_parse_refuses(text: str) -> None:
    with pytest.raises(ValueError):
        parse_xs_datetime(text)
    assert parse_instant(text) is None


def test_format() -> None:
    assert format_xs_datetime(T) == "2025-03-01T12:00:05Z"
    assert format_xs_datetime(T, "milliseconds") == "2025-03-01T12:00:05.123Z"
    assert format_xs_datetime(T, "auto") == "2025-03-01T12:00:05.123456Z"
    assert format_xs_datetime(T.replace(microsecond=0), "auto") == "2025-03-01T12:00:05Z"
    assert format_xs_datetime(T.astimezone(dt.timezone(dt.timedelta(hours=8)))) == "2025-03-01T12:00:05Z"
    assert format_display(T) == "2025-03-01 12:00:05Z"
    with pytest.raises(NaiveTimeError):
        format_xs_datetime(dt.datetime(2025, 3, 1))


def test_every_saml_module_uses_it() -> None:
    """The formatters that were separate now agree (one implementation behind each)."""
    assert responses.saml_time(T) == format_xs_datetime(T)
    assert metadata.format_xs_datetime(T) == format_xs_datetime(T, "auto")
    assert vars(requests)["parse_xs_datetime"] is parse_xs_datetime
    assert vars(metadata)["parse_xs_datetime"] is parse_xs_datetime
    assert vars(response_checks)["parse_instant"] is parse_instant
