"""Pure helpers behind claiming and listing: task credentials (§4), claim waiters, page
tokens (§3.1) and the dependency rules (§5)."""

from __future__ import annotations

import asyncio
import json
import logging
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from types import SimpleNamespace
from typing import Any

import pytest
import taskcluster

from services.queue import credentials
from services.queue.waiters import ClaimWaiters
from shared import errors, paging, transitions
from shared.auth import certificates
from shared.auth.certificates import parse_certificate, verify_certificate
from shared.auth.errors import AuthenticationFailed
from shared.auth.scopes import ScopeSet
from shared.dependencies import problems, satisfies
from shared.models import TaskDefinition
from shared.timeutil import format_ts
from shared.transitions import TaskRecord

NOW = datetime(2025, 1, 2, 3, 4, 5, 678000, tzinfo=UTC)
TASK_ID = "E1rnOTBjTqqIuJvDw-QyQA"
ISSUER = "static/taskcluster/queue"
ISSUER_TOKEN = "queueAccessToken-0123456789abcdefABCDEF012"
TASK_SCOPES = ["docker-worker:cache:build-*", "secrets:get:project/ci"]

# --- task credentials -------------------------------------------------------------------


@pytest.mark.parametrize(
    ("taken_until", "suffix"),
    [
        (datetime(2025, 1, 2, 3, 24, 5, tzinfo=UTC), "1735788245"),
        (datetime(2025, 1, 2, 3, 24, 5, 500000, tzinfo=UTC), "1735788245.5"),
        (datetime(2025, 1, 2, 3, 24, 5, 678000, tzinfo=UTC), "1735788245.678"),
        (datetime(2025, 1, 2, 3, 24, 5, 100000, tzinfo=UTC), "1735788245.1"),
        (datetime(2025, 1, 2, 3, 24, 5, 10000, tzinfo=UTC), "1735788245.01"),
        (datetime(2025, 1, 2, 3, 24, 5, 1000, tzinfo=UTC), "1735788245.001"),
    ],
)
def test_task_client_id_prints_epoch_seconds_as_javascript(
    taken_until: datetime, suffix: str
) -> None:
    assert credentials.task_client_id(TASK_ID, 3, "wg-1", "w-7", taken_until) == (
        f"task-client/{TASK_ID}/3/on/wg-1/w-7/until/{suffix}"
    )


def test_run_scopes() -> None:
    assert credentials.run_scopes(TASK_ID, 2, TASK_SCOPES) == [
        f"queue:reclaim-task:{TASK_ID}/2",
        f"queue:resolve-task:{TASK_ID}/2",
        f"queue:create-artifact:{TASK_ID}/2",
        "docker-worker:cache:build-*",
        "secrets:get:project/ci",
    ]
    assert credentials.run_scopes(TASK_ID, 0, []) == [
        f"queue:reclaim-task:{TASK_ID}/0",
        f"queue:resolve-task:{TASK_ID}/0",
        f"queue:create-artifact:{TASK_ID}/0",
    ]


TAKEN_UNTIL = NOW + timedelta(minutes=20)
CLIENT_ID = f"task-client/{TASK_ID}/1/on/wg-1/w-7/until/1735788245.678"


def claim_credentials(task_scopes: list[str] = TASK_SCOPES) -> dict[str, str]:
    return credentials.for_claim(
        issuer_id=ISSUER,
        issuer_token=ISSUER_TOKEN,
        task_id=TASK_ID,
        run_id=1,
        worker_group="wg-1",
        worker_id="w-7",
        taken_until=TAKEN_UNTIL,
        task_scopes=task_scopes,
        now=NOW,
    )


def test_claim_credentials_are_named_and_scoped_to_the_run() -> None:
    creds = claim_credentials()
    assert set(creds) == {"clientId", "accessToken", "certificate"}
    assert creds["clientId"] == CLIENT_ID
    cert = json.loads(creds["certificate"])
    assert cert["issuer"] == ISSUER
    assert cert["scopes"] == credentials.run_scopes(TASK_ID, 1, TASK_SCOPES)
    assert "queue:claim-task:" not in creds["certificate"]
    # start = now, expiry = takenUntil, both in whole seconds as the official client does.
    assert cert["start"] == 1735787045000
    assert cert["expiry"] == 1735788245000


def test_claim_credentials_equal_the_official_clients(monkeypatch: pytest.MonkeyPatch) -> None:
    scopes = credentials.run_scopes(TASK_ID, 1, TASK_SCOPES)
    official = taskcluster.createTemporaryCredentials(
        ISSUER, ISSUER_TOKEN, NOW, TAKEN_UNTIL, scopes, name=CLIENT_ID
    )
    seed = json.loads(official["certificate"])["seed"]
    halves = iter([seed[:22], seed[22:]])
    monkeypatch.setattr(certificates, "slugid", lambda: next(halves))
    ours = claim_credentials()
    assert ours == {
        "clientId": official["clientId"],
        "accessToken": official["accessToken"].decode(),
        "certificate": official["certificate"],
    }


def verify(creds: dict[str, str], issuer_scopes: list[str], now: datetime) -> str:
    return verify_certificate(
        parse_certificate(creds["certificate"]),
        credential_name=creds["clientId"],
        issuer_id=ISSUER,
        issuer_access_token=ISSUER_TOKEN,
        issuer_scopes=ScopeSet(issuer_scopes),
        now=now,
    )


QUEUE_SCOPES = ["auth:create-client:task-client/*", "queue:*", *TASK_SCOPES]


@pytest.mark.parametrize(
    "now",
    [
        NOW,
        TAKEN_UNTIL,
        TAKEN_UNTIL + timedelta(minutes=4, seconds=59),  # auth's 5 min clock skew
        NOW - timedelta(minutes=4),
    ],
)
def test_claim_credentials_verify_until_taken_until_plus_skew(now: datetime) -> None:
    creds = claim_credentials()
    assert verify(creds, QUEUE_SCOPES, now) == creds["accessToken"]
    assert verify(creds, ["*"], now) == creds["accessToken"]


@pytest.mark.parametrize(
    ("issuer_scopes", "now", "message"),
    [
        (QUEUE_SCOPES, TAKEN_UNTIL + timedelta(minutes=5, seconds=1), "expiry < now"),
        (QUEUE_SCOPES, NOW - timedelta(minutes=5, seconds=1), "start > now"),
        (["queue:*", *TASK_SCOPES], NOW, "auth:create-client:task-client/"),
        (["auth:create-client:task-client/*", "queue:*"], NOW, "doesn't satisfy"),
    ],
)
def test_claim_credentials_are_refused_outside_their_rules(
    issuer_scopes: list[str], now: datetime, message: str
) -> None:
    with pytest.raises(AuthenticationFailed, match=message):
        verify(claim_credentials(), issuer_scopes, now)


def test_claim_credentials_do_not_verify_under_another_name() -> None:
    creds = {**claim_credentials(), "clientId": CLIENT_ID.replace("/1/on/", "/0/on/")}
    with pytest.raises(AuthenticationFailed, match="signature is not valid"):
        verify(creds, QUEUE_SCOPES, NOW)


# --- claim waiters ----------------------------------------------------------------------


async def never(_: str) -> bool:
    return False


async def settle() -> None:
    """Let every runnable task take its next steps."""
    for _ in range(5):
        await asyncio.sleep(0)


async def test_wait_times_out() -> None:
    waiters = ClaimWaiters(never)
    loop = asyncio.get_running_loop()
    started = loop.time()
    assert await waiters.wait("p/w", 0.05) is False
    assert loop.time() - started >= 0.04
    assert waiters.waiting("p/w") == 0
    assert waiters.notify("p/w") == 0


@pytest.mark.parametrize("timeout_s", [0, -1.0])
async def test_wait_without_time_left_returns_at_once(timeout_s: float) -> None:
    waiters = ClaimWaiters(never)
    assert await waiters.wait("p/w", timeout_s) is False
    assert waiters.waiting("p/w") == 0


async def test_notify_wakes_the_requested_number_longest_waiting_first() -> None:
    waiters = ClaimWaiters(never)
    woken: list[int] = []

    async def wait(index: int) -> None:
        if await waiters.wait("p/w", 5):
            woken.append(index)

    tasks = []
    for index in range(4):
        tasks.append(asyncio.create_task(wait(index)))
        await settle()  # each joins the line in turn
    assert waiters.waiting("p/w") == 4
    assert waiters.notify("p/w", 2) == 2
    await settle()
    assert woken == [0, 1]
    assert waiters.waiting("p/w") == 2
    assert waiters.notify("p/w") == 1
    await settle()
    assert woken == [0, 1, 2]
    assert waiters.notify("p/w", 5) == 1  # only one was left
    await asyncio.gather(*tasks)
    assert woken == [0, 1, 2, 3]
    assert waiters.waiting("p/w") == 0


async def test_notify_only_wakes_its_own_task_queue() -> None:
    waiters = ClaimWaiters(never)
    task = asyncio.create_task(waiters.wait("p/a", 5))
    await settle()
    assert waiters.notify("p/b") == 0
    assert waiters.waiting("p/a") == 1
    assert waiters.notify("p/a") == 1
    assert await task is True


async def test_notify_skips_waiters_that_went_away() -> None:
    waiters = ClaimWaiters(never)
    gone = asyncio.create_task(waiters.wait("p/w", 5))
    await settle()
    timed_out = asyncio.create_task(waiters.wait("p/w", 0.01))
    await settle()
    staying = asyncio.create_task(waiters.wait("p/w", 5))
    await settle()
    gone.cancel()
    assert await timed_out is False
    await settle()
    assert waiters.waiting("p/w") == 1
    assert waiters.notify("p/w") == 1
    assert await staying is True
    with pytest.raises(asyncio.CancelledError):
        await gone


async def test_a_waiter_joining_while_others_wake_stays_reachable() -> None:
    # Two waiters are woken by separate notifications while a new claimWork arrives in
    # between: the newcomer must still be in a line that notify (and the sweep) can see.
    waiters = ClaimWaiters(never)
    loop = asyncio.get_running_loop()
    first = asyncio.create_task(waiters.wait("p/w", 5))
    second = asyncio.create_task(waiters.wait("p/w", 5))
    await settle()
    newcomer: list[asyncio.Task[bool]] = []
    assert waiters.notify("p/w") == 1
    loop.call_soon(lambda: newcomer.append(asyncio.create_task(waiters.wait("p/w", 5))))
    assert waiters.notify("p/w") == 1
    assert await asyncio.gather(first, second) == [True, True]
    await settle()
    assert waiters.waiting("p/w") == 1
    assert waiters.notify("p/w") == 1
    assert await newcomer[0] is True


async def test_task_pending_events_wake_one_waiter_of_their_queue() -> None:
    waiters = ClaimWaiters(never)
    tasks = [asyncio.create_task(waiters.wait("prov/wt", 5)) for _ in range(2)]
    await settle()
    key = "primary.E1rnOTBjTqqIuJvDw-QyQA.0._._.prov.wt.-.E1rnOTBjTqqIuJvDw-QyQA._"
    await waiters.on_task_pending(SimpleNamespace(routing_key=key))  # type: ignore[arg-type]
    await waiters.on_task_pending(SimpleNamespace(routing_key="route.x"))  # type: ignore[arg-type]
    await waiters.on_task_pending(SimpleNamespace(routing_key=None))  # type: ignore[arg-type]
    await settle()
    assert [t.done() for t in tasks] == [True, False]
    assert waiters.waiting("prov/wt") == 1
    waiters.notify("prov/wt")
    await asyncio.gather(*tasks)


async def test_sweeper_probes_queues_with_waiters_and_wakes_one(
    caplog: pytest.LogCaptureFixture,
) -> None:
    probed: list[str] = []

    async def probe(task_queue_id: str) -> bool:
        probed.append(task_queue_id)
        if task_queue_id == "p/broken":
            raise RuntimeError("db down")
        return task_queue_id == "p/ready"

    waiters = ClaimWaiters(probe, sweep_interval_s=0.01)
    ready = [asyncio.create_task(waiters.wait("p/ready", 5)) for _ in range(2)]
    idle = asyncio.create_task(waiters.wait("p/idle", 5))
    broken = asyncio.create_task(waiters.wait("p/broken", 5))
    await settle()
    sweeper = asyncio.create_task(waiters.run_sweeper())
    with caplog.at_level(logging.ERROR, logger="services.queue.waiters"):
        assert await asyncio.wait_for(ready[0], 1) is True
        assert await asyncio.wait_for(ready[1], 1) is True  # a later sweep
    assert {"p/ready", "p/idle", "p/broken"} <= set(probed)
    assert "p/nobody" not in probed
    assert not idle.done() and not broken.done()
    assert any("claim sweep probe failed" in r.getMessage() for r in caplog.records)
    sweeper.cancel()
    with pytest.raises(asyncio.CancelledError):
        await sweeper
    waiters.notify("p/idle")
    waiters.notify("p/broken")
    assert await asyncio.gather(idle, broken) == [True, True]


# --- paging -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("query", "expected"),
    [({}, 1000), ({"limit": "5"}, 5), ({"limit": "1000"}, 1000), ({"limit": "5000"}, 1000)],
)
def test_limit(query: dict[str, str], expected: int) -> None:
    assert paging.limit(query) == expected


def test_limit_default_can_be_smaller() -> None:
    assert paging.limit({}, default=100) == 100
    assert paging.limit({"limit": "7"}, default=100) == 7


@pytest.mark.parametrize("text", ["", "abc", "-1", "1.5", " 5", "5 ", "1e3", "²", "٣", "５"])
def test_limit_must_match_the_pattern(text: str) -> None:
    with pytest.raises(errors.InvalidRequestArguments) as info:
        paging.limit({"limit": text})
    assert info.value.status == 400


@pytest.mark.parametrize(
    "position", [0, 17, "taskId-x", ["a", 3, None], {"k": [1, 2]}, "ünïcode/✓"]
)
def test_tokens_round_trip(position: Any) -> None:
    token = paging.encode(position)
    assert "=" not in token and "+" not in token and "/" not in token
    assert paging.decode({"continuationToken": token}) == position


@pytest.mark.parametrize("query", [{}, {"continuationToken": ""}])
def test_no_token_means_the_first_page(query: dict[str, str]) -> None:
    assert paging.decode(query) is None
    assert paging.decode_str(query) is None
    assert paging.decode_offset(query) == 0


@pytest.mark.parametrize("token", ["!!!!", "not-base64-json", "e30", "Zm9v", "%%%"])
def test_garbage_tokens_are_input_errors(token: str) -> None:
    # "e30" is `{}`: valid JSON but neither a string nor an offset.
    with pytest.raises(errors.InputError) as info:
        paging.decode_str({"continuationToken": token})
    assert info.value.status == 400
    with pytest.raises(errors.InputError):
        paging.decode_offset({"continuationToken": token})


def test_typed_decoders() -> None:
    assert paging.decode_str({"continuationToken": paging.encode("abc")}) == "abc"
    assert paging.decode_offset({"continuationToken": paging.encode(42)}) == 42
    for wrong in ("42", -1, True, 1.5, [1]):
        with pytest.raises(errors.InputError):
            paging.decode_offset({"continuationToken": paging.encode(wrong)})
    with pytest.raises(errors.InputError):
        paging.decode_str({"continuationToken": paging.encode(42)})


# --- dependency rules -------------------------------------------------------------------

DEP_A, DEP_B, DEP_C = "Y7uVueNBRNC70h3XRmuOCQ", "brGUfRMgQZGpYvdZvT7WSg", "YcRtzUz6TlC5z8oXd4xqIA"
DEADLINE = NOW + timedelta(days=1)


def task(**overrides: Any) -> TaskDefinition:
    body: dict[str, Any] = {
        "taskQueueId": "prov/wt",
        "created": format_ts(NOW),
        "deadline": format_ts(DEADLINE),
        "payload": {},
        "metadata": {"name": "n", "description": "d", "owner": "o", "source": "https://x"},
    }
    body.update(overrides)
    return TaskDefinition.model_validate(body)


def record(**overrides: Any) -> TaskRecord:
    return TaskRecord.new(DEP_A, task(**overrides))


def claimed(rec: TaskRecord) -> TaskRecord:
    outcome = transitions.claim(
        rec, len(rec.runs) - 1, worker_group="g", worker_id="w", now=NOW, claim_timeout_s=60
    )
    return outcome.record


def reported(resolution: str, **overrides: Any) -> TaskRecord:
    rec = claimed(transitions.schedule(record(**overrides), NOW).record)
    return transitions.resolve(rec, 0, resolution, now=NOW).record


DEPENDENCY_STATES: dict[str, Any] = {
    "unscheduled": lambda: record(),
    "pending": lambda: transitions.schedule(record(), NOW).record,
    "running": lambda: claimed(transitions.schedule(record(), NOW).record),
    "completed": lambda: reported("completed"),
    "failed": lambda: reported("failed"),
    "exception": lambda: reported("malformed-payload"),
    "cancelled": lambda: transitions.cancel(record(), NOW).record,
    "deadline-exceeded": lambda: transitions.deadline_exceeded(record(), DEADLINE).record,
    "retrying": lambda: reported("worker-shutdown"),
    "exception-no-retries-left": lambda: reported("worker-shutdown", retries=0),
    "completed-then-rerun": lambda: transitions.rerun(reported("completed"), NOW).record,
    "failed-then-completed": lambda: (
        transitions.resolve(
            claimed(transitions.rerun(reported("failed"), NOW).record), 1, "completed", now=NOW
        ).record
    ),
}

# state → (satisfies all-completed, satisfies all-resolved)
SATISFIES = {
    "unscheduled": (False, False),
    "pending": (False, False),
    "running": (False, False),
    "completed": (True, True),
    "failed": (False, True),
    "exception": (False, True),
    "cancelled": (False, True),
    "deadline-exceeded": (False, True),
    "retrying": (False, False),
    "exception-no-retries-left": (False, True),
    "completed-then-rerun": (False, False),
    "failed-then-completed": (True, True),
}


@pytest.mark.parametrize("state", list(SATISFIES))
def test_satisfies(state: str) -> None:
    required = DEPENDENCY_STATES[state]()
    all_completed, all_resolved = SATISFIES[state]
    assert satisfies(required, "all-completed") is all_completed
    assert satisfies(required, "all-resolved") is all_resolved


def test_problems_none_when_every_dependency_exists_and_outlives_the_deadline() -> None:
    dependent = task(dependencies=[DEP_A, DEP_B])
    found = {
        DEP_A: record(expires=format_ts(DEADLINE)),  # equal to the deadline is enough
        DEP_B: record(),
    }
    assert problems(dependent, found) == []
    assert problems(task(), {}) == []


def test_problems_name_missing_dependencies_in_order() -> None:
    dependent = task(dependencies=[DEP_C, DEP_A, DEP_B])
    (message,) = problems(dependent, {DEP_A: record()})
    assert message == f"The following dependencies are missing: {DEP_C}, {DEP_B}"


def test_problems_name_dependencies_expiring_before_the_deadline() -> None:
    dependent = task(dependencies=[DEP_A, DEP_B, DEP_C])
    short = record(
        deadline=format_ts(NOW + timedelta(hours=1)),
        expires=format_ts(DEADLINE - timedelta(milliseconds=1)),
    )
    found = {DEP_A: short, DEP_B: record(), DEP_C: replace(short)}
    (message,) = problems(dependent, found)
    assert message.startswith("The following dependencies expire before the task's deadline")
    assert message.endswith(f": {DEP_A}, {DEP_C}")


def test_problems_report_both_kinds() -> None:
    dependent = task(dependencies=[DEP_A, DEP_B])
    short = record(
        deadline=format_ts(NOW + timedelta(hours=1)), expires=format_ts(NOW + timedelta(hours=2))
    )
    messages = problems(dependent, {DEP_A: short})
    assert len(messages) == 2
    assert messages[0].endswith(DEP_B) and "missing" in messages[0]
    assert messages[1].endswith(DEP_A) and "expire" in messages[1]


def test_a_batch_of_resolutions_is_planned_per_dependent() -> None:
    from shared.dependencies import plan

    single, several = plan({"x": ["a", "b", "sink"], "y": ["sink", "c"], "z": []})
    assert single == {"x": ["a", "b"], "y": ["c"]}  # one update_many per required task
    assert several == {"sink": ["x", "y"]}  # one conditional update for both edges
