"""Timestamps in upstream's form: UTC, exactly three fractional digits, trailing `Z`."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta


def utcnow() -> datetime:
    """Now, truncated to whole milliseconds (the precision every stored date has)."""
    return truncate_ms(datetime.now(UTC))


def truncate_ms(value: datetime) -> datetime:
    return value.replace(microsecond=value.microsecond - value.microsecond % 1000)


def to_utc(value: datetime) -> datetime:
    """Aware UTC datetime; naive values are taken as UTC (that is what MongoDB hands back)."""
    if value.tzinfo is None:
        return value.replace(tzinfo=UTC)
    return value.astimezone(UTC)


def format_ts(value: datetime) -> str:
    """`2025-01-02T03:04:05.678Z`, like JavaScript's Date.toJSON()."""
    value = to_utc(value)
    return value.strftime("%Y-%m-%dT%H:%M:%S.") + f"{value.microsecond // 1000:03d}Z"


def parse_ts(text: str) -> datetime:
    """Any ISO-8601 date-time with an offset (or `Z`), normalised to UTC milliseconds."""
    if not isinstance(text, str):
        raise ValueError("must be a date-time string")
    candidate = text.strip()
    if candidate.endswith(("Z", "z")):
        candidate = candidate[:-1] + "+00:00"
    parsed = datetime.fromisoformat(candidate)
    if parsed.tzinfo is None:
        raise ValueError(f"{text!r} has no UTC offset")
    return truncate_ms(parsed.astimezone(UTC))


def from_now(seconds: float = 0, *, base: datetime | None = None) -> datetime:
    return truncate_ms((base or utcnow()) + timedelta(seconds=seconds))


_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_ONE_MS = timedelta(milliseconds=1)


def to_epoch_ms(value: datetime) -> int:
    # Integer arithmetic: going through float seconds loses a millisecond for far dates.
    return (to_utc(value) - _EPOCH) // _ONE_MS


def from_epoch_ms(ms: float) -> datetime:
    return truncate_ms(_EPOCH + timedelta(milliseconds=ms))
