"""How claim-expiry walks the claims due: everything lapsed now, then sleep until the
first claim still held; and a full batch means look again at once, not sleep."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta

from services.claim_expiry.reapers import expiry_batch, wakes_for
from shared.timeutil import format_ts

NOW = datetime(2026, 11, 22, 12, 0, 0, tzinfo=UTC)


def held(offset_s: float) -> dict[str, object]:
    return {"taskId": f"t{offset_s}", "runId": 0, "takenUntil": NOW + timedelta(seconds=offset_s)}


def test_lapsed_claims_go_and_the_first_held_one_sets_the_wake_up() -> None:
    batch = [held(-3), held(-1), held(2), held(5)]
    lapsed, next_due = expiry_batch(batch, NOW, full=False)
    assert lapsed == batch[:2]
    assert next_due == NOW + timedelta(seconds=2)


def test_a_full_batch_of_lapsed_claims_means_look_again_now() -> None:
    batch = [held(-5), held(-4)]
    assert expiry_batch(batch, NOW, full=True) == (batch, NOW)
    # fewer than a batch and all lapsed: nothing else is held, sleep until woken
    assert expiry_batch(batch, NOW, full=False) == (batch, None)
    assert expiry_batch([], NOW, full=False) == ([], None)


def test_a_new_claim_wakes_the_reaper_only_if_it_lapses_before_its_next_look() -> None:
    asleep_until = NOW + timedelta(seconds=30)

    def body(taken_until: datetime) -> bytes:
        return json.dumps({"takenUntil": format_ts(taken_until)}).encode()

    assert not wakes_for(body(NOW + timedelta(minutes=20)), asleep_until)
    assert wakes_for(body(NOW + timedelta(seconds=5)), asleep_until)
    assert wakes_for(body(NOW + timedelta(minutes=20)), None)  # not asleep: look again
    assert wakes_for(b"not json", asleep_until)
