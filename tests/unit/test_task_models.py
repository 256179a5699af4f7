"""The task definition: upstream's validation, defaults, limits, output and date rules."""

from __future__ import annotations

import base64
import json
import uuid
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st
from pydantic import TypeAdapter, ValidationError

from shared.ids import slugid
from shared.models import (
    INPUT_ERROR_TYPE,
    PRIORITY_LEVELS,
    ProjectId,
    ProvisionerId,
    Slugid,
    TaskDefinition,
    TaskInputError,
    Timestamp,
    WorkerType,
    check_dates,
    check_dependency_limit,
    default_expires,
    describe_validation_error,
    is_input_error,
    json_equal,
    priorities_at_or_above,
    priority_to_int,
    same_definition,
)
from shared.timeutil import format_ts, truncate_ms

NOW = datetime(2025, 1, 2, 3, 4, 5, 678000, tzinfo=UTC)
TASK_ID = "fN1SbArXTPSVFNUvaOlinQ"
GROUP_ID = "dSlITZ4yQgmvxxAi4A8fHQ"
DEP_ID = "TESsgnUHT_ijHjomUTKeqA"
MS = timedelta(milliseconds=1)
DRIFT = timedelta(minutes=15)


def metadata(**overrides: Any) -> dict[str, Any]:
    return {
        "name": "build",
        "description": "compiles things",
        "owner": "someone@example.com",
        "source": "https://example.com/repo",
        **overrides,
    }


def body(**overrides: Any) -> dict[str, Any]:
    """A minimal valid createTask body (taskQueueId form), created now, due in a day."""
    task: dict[str, Any] = {
        "taskQueueId": "my-prov/my-worker",
        "created": format_ts(NOW),
        "deadline": format_ts(NOW + timedelta(days=1)),
        "payload": {"command": ["true"]},
        "metadata": metadata(),
    }
    task.update(overrides)
    return {key: value for key, value in task.items() if value is not None}


def parse(**overrides: Any) -> TaskDefinition:
    return TaskDefinition.model_validate(body(**overrides))


def rejection(**overrides: Any) -> str:
    with pytest.raises(ValidationError) as caught:
        parse(**overrides)
    return describe_validation_error(caught.value)


# --- accepted shapes and defaults --------------------------------------------------------


def test_minimal_task_with_task_queue_id_gets_every_default() -> None:
    task = parse()
    assert (task.provisionerId, task.workerType, task.taskQueueId) == (
        "my-prov",
        "my-worker",
        "my-prov/my-worker",
    )
    assert task.schedulerId == "-"
    assert task.projectId == "none"
    assert task.taskGroupId is None
    assert task.dependencies == []
    assert task.requires == "all-completed"
    assert task.routes == []
    assert task.priority == "lowest"
    assert task.retries == 5
    assert task.scopes == []
    assert task.tags == {}
    assert task.extra == {}
    assert task.expires == datetime(2026, 1, 3, 3, 4, 5, 678000, tzinfo=UTC)


def test_provisioner_id_and_worker_type_give_task_queue_id() -> None:
    task = parse(taskQueueId=None, provisionerId="my-prov", workerType="my-worker")
    assert task.taskQueueId == "my-prov/my-worker"


def test_all_three_consistent_ids_are_accepted() -> None:
    task = parse(provisionerId="my-prov", workerType="my-worker")
    assert task.taskQueueId == "my-prov/my-worker"


def test_full_task_with_every_field() -> None:
    full = body(
        provisionerId="my-prov",
        workerType="my-worker",
        schedulerId="my-scheduler",
        projectId="my.project/sub-1",
        taskGroupId=GROUP_ID,
        dependencies=[DEP_ID],
        requires="all-resolved",
        routes=["index.a.b", "notify.email.x@example.com.on-failed"],
        priority="very-high",
        retries=0,
        expires=format_ts(NOW + timedelta(days=30)),
        scopes=["queue:create-task:*", "secrets:get:x", "secrets:get:x"],
        payload={"image": "alpine", "nested": {"n": None, "list": [1, 2.5, True]}},
        tags={"kind": "build", "empty": ""},
        extra={"treeherder": {"symbol": "B"}},
    )
    task = TaskDefinition.model_validate(full)
    output = task.to_output()
    assert output == {**full, "created": format_ts(NOW)}
    assert list(output) == [
        "provisionerId",
        "workerType",
        "taskQueueId",
        "schedulerId",
        "projectId",
        "taskGroupId",
        "dependencies",
        "requires",
        "routes",
        "priority",
        "retries",
        "created",
        "deadline",
        "expires",
        "scopes",
        "payload",
        "metadata",
        "tags",
        "extra",
    ]


def test_output_has_three_ids_task_group_and_ts_dates() -> None:
    output = parse().to_output(TASK_ID)
    assert output["provisionerId"] == "my-prov"
    assert output["workerType"] == "my-worker"
    assert output["taskQueueId"] == "my-prov/my-worker"
    assert output["taskGroupId"] == TASK_ID
    assert output["created"] == "2025-01-02T03:04:05.678Z"
    assert output["deadline"] == "2025-01-03T03:04:05.678Z"
    assert output["expires"] == "2026-01-03T03:04:05.678Z"
    assert json.loads(json.dumps(output)) == output


def test_output_needs_a_task_group_id() -> None:
    with pytest.raises(ValueError, match="taskGroupId"):
        parse().to_output()


def test_with_task_group_id_keeps_an_explicit_group() -> None:
    assert parse(taskGroupId=GROUP_ID).with_task_group_id(TASK_ID).taskGroupId == GROUP_ID
    assert parse().with_task_group_id(TASK_ID).taskGroupId == TASK_ID


@pytest.mark.parametrize(
    ("given_value", "expected"),
    [
        ("2025-01-02T04:04:05.678+01:00", "2025-01-02T03:04:05.678Z"),
        ("2025-01-02T03:04:05Z", "2025-01-02T03:04:05.000Z"),
        ("2025-01-02T03:04:05.6Z", "2025-01-02T03:04:05.600Z"),
        ("2025-01-02T03:04:05.678999+00:00", "2025-01-02T03:04:05.678Z"),
        ("2025-01-02t03:04:05.678z", "2025-01-02T03:04:05.678Z"),
        ("2025-01-02 03:04:05.678Z", "2025-01-02T03:04:05.678Z"),
        ("2025-01-01T22:04:05.678-0500", "2025-01-02T03:04:05.678Z"),
        ("2025-01-02T05:04:05.678+02", "2025-01-02T03:04:05.678Z"),
    ],
)
def test_date_spellings_normalise_to_ts(given_value: str, expected: str) -> None:
    assert parse(created=given_value).to_output(TASK_ID)["created"] == expected


@pytest.mark.parametrize(
    "bad",
    [
        "2025-01-02T03:04:05",  # no offset
        "2025-01-02",
        "20250102T030405Z",
        "2025-01-02T03:04Z",
        "2025-13-02T03:04:05Z",
        "2025-02-30T03:04:05Z",
        "yesterday",
        "",
        1735787045678,
    ],
)
def test_bad_dates_are_rejected_naming_the_field(bad: object) -> None:
    assert rejection(created=bad).startswith("created: must be an ISO-8601 date-time")


def test_expires_defaults_to_one_calendar_year_after_deadline() -> None:
    assert default_expires(datetime(2025, 3, 1, 1, 2, 3, tzinfo=UTC)) == datetime(
        2026, 3, 1, 1, 2, 3, tzinfo=UTC
    )
    # JavaScript's setFullYear overflows 29 February into 1 March.
    assert default_expires(datetime(2024, 2, 29, 12, 0, tzinfo=UTC)) == datetime(
        2025, 3, 1, 12, 0, tzinfo=UTC
    )
    task = parse(created="2024-02-28T12:00:00Z", deadline="2024-02-29T12:00:00.123Z")
    assert task.to_output(TASK_ID)["expires"] == "2025-03-01T12:00:00.123Z"


def test_explicit_expires_is_kept() -> None:
    task = parse(expires="2025-02-01T00:00:00Z")
    assert task.expires == datetime(2025, 2, 1, tzinfo=UTC)


def test_bad_deadline_reports_only_the_deadline() -> None:
    assert rejection(deadline="soon") == (
        "deadline: must be an ISO-8601 date-time with a UTC offset, "
        "such as 2025-01-02T03:04:05.678Z"
    )
    assert rejection(deadline=None) == "deadline: is required"


# --- identifiers (reference §0) ----------------------------------------------------------

V4_SLUGIDS = ["fN1SbArXTPSVFNUvaOlinQ", "-N1SbArXTPSVFNUvaOlinw", "AAAAAAAAQACAAAAAAAAAAA"]
BAD_SLUGIDS = [
    "fN1SbArXEPSVFNUvaOlinQ",  # version nibble 1, not 4
    "fN1SbArXTPAVFNUvaOlinQ",  # variant bits wrong
    "fN1SbArXTPSVFNUvaOlinB",  # last char carries bits a UUID does not have
    "fN1SbArXTPSVFNUvaOlin",  # 21 chars
    "fN1SbArXTPSVFNUvaOlinQQ",  # 23 chars
    "fN1SbArXTPSVFNUvaOli+Q",  # not url-safe
    "fN1SbArXTPSVFNUvaOlinQ\n",
    "",
]


@pytest.mark.parametrize("good", V4_SLUGIDS)
def test_v4_slugids_are_accepted(good: str) -> None:
    assert TypeAdapter(Slugid).validate_python(good) == good
    assert parse(taskGroupId=good, dependencies=[good]).taskGroupId == good


@pytest.mark.parametrize("bad", BAD_SLUGIDS)
def test_non_v4_or_malformed_slugids_are_rejected(bad: str) -> None:
    assert rejection(taskGroupId=bad).startswith("taskGroupId: must match ^[A-Za-z0-9_-]{8}")
    assert rejection(dependencies=[DEP_ID, bad]).startswith("dependencies[1]: must match")


def test_a_real_v1_uuid_is_not_a_slugid() -> None:
    encoded = base64.urlsafe_b64encode(uuid.uuid1().bytes).decode()[:22]
    with pytest.raises(ValidationError):
        TypeAdapter(Slugid).validate_python(encoded)


@given(st.uuids(version=4))
def test_every_v4_uuid_encodes_to_an_accepted_slugid(value: uuid.UUID) -> None:
    encoded = base64.urlsafe_b64encode(value.bytes).decode()[:22]
    assert TypeAdapter(Slugid).validate_python(encoded) == encoded


def test_generated_slugids_are_always_accepted() -> None:
    adapter = TypeAdapter(Slugid)
    for value in (slugid() for _ in range(2000)):
        assert adapter.validate_python(value) == value


@pytest.mark.parametrize("good", ["a", "A-_9", "x" * 38, "aws-provisioner-v1"])
def test_good_provisioner_ids(good: str) -> None:
    assert TypeAdapter(ProvisionerId).validate_python(good) == good
    assert parse(taskQueueId=f"{good}/wt").provisionerId == good


@pytest.mark.parametrize("bad", ["", "x" * 39, "a.b", "a b", "a/b", "é"])
def test_bad_provisioner_ids(bad: str) -> None:
    message = rejection(taskQueueId=None, provisionerId=bad, workerType="wt")
    assert "provisionerId: must match ^[a-zA-Z0-9-_]{1,38}$" in message


@pytest.mark.parametrize("good", ["a", "a1", "a-b", "b" + "x" * 36 + "z", "ci-linux-64"])
def test_good_worker_types(good: str) -> None:
    assert TypeAdapter(WorkerType).validate_python(good) == good
    assert parse(taskQueueId=f"p/{good}").workerType == good


@pytest.mark.parametrize("bad", ["", "A", "1a", "a-", "-a", "a_b", "b" + "x" * 37 + "z"])
def test_bad_worker_types(bad: str) -> None:
    message = rejection(taskQueueId=None, provisionerId="p", workerType=bad)
    assert "workerType: must match ^[a-z]([-a-z0-9]{0,36}[a-z0-9])?$" in message


@pytest.mark.parametrize("bad", ["p", "p/", "/w", "p/W", "p/w/x", "p" * 39 + "/w", "p/w\n"])
def test_bad_task_queue_ids_are_reported_alone(bad: str) -> None:
    assert rejection(taskQueueId=bad) == (
        "taskQueueId: must match ^[a-zA-Z0-9-_]{1,38}/[a-z]([-a-z0-9]{0,36}[a-z0-9])?$"
    )


def test_non_string_task_queue_id() -> None:
    assert rejection(taskQueueId=["p/w"]) == "taskQueueId: must be a string"


def test_explicit_null_ids_fail_their_type_check() -> None:
    body_with_null = {**body(), "taskQueueId": None, "provisionerId": "p", "workerType": "w"}
    with pytest.raises(ValidationError) as caught:
        TaskDefinition.model_validate(body_with_null)
    assert describe_validation_error(caught.value) == "taskQueueId: must be a string"


def test_non_string_halves_are_reported_alone() -> None:
    message = rejection(taskQueueId=None, provisionerId=5, workerType="wt")
    assert message == "provisionerId: must be a string"


@pytest.mark.parametrize("good", ["-", "a", "A-_z9", "s" * 38])
def test_good_scheduler_ids(good: str) -> None:
    assert parse(schedulerId=good).schedulerId == good


@pytest.mark.parametrize(
    ("bad", "message"),
    [
        ("", "schedulerId: must not be empty"),
        ("s" * 39, "schedulerId: must be at most 38 characters"),
        ("a.b", "schedulerId: must match ^([a-zA-Z0-9-_]*)$"),
        ("a/b", "schedulerId: must match ^([a-zA-Z0-9-_]*)$"),
        (7, "schedulerId: must be a string"),
    ],
)
def test_bad_scheduler_ids(bad: object, message: str) -> None:
    assert rejection(schedulerId=bad) == message


@pytest.mark.parametrize("good", ["none", "a", "my.project/sub-dir_1", "p" * 500])
def test_good_project_ids(good: str) -> None:
    assert TypeAdapter(ProjectId).validate_python(good) == good
    assert parse(projectId=good).projectId == good


@pytest.mark.parametrize(
    ("bad", "message"),
    [
        ("", "projectId: must not be empty"),
        ("p" * 501, "projectId: must be at most 500 characters"),
        ("a b", "projectId: must match ^([a-zA-Z0-9._/-]*)$"),
        ("a:b", "projectId: must match ^([a-zA-Z0-9._/-]*)$"),
    ],
)
def test_bad_project_ids(bad: str, message: str) -> None:
    assert rejection(projectId=bad) == message


# --- queue identity ---------------------------------------------------------------------


def test_inconsistent_queue_ids_are_rejected() -> None:
    message = rejection(provisionerId="other", workerType="my-worker")
    assert 'taskQueueId must match "provisionerId/workerType"' in message


def test_a_lone_disagreeing_half_is_rejected() -> None:
    assert "taskQueueId must match" in rejection(workerType="other")
    assert parse(workerType="my-worker").provisionerId == "my-prov"


@pytest.mark.parametrize(
    "identity",
    [
        {"taskQueueId": None},
        {"taskQueueId": None, "provisionerId": "p"},
        {"taskQueueId": None, "workerType": "w"},
    ],
)
def test_missing_queue_identity_is_rejected(identity: dict[str, Any]) -> None:
    assert rejection(**identity) == (
        "at least a provisionerId and a workerType or a taskQueueId must be provided"
    )


def input_error_of(**overrides: Any) -> ValidationError:
    with pytest.raises(ValidationError) as caught:
        parse(**overrides)
    return caught.value


@pytest.mark.parametrize(
    "overrides",
    [
        {"provisionerId": "other", "workerType": "my-worker"},
        {"taskQueueId": None},
        {"scopes": ["a:**"]},
    ],
)
def test_post_schema_rules_are_input_errors(overrides: dict[str, Any]) -> None:
    exc = input_error_of(**overrides)
    assert is_input_error(exc)
    assert exc.errors()[0]["type"] == INPUT_ERROR_TYPE


def test_schema_failures_come_first_and_are_not_input_errors() -> None:
    # Upstream validates the schema before the identity and `**` rules.
    exc = input_error_of(provisionerId="other", workerType="my-worker", retries=99)
    assert not is_input_error(exc)
    assert describe_validation_error(exc) == "retries: must be <= 49"
    assert not is_input_error(input_error_of(scopes=["a:**"], routes=[""]))


# --- structure --------------------------------------------------------------------------


def test_extra_top_level_key_is_rejected() -> None:
    assert rejection(taskId=TASK_ID) == "taskId: is not allowed (unknown property)"
    assert rejection(task_queue_id="p/w") == "task_queue_id: is not allowed (unknown property)"


@pytest.mark.parametrize("missing", ["created", "deadline", "payload", "metadata"])
def test_required_fields(missing: str) -> None:
    assert rejection(**{missing: None}) == f"{missing}: is required"


def test_extra_metadata_key_is_rejected() -> None:
    message = rejection(metadata=metadata(url="https://x"))
    assert message == "metadata.url: is not allowed (unknown property)"


@pytest.mark.parametrize("key", ["name", "description", "owner", "source"])
def test_every_metadata_key_is_required(key: str) -> None:
    meta = metadata()
    del meta[key]
    assert rejection(metadata=meta) == f"metadata.{key}: is required"


@pytest.mark.parametrize("source", ["http://a", "https://a/b", "ssh://host/x", "git@github.com:x"])
def test_good_metadata_sources(source: str) -> None:
    assert parse(metadata=metadata(source=source)).metadata.source == source


@pytest.mark.parametrize("source", ["ftp://x", "example.com", "", "HTTPS://x", " https://x"])
def test_metadata_source_needs_a_known_scheme(source: str) -> None:
    message = rejection(metadata=metadata(source=source))
    assert message == "metadata.source: must match ^(https?://|ssh://|git@)"


def test_owner_need_not_be_an_email() -> None:
    assert parse(metadata=metadata(owner="just a name")).metadata.owner == "just a name"


@pytest.mark.parametrize(("key", "limit"), [("name", 255), ("description", 32768), ("owner", 255)])
def test_metadata_length_limits(key: str, limit: int) -> None:
    assert len(getattr(parse(metadata=metadata(**{key: "x" * limit})).metadata, key)) == limit
    message = rejection(metadata=metadata(**{key: "x" * (limit + 1)}))
    assert message == f"metadata.{key}: must be at most {limit} characters"


def test_metadata_source_length_limit() -> None:
    at_limit = "https://" + "x" * (4096 - 8)
    assert parse(metadata=metadata(source=at_limit)).metadata.source == at_limit
    message = rejection(metadata=metadata(source=at_limit + "x"))
    assert message == "metadata.source: must be at most 4096 characters"


def test_payload_and_extra_must_be_objects() -> None:
    assert rejection(payload=[]) == "payload: must be an object"
    assert rejection(extra="x") == "extra: must be an object"


# --- limits -----------------------------------------------------------------------------


def test_routes_limits() -> None:
    routes = [f"route.{i}" for i in range(64)]
    assert parse(routes=routes).routes == routes
    assert rejection(routes=[*routes, "one.more"]) == "routes: must have at most 64 items"
    assert len(parse(routes=["r" * 249]).routes[0]) == 249
    assert rejection(routes=["r" * 250]) == "routes[0]: must be at most 249 characters"
    assert rejection(routes=["ok", ""]) == "routes[1]: must not be empty"
    assert rejection(routes=["a", "b", "a"]) == "routes: must not contain duplicates: a"


def test_dependencies_limits() -> None:
    assert rejection(dependencies=[DEP_ID, DEP_ID]) == (
        f"dependencies: must not contain duplicates: {DEP_ID}"
    )
    many = [slugid() for _ in range(10001)]
    assert len(parse(dependencies=many[:10000]).dependencies) == 10000
    assert rejection(dependencies=many) == "dependencies: must have at most 10000 items"


def test_per_deployment_dependency_limit() -> None:
    task = parse(dependencies=[slugid() for _ in range(3)])
    check_dependency_limit(task, 3)
    with pytest.raises(TaskInputError, match="more than 2 dependencies"):
        check_dependency_limit(task, 2)


@pytest.mark.parametrize(
    ("retries", "message"),
    [
        (50, "retries: must be <= 49"),
        (-1, "retries: must be >= 0"),
        ("5", "retries: must be an integer"),
        (True, "retries: must be an integer"),
        (1.5, "retries: must be an integer"),
    ],
)
def test_bad_retries(retries: object, message: str) -> None:
    assert rejection(retries=retries) == message


@pytest.mark.parametrize("retries", [0, 49])
def test_retries_bounds(retries: int) -> None:
    assert parse(retries=retries).retries == retries


@pytest.mark.parametrize("priority", PRIORITY_LEVELS)
def test_every_priority_is_accepted(priority: str) -> None:
    assert parse(priority=priority).priority == priority


@pytest.mark.parametrize("priority", ["normal", "HIGH", "", 3])
def test_unknown_priorities_are_rejected(priority: object) -> None:
    assert rejection(priority=priority).startswith("priority: must be one of 'highest'")


def test_requires_values() -> None:
    assert rejection(requires="any").startswith("requires: must be one of 'all-completed'")


@pytest.mark.parametrize("scope", ["a:**", "**", "queue:create-task:**"])
def test_scopes_ending_in_double_star_are_rejected(scope: str) -> None:
    assert rejection(scopes=["ok", scope]) == f"scopes must not end with `**`: {scope}"


@pytest.mark.parametrize("scope", ["", "*", "a:*", "a**b", "a*:*", "x" * 5000])
def test_other_scopes_are_accepted(scope: str) -> None:
    assert parse(scopes=[scope]).scopes == [scope]


def test_scopes_must_be_printable_ascii() -> None:
    assert rejection(scopes=["a\tb"]) == "scopes[0]: must match ^[\\x20-\\x7e]*$"
    assert rejection(scopes=["é"]) == "scopes[0]: must match ^[\\x20-\\x7e]*$"


def test_tags_must_be_short_strings() -> None:
    assert parse(tags={"k": "v" * 4096}).tags["k"] == "v" * 4096
    assert rejection(tags={"k": "v" * 4097}) == "tags.k: must be at most 4096 characters"
    assert rejection(tags={"k": 1}) == "tags.k: must be a string"
    assert rejection(tags={"k": None}) == "tags.k: must be a string"


def test_several_problems_are_all_listed() -> None:
    message = rejection(retries=50, routes=[""], metadata=metadata(source="x"))
    assert message.splitlines() == [
        "routes[0]: must not be empty",
        "retries: must be <= 49",
        "metadata.source: must match ^(https?://|ssh://|git@)",
    ]


# --- priorities -------------------------------------------------------------------------


def test_priority_ints_run_seven_to_one() -> None:
    assert [priority_to_int(p) for p in PRIORITY_LEVELS] == [7, 6, 5, 4, 3, 2, 1]


def test_priorities_at_or_above() -> None:
    assert priorities_at_or_above("highest") == ("highest",)
    assert priorities_at_or_above("high") == ("highest", "very-high", "high")
    assert priorities_at_or_above("lowest") == PRIORITY_LEVELS


# --- dates (createTask step 5) -------------------------------------------------------------


def dated(created: datetime, deadline: datetime, expires: datetime | None = None) -> TaskDefinition:
    return parse(
        created=format_ts(created),
        deadline=format_ts(deadline),
        expires=format_ts(expires) if expires else None,
    )


def test_dates_within_every_rule_pass() -> None:
    check_dates(dated(NOW, NOW + timedelta(hours=1)), NOW)


def test_created_drift_boundaries() -> None:
    deadline = NOW + timedelta(hours=1)
    check_dates(dated(NOW - DRIFT, deadline), NOW)
    check_dates(dated(NOW + DRIFT, deadline), NOW)
    with pytest.raises(TaskInputError, match="`created` cannot be in the past"):
        check_dates(dated(NOW - DRIFT - MS, deadline), NOW)
    with pytest.raises(TaskInputError, match="`created` cannot be in the future"):
        check_dates(dated(NOW + DRIFT + MS, deadline), NOW)


def test_deadline_must_not_precede_created() -> None:
    created = NOW + timedelta(minutes=10)
    check_dates(dated(created, created), NOW)
    with pytest.raises(TaskInputError, match="`deadline` cannot be earlier than `created`"):
        check_dates(dated(created, created - MS), NOW)


def test_deadline_must_not_be_past() -> None:
    created = NOW - timedelta(minutes=10)
    check_dates(dated(created, NOW), NOW)  # exactly now is not yet in the past
    with pytest.raises(TaskInputError, match="`deadline` cannot be in the past") as caught:
        check_dates(dated(created, NOW - MS), NOW)
    assert caught.value.details == {"deadline": NOW - MS}


def test_deadline_cap_is_five_days_plus_drift() -> None:
    cap = NOW + timedelta(days=5) + DRIFT
    check_dates(dated(NOW, cap), NOW)
    with pytest.raises(TaskInputError, match="more than 5 days into the future"):
        check_dates(dated(NOW, cap + MS), NOW)


def test_deadline_cap_is_configurable() -> None:
    far = NOW + timedelta(days=7)
    check_dates(dated(NOW, far), NOW, max_deadline_days=7)
    with pytest.raises(TaskInputError, match="more than 6 days"):
        check_dates(dated(NOW, far), NOW, max_deadline_days=6)


def test_expires_must_not_precede_deadline() -> None:
    deadline = NOW + timedelta(hours=1)
    check_dates(dated(NOW, deadline, deadline), NOW)
    with pytest.raises(TaskInputError, match="`expires` cannot be before `deadline`"):
        check_dates(dated(NOW, deadline, deadline - MS), NOW)


def test_check_dates_uses_millisecond_precision_for_now() -> None:
    # A `now` with microseconds must not make an exact-boundary task fail.
    check_dates(dated(NOW - DRIFT, NOW + timedelta(hours=1)), NOW + timedelta(microseconds=999))


def test_task_input_error_is_a_value_error() -> None:
    assert issubclass(TaskInputError, ValueError)


# --- idempotency --------------------------------------------------------------------------


def test_same_definition_after_defaults_and_date_spelling() -> None:
    explicit = parse(
        created="2025-01-02T04:04:05.678+01:00",
        schedulerId="-",
        projectId="none",
        retries=5,
        priority="lowest",
        expires="2026-01-03T03:04:05.678Z",
        taskGroupId=TASK_ID,
    )
    assert same_definition(parse(), explicit, TASK_ID)
    assert not same_definition(parse(), explicit)  # without the taskId the groups differ


@pytest.mark.parametrize(
    "change",
    [
        {"retries": 4},
        {"routes": ["r"]},
        {"payload": {"command": ["false"]}},
        {"payload": {"command": [True]}},
        {"metadata": metadata(name="other")},
        {"deadline": format_ts(NOW + timedelta(days=1, milliseconds=1))},
        {"taskGroupId": GROUP_ID},
    ],
)
def test_any_difference_is_a_different_definition(change: dict[str, Any]) -> None:
    assert not same_definition(parse(), parse(**change), TASK_ID)


def test_json_equality_is_strict_about_types() -> None:
    assert json_equal({"a": [1, {"b": None}]}, {"a": [1.0, {"b": None}]})
    assert not json_equal({"a": True}, {"a": 1})
    assert not json_equal([0], [False])
    assert not json_equal({"a": 1}, {"a": 1, "b": 2})
    assert not json_equal([1, 2], [2, 1])
    assert not json_equal("1", 1)


# --- timestamps -------------------------------------------------------------------------


@given(st.datetimes(min_value=datetime(1970, 1, 1), timezones=st.just(UTC)))
def test_ts_round_trips(value: datetime) -> None:
    adapter = TypeAdapter(Timestamp)
    text = adapter.dump_python(adapter.validate_python(format_ts(value)), mode="json")
    assert text == format_ts(value)
    assert adapter.validate_python(text) == truncate_ms(value)


@given(
    st.datetimes(min_value=datetime(1971, 1, 1), max_value=datetime(9000, 1, 1)),
    st.integers(min_value=-23 * 60, max_value=23 * 60),
)
def test_any_offset_normalises_to_the_same_instant(naive: datetime, offset_min: int) -> None:
    aware = naive.replace(tzinfo=timezone(timedelta(minutes=offset_min)))
    parsed = TypeAdapter(Timestamp).validate_python(aware.isoformat())
    assert parsed == truncate_ms(aware.astimezone(UTC))
    assert parsed.tzinfo is UTC
