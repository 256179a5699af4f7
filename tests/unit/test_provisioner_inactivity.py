"""queueInactivityTimeout: which running workers the loop terminates (a table of cases)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from services.provisioner.inactivity import inactivity_reason, last_activity
from services.provisioner.pools import Lifecycle

NOW = datetime(2026, 1, 1, tzinfo=UTC)
LIFECYCLE = Lifecycle(queueInactivityTimeout=1200)
SLACK_S = 80.0  # 60 s stamp resolution + one 20 s claimWork long poll


def ago(seconds: float) -> datetime:
    return NOW - timedelta(seconds=seconds)


@pytest.mark.parametrize(
    ("state", "registered_s", "queue_s", "holds", "inactive"),
    [
        # active at the queue within the timeout: kept
        ("running", 5000, 100, False, False),
        # silent past timeout but within the stamp's coarseness: kept
        ("running", 5000, 1200 + 79, False, False),
        # silent past timeout + slack: terminated
        ("running", 5000, 1200 + 81, False, True),
        # never called the queue: counts from registration
        ("running", 1000, None, False, False),
        ("running", 1300, None, False, True),
        # a stamp older than the registration (a previous life) does not count against it
        ("running", 100, 9000, False, False),
        # holds a claim: spared (a claimed run is proof the queue heard from it lately)
        ("running", 5000, 4000, True, False),
        # not registered yet: registrationTimeout's business, not this rule's
        ("requested", 5000, None, False, False),
        # already going
        ("stopping", 5000, 4000, False, False),
    ],
)
def test_inactivity_table(
    state: str, registered_s: float, queue_s: float | None, holds: bool, inactive: bool
) -> None:
    worker = {"state": state, "created": ago(registered_s + 5), "registeredAt": ago(registered_s)}
    reason = inactivity_reason(
        worker,
        LIFECYCLE,
        None if queue_s is None else ago(queue_s),
        holds_claims=holds,
        slack_s=SLACK_S,
        now=NOW,
    )
    assert (reason is not None) == inactive, reason
    if inactive:
        assert "queueInactivityTimeout 1200s" in (reason or "")


def test_a_worker_started_registered_counts_from_its_launch() -> None:
    worker = {"state": "running", "created": ago(50)}  # docker: no registerWorker call
    assert last_activity(worker, None) == ago(50)
    assert last_activity(worker, ago(10)) == ago(10)
