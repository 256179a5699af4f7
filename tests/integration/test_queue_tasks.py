"""Task endpoints through the official client against the running queue: creation rules,
idempotency, validation errors, scopes, dependencies, schedule/rerun/cancel, priority."""

from __future__ import annotations

import datetime
import json
import time
import urllib.error
import urllib.request
from typing import Any

import pytest
import taskcluster
from taskcluster.exceptions import TaskclusterRestFailure

from tests.conftest import RunningService
from tests.integration.queue_support import (
    claim_one,
    client_with_scopes,
    new_task_queue_id,
    root_queue,
    task_definition,
    worker_queue,
)


@pytest.fixture
def queue(queue_service: RunningService) -> taskcluster.Queue:
    return root_queue(queue_service)


def rest_error(excinfo: pytest.ExceptionInfo[TaskclusterRestFailure]) -> tuple[int, str]:
    return excinfo.value.status_code, excinfo.value.body["code"]


def ts_in(seconds: float) -> str:
    moment = datetime.datetime.now(datetime.UTC) + datetime.timedelta(seconds=seconds)
    return moment.strftime("%Y-%m-%dT%H:%M:%S.") + f"{moment.microsecond // 1000:03d}Z"


# --- creating ------------------------------------------------------------------------------


def test_create_task_fills_defaults_and_makes_run_zero_pending(queue: taskcluster.Queue) -> None:
    task_id, tq = taskcluster.slugId(), new_task_queue_id()
    status = queue.createTask(task_id, task_definition(tq))["status"]
    provisioner_id, worker_type = tq.split("/")
    assert status["taskId"] == task_id
    assert status["state"] == "pending"
    assert (status["provisionerId"], status["workerType"], status["taskQueueId"]) == (
        provisioner_id,
        worker_type,
        tq,
    )
    assert status["taskGroupId"] == task_id  # a decision task is its own group
    assert status["retriesLeft"] == 5
    assert [set(run) for run in status["runs"]] == [
        {"runId", "state", "reasonCreated", "scheduled"}  # unset fields absent, never null
    ]
    assert status["runs"][0]["reasonCreated"] == "scheduled"
    task = queue.task(task_id)
    assert task["schedulerId"] == "-"
    assert task["projectId"] == "none"
    assert task["priority"] == "lowest"
    assert task["dependencies"] == [] and task["routes"] == [] and task["tags"] == {}
    deadline = datetime.datetime.fromisoformat(task["deadline"])
    assert datetime.datetime.fromisoformat(task["expires"]) == deadline.replace(
        year=deadline.year + 1
    )
    assert queue.status(task_id) == {"status": status}


def test_identical_create_is_idempotent_and_different_is_conflict(
    queue: taskcluster.Queue, queue_service: RunningService
) -> None:
    task_id, tq = taskcluster.slugId(), new_task_queue_id()
    definition = task_definition(tq)
    first = queue.createTask(task_id, definition)
    claim = claim_one(queue, tq)
    again = queue.createTask(task_id, definition)
    assert again["status"]["state"] == "running"  # the *current* status
    assert again["status"]["runs"][0]["workerId"] == "w1"
    assert first["status"]["runs"][0]["scheduled"] == again["status"]["runs"][0]["scheduled"]
    with pytest.raises(TaskclusterRestFailure) as excinfo:
        queue.createTask(task_id, {**definition, "retries": 2})
    assert rest_error(excinfo) == (409, "RequestConflict")
    worker_queue(queue_service, claim).reportCompleted(task_id, "0")


@pytest.mark.parametrize(
    ("change", "code"),
    [
        (lambda t: t.pop("metadata"), "InputValidationError"),
        (lambda t: t.update(priority="normal"), "InputValidationError"),
        (lambda t: t.update(retries=50), "InputValidationError"),
        (lambda t: t.update(unknownField=1), "InputValidationError"),
        (lambda t: t.update(provisionerId="other"), "InputError"),
        (lambda t: t.update(created=ts_in(-20 * 60)), "InputError"),
        (lambda t: t.update(created=ts_in(20 * 60)), "InputError"),
        (lambda t: t.update(deadline=ts_in(-60), created=ts_in(-120)), "InputError"),
        (lambda t: t.update(deadline=ts_in(6 * 86400)), "InputError"),
        (lambda t: t.update(expires=ts_in(60)), "InputError"),
        (lambda t: t.update(scopes=["queue:**"]), "InputError"),
        (lambda t: t.pop("taskQueueId"), "InputError"),
    ],
)
def test_invalid_definitions_are_rejected_and_change_nothing(
    queue: taskcluster.Queue, change: Any, code: str
) -> None:
    task_id = taskcluster.slugId()
    definition = task_definition(new_task_queue_id())
    change(definition)
    with pytest.raises(TaskclusterRestFailure) as excinfo:
        queue.createTask(task_id, definition)
    assert rest_error(excinfo) == (400, code)
    body = excinfo.value.body
    assert set(body) == {"code", "message", "requestInfo"}
    assert body["requestInfo"]["method"] == "createTask"
    assert "* errorCode:  " + code in body["message"]
    with pytest.raises(TaskclusterRestFailure) as missing:
        queue.task(task_id)
    assert rest_error(missing) == (404, "ResourceNotFound")


def _raw(
    service: RunningService, method: str, path: str, body: bytes | None, content_type: str | None
) -> tuple[int, dict[str, Any]]:
    headers = {"Content-Type": content_type} if content_type else {}
    request = urllib.request.Request(
        f"{service.root_url}/api/queue/v1{path}", data=body, method=method, headers=headers
    )
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return response.status, json.loads(response.read() or b"{}")
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read())


@pytest.mark.parametrize(
    ("path", "body", "content_type", "status", "code"),
    [
        ("/task/{tid}", b"{not json", "application/json", 400, "MalformedPayload"),
        ("/task/{tid}", b"{}", "text/plain", 400, "MalformedPayload"),
        ("/task/{tid}", b'"a string"', "application/json", 400, "MalformedPayload"),
        ("/task/not-a-slugid", b"{}", "application/json", 400, "InvalidRequestArguments"),
        ("/task/{tid}?x=1", b"{}", "application/json", 400, "InvalidRequestArguments"),
        ("/task/{tid}", b" " * (10 * 1024 * 1024 + 10), "application/json", 413, "InputTooLarge"),
    ],
)
def test_bad_requests_get_protocol_errors(
    queue_service: RunningService,
    path: str,
    body: bytes,
    content_type: str,
    status: int,
    code: str,
) -> None:
    task_id = taskcluster.slugId()
    got_status, got = _raw(queue_service, "PUT", path.format(tid=task_id), body, content_type)
    assert (got_status, got.get("code")) == (status, code)
    # nothing was stored: asked with credentials, so the answer cannot be a 403
    with pytest.raises(TaskclusterRestFailure) as missing:
        root_queue(queue_service).task(task_id)
    assert missing.value.status_code == 404


def test_unknown_path_is_a_protocol_not_found(queue_service: RunningService) -> None:
    status, body = _raw(queue_service, "GET", "/no-such-thing", None, None)
    assert (status, body["code"]) == (404, "ResourceNotFound")
    assert set(body) == {"code", "message", "requestInfo"}


# --- scopes ----------------------------------------------------------------------------------


def test_create_task_needs_each_scope_and_accepts_any_higher_priority(
    queue_service: RunningService,
) -> None:
    tq = new_task_queue_id()
    base = ["queue:create-task:project:none", "queue:scheduler-id:-"]
    high = client_with_scopes(queue_service, [*base, f"queue:create-task:high:{tq}"])
    high.createTask(taskcluster.slugId(), task_definition(tq, priority="medium"))
    high.createTask(taskcluster.slugId(), task_definition(tq, priority="high"))
    with pytest.raises(TaskclusterRestFailure) as excinfo:
        high.createTask(taskcluster.slugId(), task_definition(tq, priority="very-high"))
    assert rest_error(excinfo) == (403, "InsufficientScopes")
    with pytest.raises(TaskclusterRestFailure) as excinfo:
        high.createTask(taskcluster.slugId(), task_definition(tq, routes=["index.x"]))
    assert rest_error(excinfo) == (403, "InsufficientScopes")
    assert "queue:route:index.x" in excinfo.value.body["message"]
    with pytest.raises(TaskclusterRestFailure) as excinfo:
        high.createTask(taskcluster.slugId(), task_definition(tq, scopes=["secret:x"]))
    assert rest_error(excinfo) == (403, "InsufficientScopes")
    no_project = client_with_scopes(
        queue_service, ["queue:scheduler-id:-", f"queue:create-task:lowest:{tq}"]
    )
    with pytest.raises(TaskclusterRestFailure) as excinfo:
        no_project.createTask(taskcluster.slugId(), task_definition(tq))
    assert rest_error(excinfo) == (403, "InsufficientScopes")
    assert "queue:create-task:project:none" in excinfo.value.body["message"]


def test_scheduler_scopes_checked_after_loading_the_task(
    queue: taskcluster.Queue, queue_service: RunningService
) -> None:
    task_id = taskcluster.slugId()
    queue.createTask(task_id, task_definition(new_task_queue_id(), dependencies=[task_id]))
    nobody = client_with_scopes(queue_service, [])
    with pytest.raises(TaskclusterRestFailure) as excinfo:
        nobody.scheduleTask(taskcluster.slugId())  # unknown task: 404 before any scope check
    assert rest_error(excinfo) == (404, "ResourceNotFound")
    with pytest.raises(TaskclusterRestFailure) as excinfo:
        nobody.scheduleTask(task_id)
    assert rest_error(excinfo) == (403, "InsufficientScopes")
    by_project = client_with_scopes(queue_service, ["queue:schedule-task-in-project:none"])
    assert by_project.scheduleTask(task_id)["status"]["state"] == "pending"
    by_group = client_with_scopes(queue_service, [f"queue:cancel-task:-/{task_id}/{task_id}"])
    assert by_group.cancelTask(task_id)["status"]["state"] == "exception"
    by_role = client_with_scopes(
        queue_service, ["queue:rerun-task", f"assume:scheduler-id:-/{task_id}"]
    )
    # assume:scheduler-id:... is a scope the client holds (no role needed to satisfy it)
    assert by_role.rerunTask(task_id)["status"]["runs"][-1]["reasonCreated"] == "rerun"


# --- dependencies ------------------------------------------------------------------------------


def test_missing_dependency_is_400_and_the_task_is_taken_back(queue: taskcluster.Queue) -> None:
    task_id, missing = taskcluster.slugId(), taskcluster.slugId()
    with pytest.raises(TaskclusterRestFailure) as excinfo:
        queue.createTask(task_id, task_definition(new_task_queue_id(), dependencies=[missing]))
    assert rest_error(excinfo) == (400, "InputError")
    assert missing in excinfo.value.body["message"]
    with pytest.raises(TaskclusterRestFailure) as gone:
        queue.task(task_id)
    assert rest_error(gone) == (404, "ResourceNotFound")


def test_dependency_expiring_before_the_deadline_is_400(queue: taskcluster.Queue) -> None:
    tq = new_task_queue_id()
    short = taskcluster.slugId()
    queue.createTask(short, task_definition(tq, deadline=ts_in(600), expires=ts_in(900)))
    with pytest.raises(TaskclusterRestFailure) as excinfo:
        queue.createTask(taskcluster.slugId(), task_definition(tq, dependencies=[short]))
    assert rest_error(excinfo) == (400, "InputError")
    assert short in excinfo.value.body["message"]


def test_dependencies_already_resolved_schedule_at_creation(
    queue: taskcluster.Queue, queue_service: RunningService
) -> None:
    tq = new_task_queue_id()
    done, failed, open_ = (taskcluster.slugId() for _ in range(3))
    for task_id in (done, failed, open_):
        queue.createTask(task_id, task_definition(tq))
    for task_id, report in ((done, "reportCompleted"), (failed, "reportFailed")):
        claim = claim_one(queue, tq)
        assert claim["status"]["taskId"] == task_id
        getattr(worker_queue(queue_service, claim), report)(task_id, "0")

    def state(deps: list[str], requires: str = "all-completed") -> str:
        task_id = taskcluster.slugId()
        other = new_task_queue_id()
        status = queue.createTask(
            task_id, task_definition(other, dependencies=deps, requires=requires)
        )["status"]
        return status["state"]

    assert state([done]) == "pending"
    assert state([done, failed]) == "unscheduled"
    assert state([done, failed], "all-resolved") == "pending"
    assert state([done, open_], "all-resolved") == "unscheduled"


def test_list_dependent_tasks_pages_in_task_id_order(queue: taskcluster.Queue) -> None:
    tq = new_task_queue_id()
    required = taskcluster.slugId()
    queue.createTask(required, task_definition(tq))
    dependents = sorted(taskcluster.slugId() for _ in range(5))
    for task_id in dependents:
        queue.createTask(task_id, task_definition(tq, dependencies=[required]))
    seen: list[str] = []
    token = None
    while True:
        query = {"limit": 2, **({"continuationToken": token} if token else {})}
        page = queue.listDependentTasks(required, query=query)
        assert page["taskId"] == required
        assert len(page["tasks"]) <= 2
        seen += [entry["status"]["taskId"] for entry in page["tasks"]]
        assert all(entry["status"]["state"] == "unscheduled" for entry in page["tasks"])
        token = page.get("continuationToken")
        if not token:
            break
    assert seen == dependents
    with pytest.raises(TaskclusterRestFailure) as excinfo:
        queue.listDependentTasks(taskcluster.slugId())
    assert rest_error(excinfo) == (404, "ResourceNotFound")


# --- schedule, rerun, cancel ------------------------------------------------------------------


def test_schedule_rerun_cancel_state_machine(
    queue: taskcluster.Queue, queue_service: RunningService
) -> None:
    tq = new_task_queue_id()
    task_id = taskcluster.slugId()
    assert (
        queue.createTask(task_id, task_definition(tq, dependencies=[task_id]))["status"]["state"]
        == "unscheduled"
    )
    assert queue.scheduleTask(task_id)["status"]["state"] == "pending"
    assert len(queue.scheduleTask(task_id)["status"]["runs"]) == 1  # idempotent
    assert queue.rerunTask(task_id)["status"]["runs"][-1]["reasonCreated"] == "scheduled"
    claim = claim_one(queue, tq)
    worker_queue(queue_service, claim).reportCompleted(task_id, "0")
    rerun = queue.rerunTask(task_id)["status"]
    assert [r["state"] for r in rerun["runs"]] == ["completed", "pending"]
    assert rerun["runs"][1]["reasonCreated"] == "rerun"
    cancelled = queue.cancelTask(task_id)["status"]
    assert cancelled["runs"][1]["state"] == "exception"
    assert cancelled["runs"][1]["reasonResolved"] == "canceled"
    assert queue.cancelTask(task_id)["status"] == cancelled  # repeat changes nothing
    # The cancelled pending run is no longer claimable.
    assert queue.pendingTasks(tq)["pendingTasks"] == 0


def test_cancel_unscheduled_creates_a_resolved_synthetic_run(queue: taskcluster.Queue) -> None:
    task_id = taskcluster.slugId()
    queue.createTask(task_id, task_definition(new_task_queue_id(), dependencies=[task_id]))
    status = queue.cancelTask(task_id)["status"]
    assert status["state"] == "exception"
    (run,) = status["runs"]
    assert run["reasonCreated"] == "exception" and run["reasonResolved"] == "canceled"
    assert run["scheduled"] == run["resolved"]
    assert "workerGroup" not in run and "started" not in run
    assert len(queue.scheduleTask(task_id)["status"]["runs"]) == 1  # runs exist: no-op
    assert queue.rerunTask(task_id)["status"]["state"] == "pending"


def test_cancelled_running_task_refuses_reclaim_and_report(
    queue: taskcluster.Queue, queue_service: RunningService
) -> None:
    tq = new_task_queue_id()
    task_id = taskcluster.slugId()
    queue.createTask(task_id, task_definition(tq))
    claim = claim_one(queue, tq)
    queue.cancelTask(task_id)
    worker = worker_queue(queue_service, claim)
    for call in (worker.reclaimTask, worker.reportCompleted):
        with pytest.raises(TaskclusterRestFailure) as excinfo:
            call(task_id, "0")
        assert rest_error(excinfo) == (409, "RequestConflict")


def test_rerun_stops_at_fifty_runs(queue: taskcluster.Queue) -> None:
    tq = new_task_queue_id()
    task_id = taskcluster.slugId()
    queue.createTask(task_id, task_definition(tq))
    queue.cancelTask(task_id)
    for _ in range(49):
        queue.rerunTask(task_id)
        status = queue.cancelTask(task_id)["status"]
    assert len(status["runs"]) == 50
    with pytest.raises(TaskclusterRestFailure) as excinfo:
        queue.rerunTask(task_id)
    assert rest_error(excinfo) == (409, "RequestConflict")


def test_past_deadline_every_mutation_is_409(queue: taskcluster.Queue) -> None:
    tq = new_task_queue_id()
    task_id = taskcluster.slugId()
    queue.createTask(
        task_id, task_definition(tq, created=ts_in(0), deadline=ts_in(1.5), dependencies=[task_id])
    )
    time.sleep(1.6)
    for call in (queue.scheduleTask, queue.rerunTask, queue.cancelTask):
        with pytest.raises(TaskclusterRestFailure) as excinfo:
            call(task_id)
        assert rest_error(excinfo) == (409, "RequestConflict")
    with pytest.raises(TaskclusterRestFailure) as excinfo:
        queue.changeTaskPriority(task_id, {"newPriority": "high"})
    assert rest_error(excinfo) == (409, "RequestConflict")


# --- priority and batches -----------------------------------------------------------------------


def test_change_task_priority_reorders_pending_and_refuses_noops(
    queue: taskcluster.Queue, queue_service: RunningService
) -> None:
    tq = new_task_queue_id()
    first, second = taskcluster.slugId(), taskcluster.slugId()
    queue.createTask(first, task_definition(tq))
    queue.createTask(second, task_definition(tq))
    status = queue.changeTaskPriority(second, {"newPriority": "high"})["status"]
    assert status["priority"] == "high"
    assert queue.task(second)["priority"] == "high"
    with pytest.raises(TaskclusterRestFailure) as excinfo:
        queue.changeTaskPriority(second, {"newPriority": "high"})
    assert rest_error(excinfo) == (409, "RequestConflict")
    claim = claim_one(queue, tq)
    assert claim["status"]["taskId"] == second
    worker_queue(queue_service, claim).reportCompleted(second, "0")
    with pytest.raises(TaskclusterRestFailure) as excinfo:
        queue.changeTaskPriority(second, {"newPriority": "low"})
    assert rest_error(excinfo) == (409, "RequestConflict")
    scoped = client_with_scopes(queue_service, [f"queue:change-task-priority-in-queue:{tq}"])
    assert scoped.changeTaskPriority(first, {"newPriority": "low"})["status"]["priority"] == "low"


def test_tasks_and_statuses_batches_page_and_skip_unknown_ids(queue: taskcluster.Queue) -> None:
    tq = new_task_queue_id()
    ids = [taskcluster.slugId() for _ in range(3)]
    for task_id in ids:
        queue.createTask(task_id, task_definition(tq))
    wanted = [ids[0], taskcluster.slugId(), ids[1], ids[2]]
    seen: list[str] = []
    token = None
    while True:
        query = {"limit": 2, **({"continuationToken": token} if token else {})}
        page = queue.statuses(payload={"taskIds": wanted}, query=query)
        seen += [entry["taskId"] for entry in page["statuses"]]
        assert all(e["status"]["taskId"] == e["taskId"] for e in page["statuses"])
        token = page.get("continuationToken")
        if not token:
            break
    assert seen == ids
    tasks = queue.tasks({"taskIds": ids})["tasks"]
    assert [t["taskId"] for t in tasks] == ids
    assert tasks[0]["task"]["taskQueueId"] == tq
    with pytest.raises(TaskclusterRestFailure) as excinfo:
        queue.statuses(payload={"taskIds": ids}, query={"continuationToken": "!!garbage"})
    assert rest_error(excinfo) == (400, "InputError")


def test_responses_carry_cache_and_cors_headers(
    queue: taskcluster.Queue, queue_service: RunningService
) -> None:
    task_id = taskcluster.slugId()
    queue.createTask(task_id, task_definition(new_task_queue_id()))
    url = queue.buildSignedUrl("status", task_id)
    with urllib.request.urlopen(url, timeout=10) as response:
        headers = response.headers
        assert json.loads(response.read())["status"]["taskId"] == task_id
    assert headers["Cache-Control"] == "no-store, no-cache, must-revalidate"
    assert headers["Access-Control-Allow-Origin"] == "*"
    assert headers["Content-Type"].startswith("application/json")


def test_head_answers_as_get_without_a_body(
    queue: taskcluster.Queue, queue_service: RunningService
) -> None:
    task_id = taskcluster.slugId()
    queue.createTask(task_id, task_definition(new_task_queue_id()))
    # (not `ping`: its uptime can change length between the two calls)
    version = f"{queue_service.root_url}/api/queue/v1/__version__"
    for url in (queue.buildSignedUrl("status", task_id), version):
        with urllib.request.urlopen(url, timeout=10) as response:
            got, body = response.headers, response.read()
        head = urllib.request.Request(url, method="HEAD")
        with urllib.request.urlopen(head, timeout=10) as response:
            assert response.status == 200 and response.read() == b""
            headed = response.headers
        assert headed["Content-Type"] == got["Content-Type"]
        assert int(headed["Content-Length"]) == len(body)
        assert headed["Cache-Control"] == "no-store, no-cache, must-revalidate"
    unknown = queue.buildSignedUrl("task", taskcluster.slugId())
    missing = urllib.request.Request(unknown, method="HEAD")
    with pytest.raises(urllib.error.HTTPError) as raised:
        urllib.request.urlopen(missing, timeout=10)
    assert raised.value.code == 404 and raised.value.read() == b""


def test_bad_credentials_are_401_with_a_hawk_challenge(queue_service: RunningService) -> None:
    impostor = taskcluster.Queue(
        queue_service.client_options(
            clientId=queue_service.root_client_id, accessToken="not-the-right-token-at-all-x"
        )
    )
    with pytest.raises(taskcluster.exceptions.TaskclusterAuthFailure) as excinfo:
        impostor.createTask(taskcluster.slugId(), task_definition(new_task_queue_id()))
    assert excinfo.value.status_code == 401
    assert excinfo.value.body["code"] == "AuthenticationFailed"
