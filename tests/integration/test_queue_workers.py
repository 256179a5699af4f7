"""Provisioners, worker types, task queues, counts and workers through the official client,
against the running queue process (reference §3.2 "Worker metadata / task queues").

The queue process and its database are shared by the whole session, so every test works in
its own uuid-named provisioner and worker type and never assumes a list is otherwise empty.
"""

from __future__ import annotations

import datetime
import json
import re
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Callable
from typing import Any

import mohawk
import pytest
import taskcluster
import taskcluster.aio
from taskcluster.exceptions import TaskclusterRestFailure

from tests.conftest import RunningService

TS = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z$")
UTC = datetime.UTC


# --- helpers --------------------------------------------------------------------------------


def ids() -> tuple[str, str]:
    """A fresh (provisionerId, workerType) pair nobody else uses."""
    return f"p-{uuid.uuid4().hex[:12]}", f"wt-{uuid.uuid4().hex[:10]}"


def worker_name() -> str:
    return f"w-{uuid.uuid4().hex[:8]}"


def parse(ts: str) -> datetime.datetime:
    assert TS.match(ts), ts
    return datetime.datetime.fromisoformat(ts.replace("Z", "+00:00"))


def to_ms(text: str) -> str:
    """A client-made date (microseconds) in the server's form (milliseconds)."""
    value = datetime.datetime.fromisoformat(text.replace("Z", "+00:00"))
    value = value.replace(microsecond=value.microsecond // 1000 * 1000)
    return value.strftime("%Y-%m-%dT%H:%M:%S.") + f"{value.microsecond // 1000:03d}Z"


def near(ts: str, seconds_from_now: float, slack_s: float = 60) -> bool:
    expected = datetime.datetime.now(UTC) + datetime.timedelta(seconds=seconds_from_now)
    return abs((parse(ts) - expected).total_seconds()) <= slack_s


def task_def(task_queue_id: str, **extra: Any) -> dict[str, Any]:
    return {
        "taskQueueId": task_queue_id,
        "created": taskcluster.fromNowJSON("0 seconds"),
        "deadline": taskcluster.fromNowJSON("1 hour"),
        "payload": {},
        "metadata": {
            "name": "workers api test",
            "description": "a task for the worker metadata tests",
            "owner": "tests@example.com",
            "source": "https://example.com",
        },
        **extra,
    }


def create_tasks(queue: taskcluster.Queue, task_queue_id: str, n: int, **extra: Any) -> list[str]:
    task_ids = []
    for _ in range(n):
        task_id = taskcluster.slugId()
        queue.createTask(task_id, task_def(task_queue_id, **extra))
        task_ids.append(task_id)
    return task_ids


def claim(
    queue: taskcluster.Queue, task_queue_id: str, worker_group: str, worker_id: str, n: int = 1
) -> list[dict[str, Any]]:
    """claimWork; only call it when at least one task is pending (it long-polls otherwise)."""
    claims = queue.claimWork(
        task_queue_id, {"workerGroup": worker_group, "workerId": worker_id, "tasks": n}
    )["tasks"]
    assert claims, "claimWork returned nothing although tasks were pending"
    settled(queue, task_queue_id, claims)
    return claims


def settled(queue: taskcluster.Queue, task_queue_id: str, claims: list[dict[str, Any]]) -> None:
    """Wait for a claim's queue bookkeeping: claimWork answers as soon as the run is stored
    as running, and the counts and claimed list follow within milliseconds."""
    wanted = {(c["status"]["taskId"], c["runId"]) for c in claims}
    prov, wt = task_queue_id.split("/")
    worker = (claims[0]["workerGroup"], claims[0]["workerId"])
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline:
        listed = queue.listClaimedTasks(task_queue_id)["tasks"]
        try:
            recent = queue.getWorker(prov, wt, *worker)["recentTasks"]
        except TaskclusterRestFailure:
            recent = []
        if wanted <= {(t["taskId"], t["runId"]) for t in listed} and wanted <= {
            (t["taskId"], t["runId"]) for t in recent
        }:
            return
        time.sleep(0.01)
    pytest.fail(f"claims {wanted} never showed up in listClaimedTasks and getWorker")


def failure(call: Callable[[], object]) -> tuple[int, dict[str, Any]]:
    with pytest.raises(TaskclusterRestFailure) as caught:
        call()
    return caught.value.status_code, caught.value.body


def assert_error(
    call: Callable[[], object], status: int, code: str, method: str | None = None
) -> dict[str, Any]:
    got_status, body = failure(call)
    assert (got_status, body["code"]) == (status, code), body
    assert set(body) == {"code", "message", "requestInfo"}
    assert set(body["requestInfo"]) == {"method", "params", "payload", "time"}
    assert TS.match(body["requestInfo"]["time"])
    assert f"* errorCode:  {code}" in body["message"]
    assert f"* statusCode: {status}" in body["message"]
    if method is not None:
        assert body["requestInfo"]["method"] == method
    return body


def collect(call: Callable[..., dict[str, Any]], key: str, *args: Any, limit: int = 1) -> list:
    """Every item of a paginated list, fetched `limit` at a time; checks the page sizes."""
    items: list[Any] = []
    query: dict[str, Any] = {"limit": limit}
    while True:
        page = call(*args, query=query)
        assert len(page[key]) <= limit
        items.extend(page[key])
        token = page.get("continuationToken")
        if not token:
            return items
        query = {"limit": limit, "continuationToken": token}


def raw_get(
    service: RunningService, path: str, headers: dict[str, str] | None = None
) -> tuple[int, Any]:
    request = urllib.request.Request(service.root_url + path, headers=headers or {})
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as error:
        with error:
            return error.code, json.loads(error.read() or b"null")


def signed_get(service: RunningService, path: str) -> tuple[int, Any]:
    """A GET signed with Hawk for exactly this (unencoded) path, as curl or a browser sends."""
    url = service.root_url + path
    sender = mohawk.Sender(
        {"id": service.root_client_id, "key": service.root_access_token, "algorithm": "sha256"},
        url,
        "GET",
        content="",
        content_type="",
    )
    return raw_get(service, path, {"Authorization": sender.request_header})


# --- fixtures -------------------------------------------------------------------------------


@pytest.fixture
def queue(queue_service: RunningService) -> taskcluster.Queue:
    return taskcluster.Queue(queue_service.client_options())


@pytest.fixture
def make_queue(queue_service: RunningService) -> Callable[[list[str]], taskcluster.Queue]:
    """A Queue client whose credentials hold exactly these scopes."""
    auth = taskcluster.Auth(queue_service.client_options())

    def create(scopes: list[str]) -> taskcluster.Queue:
        client_id = f"test/workers/{uuid.uuid4().hex[:10]}"
        created = auth.createClient(
            client_id,
            {"expires": taskcluster.fromNowJSON("1 day"), "description": "t", "scopes": scopes},
        )
        return taskcluster.Queue(
            queue_service.client_options(clientId=client_id, accessToken=created["accessToken"])
        )

    return create


# --- where records come from ----------------------------------------------------------------


def test_a_task_queue_with_pending_tasks_is_known_before_any_worker(
    queue: taskcluster.Queue,
) -> None:
    """A mistyped queue name is exactly when an operator needs to see it: a task queue
    with pending tasks is listed and answers getTaskQueue before a worker asks it."""
    prov, wt = ids()
    tq = f"{prov}/{wt}"
    task_ids = create_tasks(queue, tq, 2)

    assert queue.pendingTasks(tq)["pendingTasks"] == 2
    task_queue = queue.getTaskQueue(tq)
    assert task_queue["taskQueueId"] == tq and "no worker" in task_queue["description"]
    assert near(task_queue["expires"], 5 * 86400)  # a queue seen without a worker: 5 days
    worker_type = queue.getWorkerType(prov, wt)  # times are "now": they may differ by a tick
    assert (worker_type["taskQueueId"], worker_type["workerType"]) == (tq, wt)
    assert queue.getProvisioner(prov)["provisionerId"] == prov
    assert [w["workerType"] for w in queue.listWorkerTypes(prov)["workerTypes"]] == [wt]
    assert queue.listWorkers(prov, wt) == {"workers": []}
    assert tq in [q["taskQueueId"] for q in collect(queue.listTaskQueues, "taskQueues", limit=1000)]
    assert prov in [
        p["provisionerId"] for p in collect(queue.listProvisioners, "provisioners", limit=1000)
    ]

    # nothing pending any more, and no worker ever came: the queue is unknown again
    for task_id in task_ids:
        queue.cancelTask(task_id)
    assert_error(lambda: queue.getTaskQueue(tq), 404, "ResourceNotFound", "getTaskQueue")
    assert_error(lambda: queue.getProvisioner(prov), 404, "ResourceNotFound", "getProvisioner")
    assert queue.listWorkerTypes(prov) == {"workerTypes": []}


def test_claim_work_creates_task_queue_worker_type_provisioner_and_worker(
    queue: taskcluster.Queue,
) -> None:
    prov, wt = ids()
    tq = f"{prov}/{wt}"
    wid = worker_name()
    create_tasks(queue, tq, 1)
    claim(queue, tq, "wg", wid)

    task_queue = queue.getTaskQueue(tq)
    assert set(task_queue) == {
        "taskQueueId",
        "description",
        "stability",
        "expires",
        "lastDateActive",
    }
    assert task_queue["taskQueueId"] == tq
    assert task_queue["description"] == ""
    assert task_queue["stability"] == "experimental"
    assert near(task_queue["expires"], 86400)  # a queue seen with a worker: now + 1 day
    assert near(task_queue["lastDateActive"], 0)

    worker_type = queue.getWorkerType(prov, wt)
    assert worker_type == {"provisionerId": prov, "workerType": wt, **task_queue}
    assert queue.listWorkerTypes(prov) == {"workerTypes": [worker_type]}

    provisioner = queue.getProvisioner(prov)
    assert provisioner == {
        "provisionerId": prov,
        "description": "",
        "stability": "experimental",
        "expires": task_queue["expires"],
        "lastDateActive": task_queue["lastDateActive"],
    }

    worker = queue.getWorker(prov, wt, "wg", wid)
    assert set(worker) == {
        "provisionerId",
        "workerType",
        "taskQueueId",
        "workerGroup",
        "workerId",
        "recentTasks",
        "expires",
        "quarantineUntil",
        "firstClaim",
        "lastDateActive",
    }
    assert worker["provisionerId"] == prov and worker["workerType"] == wt
    assert worker["taskQueueId"] == tq
    assert (worker["workerGroup"], worker["workerId"]) == ("wg", wid)
    assert near(worker["expires"], 86400)
    assert near(worker["firstClaim"], 0)
    assert parse(worker["lastDateActive"]) >= parse(worker["firstClaim"])


def test_provisioner_merges_its_task_queues(queue: taskcluster.Queue) -> None:
    prov, _ = ids()
    wts = sorted(f"wt-{uuid.uuid4().hex[:8]}" for _ in range(3))
    for wt in wts:
        queue.declareWorker(prov, wt, "wg", "w1", {"expires": taskcluster.fromNowJSON("2 days")})
    queue.declareWorker(prov, wts[1], "wg", "w1", {"expires": taskcluster.fromNowJSON("3 days")})

    listed = queue.listWorkerTypes(prov)["workerTypes"]
    assert [w["workerType"] for w in listed] == wts
    assert all(w["taskQueueId"] == f"{prov}/{w['workerType']}" for w in listed)
    provisioner = queue.getProvisioner(prov)
    assert provisioner["expires"] == max(w["expires"] for w in listed)
    assert provisioner["lastDateActive"] == max(w["lastDateActive"] for w in listed)


# --- listing and paging ---------------------------------------------------------------------


def test_list_provisioners_pages_visit_every_entry_once(queue: taskcluster.Queue) -> None:
    mine = sorted(ids()[0] for _ in range(3))
    for prov in mine:
        queue.declareWorker(prov, "wt", "wg", "w", {"expires": taskcluster.fromNowJSON("1 day")})

    whole = queue.listProvisioners()
    assert "continuationToken" not in whole
    paged = collect(queue.listProvisioners, "provisioners", limit=1)
    assert paged == whole["provisioners"]
    names = [p["provisionerId"] for p in paged]
    assert len(names) == len(set(names))
    assert set(mine) <= set(names)
    for entry in paged:
        if entry["provisionerId"] in mine:
            assert set(entry) == {
                "provisionerId",
                "description",
                "stability",
                "expires",
                "lastDateActive",
            }
            assert (entry["description"], entry["stability"]) == ("", "experimental")
            assert near(entry["expires"], 86400) and near(entry["lastDateActive"], 0)
    assert collect(queue.listProvisioners, "provisioners", limit=2) == paged


def test_list_task_queues_and_worker_types_page(queue: taskcluster.Queue) -> None:
    prov, _ = ids()
    wts = sorted(f"wt-{uuid.uuid4().hex[:8]}" for _ in range(3))
    for wt in wts:
        queue.declareWorker(prov, wt, "wg", "w", {"expires": taskcluster.fromNowJSON("1 day")})

    first = queue.listWorkerTypes(prov, query={"limit": 1})
    assert len(first["workerTypes"]) == 1 and "continuationToken" in first
    worker_types = collect(queue.listWorkerTypes, "workerTypes", prov, limit=1)
    assert [w["workerType"] for w in worker_types] == wts
    assert worker_types == queue.listWorkerTypes(prov)["workerTypes"]

    all_queues = collect(queue.listTaskQueues, "taskQueues", limit=1)
    queue_ids = [q["taskQueueId"] for q in all_queues]
    assert len(queue_ids) == len(set(queue_ids))
    assert all_queues == queue.listTaskQueues()["taskQueues"]
    mine = [q for q in all_queues if q["taskQueueId"].startswith(f"{prov}/")]
    assert [q["taskQueueId"] for q in mine] == [f"{prov}/{wt}" for wt in wts]
    assert all(
        set(q) == {"taskQueueId", "description", "stability", "expires", "lastDateActive"}
        for q in mine
    )


def test_paging_rejects_bad_limit_and_token(queue: taskcluster.Queue) -> None:
    assert_error(
        lambda: queue.listTaskQueues(query={"limit": "ten"}), 400, "InvalidRequestArguments"
    )
    assert_error(
        lambda: queue.listProvisioners(query={"continuationToken": "!!garbage!!"}),
        400,
        "InputError",
    )


# --- counts ---------------------------------------------------------------------------------


def test_counts_follow_tasks_being_created_claimed_and_resolved(
    queue: taskcluster.Queue, queue_service: RunningService
) -> None:
    prov, wt = ids()
    tq = f"{prov}/{wt}"

    def counts() -> tuple[int, int]:
        got = queue.taskQueueCounts(tq)
        assert set(got) == {"taskQueueId", "pendingTasks", "claimedTasks"}
        assert got["taskQueueId"] == tq
        return got["pendingTasks"], got["claimedTasks"]

    def settles_at(expected: tuple[int, int]) -> bool:
        # A claim is answered before its queue bookkeeping is written (milliseconds).
        deadline = time.monotonic() + 5
        while counts() != expected and time.monotonic() < deadline:
            time.sleep(0.02)
        return counts() == expected

    assert settles_at((0, 0))  # counting needs no task-queue record
    create_tasks(queue, tq, 3)
    assert settles_at((3, 0))
    assert queue.pendingTasks(tq) == {
        "provisionerId": prov,
        "workerType": wt,
        "taskQueueId": tq,
        "pendingTasks": 3,
    }

    claims = claim(queue, tq, "wg", worker_name(), n=2)
    assert len(claims) == 2
    assert settles_at((1, 2))

    as_worker = taskcluster.Queue(
        {
            "rootUrl": queue_service.root_url,
            "credentials": claims[0]["credentials"],
            "maxRetries": 0,
        }
    )
    as_worker.reportCompleted(claims[0]["status"]["taskId"], claims[0]["runId"])
    assert settles_at((1, 1))
    queue.reportFailed(claims[1]["status"]["taskId"], claims[1]["runId"])
    assert settles_at((1, 0))
    last = claim(queue, tq, "wg", worker_name())[0]
    assert settles_at((0, 1))
    queue.reportException(last["status"]["taskId"], 0, {"reason": "worker-shutdown"})
    assert settles_at((1, 0))  # the automatic retry is pending again
    assert queue.pendingTasks(tq)["pendingTasks"] == 1


def test_counts_batch_reports_each_queue_in_order(queue: taskcluster.Queue) -> None:
    queues = [f"{p}/{w}" for p, w in (ids(), ids(), ids())]
    create_tasks(queue, queues[0], 2)
    create_tasks(queue, queues[2], 1)
    claim(queue, queues[2], "wg", worker_name())
    result = queue.taskQueueCountsBatch({"taskQueueIds": queues})
    assert result == {
        "taskQueueCounts": [
            {"taskQueueId": queues[0], "pendingTasks": 2, "claimedTasks": 0},
            {"taskQueueId": queues[1], "pendingTasks": 0, "claimedTasks": 0},
            {"taskQueueId": queues[2], "pendingTasks": 0, "claimedTasks": 1},
        ]
    }
    assert queue.taskQueueCountsBatch({"taskQueueIds": []}) == {"taskQueueCounts": []}
    assert_error(
        lambda: queue.taskQueueCountsBatch({"taskQueueIds": ["no-slash"]}),
        400,
        "InputValidationError",
    )


def test_counts_batch_needs_both_scopes_for_every_queue(
    make_queue: Callable[[list[str]], taskcluster.Queue],
) -> None:
    one, two = (f"{p}/{w}" for p, w in (ids(), ids()))
    both = [f"queue:pending-count:{one}", f"queue:claimed-count:{one}"]
    body = {"taskQueueIds": [one, two]}

    partial = make_queue([*both, f"queue:pending-count:{two}"])
    error = assert_error(
        lambda: partial.taskQueueCountsBatch(body),
        403,
        "InsufficientScopes",
        "taskQueueCountsBatch",
    )
    assert f"queue:claimed-count:{two}" in error["message"]
    assert error["requestInfo"]["payload"] == body
    assert partial.taskQueueCountsBatch({"taskQueueIds": [one]})["taskQueueCounts"][0] == {
        "taskQueueId": one,
        "pendingTasks": 0,
        "claimedTasks": 0,
    }

    full = make_queue([*both, f"queue:pending-count:{two}", f"queue:claimed-count:{two}"])
    assert [c["taskQueueId"] for c in full.taskQueueCountsBatch(body)["taskQueueCounts"]] == [
        one,
        two,
    ]
    starred = make_queue(["queue:pending-count:*", "queue:claimed-count:*"])
    assert len(starred.taskQueueCountsBatch(body)["taskQueueCounts"]) == 2


def test_count_and_list_scopes_are_per_queue(
    make_queue: Callable[[list[str]], taskcluster.Queue],
) -> None:
    prov, wt = ids()
    tq = f"{prov}/{wt}"
    pending_only = make_queue([f"queue:pending-count:{tq}"])
    assert pending_only.pendingTasks(tq)["pendingTasks"] == 0
    error = assert_error(
        lambda: pending_only.taskQueueCounts(tq), 403, "InsufficientScopes", "taskQueueCounts"
    )
    assert f"queue:claimed-count:{tq}" in error["message"]
    assert_error(lambda: pending_only.listPendingTasks(tq), 403, "InsufficientScopes")
    assert_error(lambda: pending_only.listClaimedTasks(tq), 403, "InsufficientScopes")
    assert_error(lambda: pending_only.getTaskQueue(tq), 403, "InsufficientScopes")
    # Scopes are checked before existence: a 403, not a 404.
    assert_error(lambda: pending_only.getProvisioner(prov), 403, "InsufficientScopes")

    lister = make_queue([f"queue:pending-list:{tq}", f"queue:claimed-list:{tq}"])
    assert lister.listPendingTasks(tq) == {"tasks": []}
    assert lister.listClaimedTasks(tq) == {"tasks": []}


# --- pending and claimed lists --------------------------------------------------------------


def test_list_pending_tasks_in_insertion_order(queue: taskcluster.Queue) -> None:
    prov, wt = ids()
    tq = f"{prov}/{wt}"
    priorities = ["low", "highest", "lowest", "medium"]
    task_ids = [create_tasks(queue, tq, 1, priority=p)[0] for p in priorities]

    listed = queue.listPendingTasks(tq)
    assert "continuationToken" not in listed
    tasks = listed["tasks"]
    assert [t["taskId"] for t in tasks] == task_ids  # by insertion, not by priority
    for entry in tasks:
        assert set(entry) == {"taskId", "runId", "task", "inserted"}
        assert entry["runId"] == 0
        assert entry["task"] == queue.task(entry["taskId"])
        assert near(entry["inserted"], 0)
    inserted = [parse(t["inserted"]) for t in tasks]
    assert inserted == sorted(inserted)
    assert collect(queue.listPendingTasks, "tasks", tq, limit=1) == tasks
    assert collect(queue.listPendingTasks, "tasks", tq, limit=3) == tasks

    # claims follow priority; the claimed one leaves the pending list
    claimed = claim(queue, tq, "wg", worker_name())[0]
    assert claimed["status"]["taskId"] == task_ids[1]
    remaining = [t["taskId"] for t in queue.listPendingTasks(tq)["tasks"]]
    assert remaining == [task_ids[0], task_ids[2], task_ids[3]]


def test_list_pending_tasks_shows_a_retry_at_the_back(queue: taskcluster.Queue) -> None:
    prov, wt = ids()
    tq = f"{prov}/{wt}"
    first, second = create_tasks(queue, tq, 2)
    claimed = claim(queue, tq, "wg", worker_name())[0]
    assert claimed["status"]["taskId"] == first
    queue.reportException(first, 0, {"reason": "intermittent-task"})
    tasks = queue.listPendingTasks(tq)["tasks"]
    assert [(t["taskId"], t["runId"]) for t in tasks] == [(second, 0), (first, 1)]


def test_list_claimed_tasks_fields(queue: taskcluster.Queue) -> None:
    prov, wt = ids()
    tq = f"{prov}/{wt}"
    wid = worker_name()
    create_tasks(queue, tq, 3)
    claims = claim(queue, tq, "group-1", wid, n=2)
    assert len(claims) == 2

    tasks = queue.listClaimedTasks(tq)["tasks"]
    assert sorted(t["taskId"] for t in tasks) == sorted(c["status"]["taskId"] for c in claims)
    for entry in tasks:
        assert set(entry) == {"taskId", "runId", "workerGroup", "workerId", "claimed", "task"}
        assert (entry["runId"], entry["workerGroup"], entry["workerId"]) == (0, "group-1", wid)
        status = queue.status(entry["taskId"])["status"]
        assert entry["claimed"] == status["runs"][0]["started"]
        assert entry["task"] == queue.task(entry["taskId"])
    assert collect(queue.listClaimedTasks, "tasks", tq, limit=1) == tasks

    done = claims[0]["status"]["taskId"]
    queue.reportCompleted(done, 0)
    assert [t["taskId"] for t in queue.listClaimedTasks(tq)["tasks"]] == [
        claims[1]["status"]["taskId"]
    ]
    assert len(queue.listPendingTasks(tq)["tasks"]) == 1


# --- workers --------------------------------------------------------------------------------


def test_get_worker_keeps_the_20_most_recent_tasks(queue: taskcluster.Queue) -> None:
    prov, wt = ids()
    tq = f"{prov}/{wt}"
    wid = worker_name()
    task_ids = create_tasks(queue, tq, 22)
    claimed: list[tuple[str, int]] = []
    first_claim = None
    for _ in range(3):
        got = claim(queue, tq, "wg", wid)
        claimed += [(c["status"]["taskId"], c["runId"]) for c in got]
        if first_claim is None:
            first_claim = queue.getWorker(prov, wt, "wg", wid)["firstClaim"]
    claimed += [(c["status"]["taskId"], c["runId"]) for c in claim(queue, tq, "wg", wid, n=19)]
    assert [t for t, _ in claimed] == task_ids  # same priority: first in, first out

    worker = queue.getWorker(prov, wt, "wg", wid)
    assert worker["recentTasks"] == [{"taskId": t, "runId": r} for t, r in claimed[-20:]]
    assert worker["firstClaim"] == first_claim
    assert parse(worker["lastDateActive"]) >= parse(worker["firstClaim"])
    assert near(worker["lastDateActive"], 0)
    # Never quarantined: quarantineUntil is still reported, in the past.
    assert parse(worker["quarantineUntil"]) < parse(worker["firstClaim"])

    (summary,) = queue.listWorkers(prov, wt)["workers"]
    assert summary == {
        "workerGroup": "wg",
        "workerId": wid,
        "firstClaim": worker["firstClaim"],
        "lastDateActive": worker["lastDateActive"],
        "latestTask": {"taskId": claimed[-1][0], "runId": claimed[-1][1]},
    }


def test_list_workers_pages_and_sorts(queue: taskcluster.Queue) -> None:
    prov, wt = ids()
    names = sorted((group, worker_name()) for group in ("g1", "g2") for _ in range(2))
    for group, wid in names:
        queue.declareWorker(prov, wt, group, wid, {"expires": taskcluster.fromNowJSON("1 day")})
    workers = collect(queue.listWorkers, "workers", prov, wt, limit=1)
    assert [(w["workerGroup"], w["workerId"]) for w in workers] == names
    assert workers == queue.listWorkers(prov, wt)["workers"]
    for entry in workers:
        assert set(entry) == {"workerGroup", "workerId", "firstClaim", "lastDateActive"}


def test_quarantine_worker(queue: taskcluster.Queue, queue_service: RunningService) -> None:
    prov, wt = ids()
    tq = f"{prov}/{wt}"
    bad, good = worker_name(), worker_name()
    assert_error(
        lambda: queue.quarantineWorker(
            prov, wt, "wg", bad, {"quarantineUntil": taskcluster.fromNowJSON("1 hour")}
        ),
        404,
        "ResourceNotFound",
        "quarantineWorker",
    )
    create_tasks(queue, tq, 2)
    claim(queue, tq, "wg", bad)
    claim(queue, tq, "wg", good)

    until = taskcluster.fromNowJSON("1 hour")
    quarantined = queue.quarantineWorker(
        prov, wt, "wg", bad, {"quarantineUntil": until, "quarantineInfo": "flaky disk"}
    )
    assert quarantined["workerId"] == bad and quarantined["taskQueueId"] == tq
    assert quarantined["quarantineUntil"] == to_ms(until)
    (detail,) = quarantined["quarantineDetails"]
    assert detail["clientId"] == queue_service.root_client_id
    assert detail["quarantineInfo"] == "flaky disk"
    assert detail["quarantineUntil"] == quarantined["quarantineUntil"]
    assert near(detail["updatedAt"], 0)
    assert queue.getWorker(prov, wt, "wg", bad)["quarantineUntil"] == quarantined["quarantineUntil"]

    def listed(**query: str) -> list[str]:
        return [w["workerId"] for w in queue.listWorkers(prov, wt, query=query)["workers"]]

    assert sorted(listed()) == sorted([bad, good])
    assert listed(quarantined="true") == [bad]
    assert listed(quarantined="false") == [good]
    summary = next(w for w in queue.listWorkers(prov, wt)["workers"] if w["workerId"] == bad)
    assert summary["quarantineUntil"] == quarantined["quarantineUntil"]
    assert_error(
        lambda: queue.listWorkers(prov, wt, query={"quarantined": "yes"}),
        400,
        "InvalidRequestArguments",
    )

    # Lifting the quarantine: a date in the past; the history keeps both entries.
    lifted = queue.quarantineWorker(
        prov, wt, "wg", bad, {"quarantineUntil": taskcluster.fromNowJSON("-1 minute")}
    )
    assert [d["quarantineInfo"] for d in lifted["quarantineDetails"]] == [
        "flaky disk",
        "[unspecified]",
    ]
    assert listed(quarantined="true") == []
    assert sorted(listed(quarantined="false")) == sorted([bad, good])
    summary = next(w for w in queue.listWorkers(prov, wt)["workers"] if w["workerId"] == bad)
    assert "quarantineUntil" not in summary


def test_quarantine_request_is_validated(queue: taskcluster.Queue) -> None:
    prov, wt = ids()
    queue.declareWorker(prov, wt, "wg", "w", {"expires": taskcluster.fromNowJSON("1 day")})
    for body in (
        {},
        {"quarantineUntil": "tomorrow"},
        {"quarantineUntil": taskcluster.fromNowJSON("1 hour"), "x": 1},
    ):
        assert_error(
            lambda body=body: queue.quarantineWorker(prov, wt, "wg", "w", body),
            400,
            "InputValidationError",
        )
    long_info = {"quarantineUntil": taskcluster.fromNowJSON("1 hour"), "quarantineInfo": "x" * 4001}
    assert_error(
        lambda: queue.quarantineWorker(prov, wt, "wg", "w", long_info), 400, "InputValidationError"
    )


def test_expired_workers_are_hidden_unless_quarantined(queue: taskcluster.Queue) -> None:
    prov, wt = ids()
    queue.declareWorker(prov, wt, "wg", "live", {"expires": taskcluster.fromNowJSON("1 day")})
    queue.declareWorker(prov, wt, "wg", "gone", {"expires": taskcluster.fromNowJSON("-1 hour")})
    assert [w["workerId"] for w in queue.listWorkers(prov, wt)["workers"]] == ["live"]
    queue.quarantineWorker(
        prov, wt, "wg", "gone", {"quarantineUntil": taskcluster.fromNowJSON("1 hour")}
    )
    assert [
        w["workerId"] for w in queue.listWorkers(prov, wt, query={"quarantined": "true"})["workers"]
    ] == ["gone"]


async def test_quarantined_worker_gets_no_work(
    queue: taskcluster.Queue, queue_service: RunningService
) -> None:
    prov, wt = ids()
    tq = f"{prov}/{wt}"
    bad = worker_name()
    queue.declareWorker(prov, wt, "wg", bad, {"expires": taskcluster.fromNowJSON("1 day")})
    queue.quarantineWorker(
        prov, wt, "wg", bad, {"quarantineUntil": taskcluster.fromNowJSON("1 hour")}
    )
    (task_id,) = create_tasks(queue, tq, 1)

    async with taskcluster.aio.createSession() as session:
        aio_queue = taskcluster.aio.Queue(queue_service.client_options(), session=session)
        started = time.monotonic()
        result = await aio_queue.claimWork(tq, {"workerGroup": "wg", "workerId": bad, "tasks": 1})
        waited = time.monotonic() - started
        assert result == {"tasks": []}
        assert waited >= 19, waited
        assert (await aio_queue.taskQueueCounts(tq))["pendingTasks"] == 1

        # Somebody else gets it at once.
        started = time.monotonic()
        other = await aio_queue.claimWork(
            tq, {"workerGroup": "wg", "workerId": worker_name(), "tasks": 1}
        )
        assert time.monotonic() - started < 5
        assert [c["status"]["taskId"] for c in other["tasks"]] == [task_id]
        worker = await aio_queue.getWorker(prov, wt, "wg", bad)
        assert worker["recentTasks"] == []


async def test_aio_client_reads_worker_metadata(
    queue: taskcluster.Queue, queue_service: RunningService
) -> None:
    prov, wt = ids()
    tq = f"{prov}/{wt}"
    wid = worker_name()
    (task_id,) = create_tasks(queue, tq, 1)
    async with taskcluster.aio.createSession() as session:
        aio_queue = taskcluster.aio.Queue(queue_service.client_options(), session=session)
        claims = (
            await aio_queue.claimWork(tq, {"workerGroup": "wg", "workerId": wid, "tasks": 4})
        )["tasks"]
        assert [c["status"]["taskId"] for c in claims] == [task_id]
        settled(queue, tq, claims)
        assert (await aio_queue.getTaskQueue(tq))["taskQueueId"] == tq
        assert (await aio_queue.getWorkerType(prov, wt))["workerType"] == wt
        assert (await aio_queue.getProvisioner(prov))["provisionerId"] == prov
        assert await aio_queue.taskQueueCounts(tq) == {
            "taskQueueId": tq,
            "pendingTasks": 0,
            "claimedTasks": 1,
        }
        assert (await aio_queue.taskQueueCountsBatch({"taskQueueIds": [tq]}))[
            "taskQueueCounts"
        ] == [{"taskQueueId": tq, "pendingTasks": 0, "claimedTasks": 1}]
        claimed = (await aio_queue.listClaimedTasks(tq))["tasks"]
        assert [(c["taskId"], c["workerId"]) for c in claimed] == [(task_id, wid)]
        workers = (await aio_queue.listWorkers(prov, wt))["workers"]
        assert workers[0]["latestTask"] == {"taskId": task_id, "runId": 0}
        worker = await aio_queue.getWorker(prov, wt, "wg", wid)
        assert worker["recentTasks"] == [{"taskId": task_id, "runId": 0}]
        with pytest.raises(TaskclusterRestFailure) as caught:
            await aio_queue.getWorker(prov, wt, "wg", "nobody")
        assert caught.value.status_code == 404
        assert caught.value.body["code"] == "ResourceNotFound"


# --- declareWorker --------------------------------------------------------------------------


def test_declare_worker_needs_a_scope_per_property(
    queue: taskcluster.Queue, make_queue: Callable[[list[str]], taskcluster.Queue]
) -> None:
    prov, wt = ids()
    tq = f"{prov}/{wt}"
    wid = worker_name()
    expires = taskcluster.fromNowJSON("2 days")
    scope = f"queue:declare-worker:{prov}/{wt}/wg/{wid}#expires"

    nobody = make_queue([])
    error = assert_error(
        lambda: nobody.declareWorker(prov, wt, "wg", wid, {"expires": expires}),
        403,
        "InsufficientScopes",
        "declareWorker",
    )
    assert scope in error["message"]
    assert_error(lambda: queue.getWorker(prov, wt, "wg", wid), 404, "ResourceNotFound")
    wrong = make_queue([f"queue:declare-worker:{prov}/{wt}/wg/other#expires"])
    assert_error(
        lambda: wrong.declareWorker(prov, wt, "wg", wid, {"expires": expires}),
        403,
        "InsufficientScopes",
    )

    allowed = make_queue([scope])
    declared = allowed.declareWorker(prov, wt, "wg", wid, {"expires": expires})
    assert declared["provisionerId"] == prov and declared["workerType"] == wt
    assert declared["taskQueueId"] == tq
    assert (declared["workerGroup"], declared["workerId"]) == ("wg", wid)
    assert declared["recentTasks"] == []
    assert declared["expires"] == to_ms(expires)
    assert near(declared["firstClaim"], 0) and near(declared["lastDateActive"], 0)
    assert parse(declared["quarantineUntil"]) < parse(declared["firstClaim"])
    assert "quarantineDetails" not in declared
    for key in ("firstClaim", "lastDateActive", "expires"):
        assert TS.match(declared[key])

    assert queue.getWorker(prov, wt, "wg", wid) == declared
    assert queue.getTaskQueue(tq)["taskQueueId"] == tq
    assert queue.getWorkerType(prov, wt)["taskQueueId"] == tq
    assert queue.getProvisioner(prov)["provisionerId"] == prov
    assert [w["workerId"] for w in queue.listWorkers(prov, wt)["workers"]] == [wid]

    # An empty body names no property, so it needs no scope at all.
    again = nobody.declareWorker(prov, wt, "wg", wid, {})
    assert again["firstClaim"] == declared["firstClaim"]


def test_declare_worker_rejects_unknown_properties(queue: taskcluster.Queue) -> None:
    prov, wt = ids()
    assert_error(
        lambda: queue.declareWorker(
            prov, wt, "wg", "w", {"expires": taskcluster.fromNowJSON("1 day"), "color": "red"}
        ),
        400,
        "InputValidationError",
        "declareWorker",
    )
    assert_error(lambda: queue.getWorker(prov, wt, "wg", "w"), 404, "ResourceNotFound")


# --- errors ---------------------------------------------------------------------------------


def test_unknown_things_are_404_with_the_error_shape(queue: taskcluster.Queue) -> None:
    prov, wt = ids()
    tq = f"{prov}/{wt}"
    body = assert_error(lambda: queue.getProvisioner(prov), 404, "ResourceNotFound")
    assert body["requestInfo"]["params"] == {"provisionerId": prov}
    assert prov in body["message"]
    body = assert_error(lambda: queue.getWorkerType(prov, wt), 404, "ResourceNotFound")
    assert body["requestInfo"]["params"] == {"provisionerId": prov, "workerType": wt}
    body = assert_error(lambda: queue.getTaskQueue(tq), 404, "ResourceNotFound", "getTaskQueue")
    assert body["requestInfo"]["params"] == {"taskQueueId": tq}
    assert_error(lambda: queue.getWorker(prov, wt, "wg", "w"), 404, "ResourceNotFound", "getWorker")

    # The worker type exists now, but this worker does not.
    queue.declareWorker(prov, wt, "wg", "w", {"expires": taskcluster.fromNowJSON("1 day")})
    body = assert_error(lambda: queue.getWorker(prov, wt, "wg", "x"), 404, "ResourceNotFound")
    assert body["requestInfo"]["params"] == {
        "provisionerId": prov,
        "workerType": wt,
        "workerGroup": "wg",
        "workerId": "x",
    }
    assert_error(lambda: queue.getWorker(prov, wt, "other", "w"), 404, "ResourceNotFound")
    assert_error(lambda: queue.getWorkerType(prov, "wt-other"), 404, "ResourceNotFound")


def test_bad_url_params_are_400(queue: taskcluster.Queue) -> None:
    prov, wt = ids()
    for call in (
        lambda: queue.getProvisioner("bad!id"),
        lambda: queue.getProvisioner("x" * 39),
        lambda: queue.listWorkerTypes("bad!id"),
        lambda: queue.getWorkerType(prov, "bad!id"),
        lambda: queue.listWorkers(prov, "bad!id"),
        lambda: queue.getWorker(prov, wt, "bad!group", "w"),
        lambda: queue.getWorker(prov, wt, "wg", "bad!id"),
        lambda: queue.getTaskQueue(f"{prov}/UpperCase"),
        lambda: queue.getTaskQueue("bad!id/wt"),
        lambda: queue.pendingTasks(f"{prov}/Upper"),
        lambda: queue.taskQueueCounts(f"{prov}/Upper"),
        lambda: queue.listPendingTasks(f"{prov}/Upper"),
        lambda: queue.listClaimedTasks(f"{prov}/Upper"),
        lambda: queue.declareWorker(prov, wt, "wg", "bad!id", {}),
    ):
        assert_error(call, 400, "InvalidRequestArguments")
    # URL params only check the loose pattern: an upper-case workerType is allowed (and unknown).
    assert_error(lambda: queue.getWorkerType(prov, "UpperCase"), 404, "ResourceNotFound")
    assert queue.listWorkers(prov, "UpperCase") == {"workers": []}


def test_unknown_query_keys_are_400(queue: taskcluster.Queue) -> None:
    prov, wt = ids()
    tq = f"{prov}/{wt}"
    for call in (
        lambda: queue.listProvisioners(query={"colour": "red"}),
        lambda: queue.listTaskQueues(query={"colour": "red"}),
        lambda: queue.listWorkerTypes(prov, query={"colour": "red"}),
        lambda: queue.listWorkers(prov, wt, query={"colour": "red"}),
        lambda: queue.listPendingTasks(tq, query={"colour": "red"}),
        lambda: queue.listClaimedTasks(tq, query={"colour": "red"}),
        lambda: queue.getTaskQueue(tq, query={"limit": "1"}),
        lambda: queue.taskQueueCounts(tq, query={"limit": "1"}),
        lambda: queue.getWorker(prov, wt, "wg", "w", query={"quarantined": "true"}),
    ):
        assert_error(call, 400, "InvalidRequestArguments")


def test_task_queue_id_with_a_literal_slash(
    queue: taskcluster.Queue, queue_service: RunningService
) -> None:
    prov, wt = ids()
    tq = f"{prov}/{wt}"
    create_tasks(queue, tq, 1)
    claim(queue, tq, "wg", worker_name())
    create_tasks(queue, tq, 1)

    status, body = signed_get(queue_service, f"/api/queue/v1/task-queues/{tq}")
    assert (status, body) == (200, queue.getTaskQueue(tq))
    status, body = signed_get(queue_service, f"/api/queue/v1/task-queues/{tq}/counts")
    assert (status, body) == (200, {"taskQueueId": tq, "pendingTasks": 1, "claimedTasks": 1})
    status, body = signed_get(queue_service, f"/api/queue/v1/pending/{tq}")
    assert (status, body["pendingTasks"]) == (200, 1)
    status, body = signed_get(queue_service, f"/api/queue/v1/task-queues/{tq}/pending")
    assert (status, len(body["tasks"])) == (200, 1)
    # The encoded form, signed over the encoded path, works the same.
    encoded = tq.replace("/", "%2F")
    status, body = signed_get(queue_service, f"/api/queue/v1/task-queues/{encoded}/claimed")
    assert (status, len(body["tasks"])) == (200, 1)

    # Without credentials: anonymous lacks the scope; the literal-slash param is decoded.
    status, body = raw_get(queue_service, f"/api/queue/v1/task-queues/{tq}")
    assert status == 403 and body["code"] == "InsufficientScopes"
    assert body["requestInfo"]["params"] == {"taskQueueId": tq}
