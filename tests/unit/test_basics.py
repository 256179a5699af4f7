"""Ids, timestamps and settings: the small helpers every service leans on."""

from __future__ import annotations

import base64
import uuid
from datetime import UTC, datetime, timedelta, timezone

import pytest
from hypothesis import given
from hypothesis import strategies as st
from pydantic import TypeAdapter, ValidationError

from shared.config import load_settings
from shared.ids import slugid
from shared.models import Slugid
from shared.timeutil import format_ts, from_epoch_ms, parse_ts, to_epoch_ms, truncate_ms

SLUGIDS = TypeAdapter(Slugid)  # how the models check taskIds, taskGroupIds, ...


def test_slugids_are_v4_and_never_start_with_dash() -> None:
    for _ in range(2000):
        value = slugid()
        assert SLUGIDS.validate_python(value) == value
        assert not value.startswith("-")
        assert uuid.UUID(bytes=base64.urlsafe_b64decode(value + "==")).version == 4


def test_non_v4_slugid_is_rejected() -> None:
    v1 = base64.urlsafe_b64encode(uuid.uuid1().bytes).decode()[:22]
    for bad in (v1, "short", None, slugid() + "\n"):
        with pytest.raises(ValidationError):
            SLUGIDS.validate_python(bad)


def test_timestamp_form_is_upstreams() -> None:
    moment = datetime(2025, 1, 2, 3, 4, 5, 678901, tzinfo=UTC)
    assert format_ts(moment) == "2025-01-02T03:04:05.678Z"
    assert format_ts(moment.replace(microsecond=0)) == "2025-01-02T03:04:05.000Z"


def test_parse_normalises_offsets_and_precision() -> None:
    assert format_ts(parse_ts("2025-01-02T04:04:05.6789+01:00")) == "2025-01-02T03:04:05.678Z"
    assert format_ts(parse_ts("2025-01-02T03:04:05Z")) == "2025-01-02T03:04:05.000Z"


def test_parse_rejects_naive_and_garbage() -> None:
    for bad in ("2025-01-02T03:04:05", "yesterday", ""):
        with pytest.raises(ValueError):
            parse_ts(bad)


@given(st.datetimes(min_value=datetime(1971, 1, 1), max_value=datetime(2200, 1, 1)))
def test_timestamps_round_trip(moment: datetime) -> None:
    aware = truncate_ms(moment.replace(tzinfo=timezone(timedelta(hours=5))))
    assert parse_ts(format_ts(aware)) == aware
    assert from_epoch_ms(to_epoch_ms(aware)) == aware


def test_settings_read_flotilla_variables(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FLOTILLA_CLAIM_TIMEOUT", "30")
    monkeypatch.setenv("FLOTILLA_QUEUE_PORT", "9090")
    monkeypatch.setenv("FLOTILLA_ARTIFACT_STORE", "s3")
    settings = load_settings()
    assert (settings.claim_timeout_s, settings.queue_port, settings.artifact_store) == (
        30,
        9090,
        "s3",
    )


def test_settings_defaults_work_locally(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("FLOTILLA_CLAIM_TIMEOUT", "FLOTILLA_MONGO_URL", "FLOTILLA_QUEUE_PORT"):
        monkeypatch.delenv(name, raising=False)
    settings = load_settings()
    assert settings.claim_timeout_s == 1200
    assert settings.mongo_url.startswith("mongodb://127.0.0.1:27017")
    assert settings.queue_port == 8180


def test_settings_reject_bad_values(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FLOTILLA_ARTIFACT_STORE", "floppy")
    with pytest.raises(ValueError, match="artifact_store"):
        load_settings()


def test_the_embedded_artifact_store_has_a_truthful_name_and_keeps_its_old_one() -> None:
    from shared.config import load_settings

    assert load_settings(artifact_store="mongodb").artifact_store == "mongodb"
    assert load_settings(artifact_store="gridfs").artifact_store == "mongodb"
    assert load_settings().artifact_store == "mongodb"
