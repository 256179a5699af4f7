"""Upstream's artifact rules (reference §6) as pure functions: what may be created when,
what a re-create may change, and how links are followed."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from shared import artifacts, errors
from shared.artifacts import Artifact, CreateArtifactRequest
from shared.models import Run

NOW = datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC)
LATER = NOW + timedelta(days=1)


def request(**body: Any) -> Any:
    return CreateArtifactRequest.wrap({"expires": "2026-01-03T00:00:00.000Z", **body}).request


def artifact(storage_type: str = "reference", **changes: Any) -> Artifact:
    base = Artifact("T", 0, "public/x", storage_type, "text/plain", LATER, {"url": "https://a/"})
    return replace(base, **changes)


def run(state: str, *, claimed: bool = True, resolved: datetime | None = None) -> Run:
    fields: dict[str, Any] = {"runId": 0, "state": state, "reasonCreated": "scheduled"}
    fields["scheduled"] = NOW - timedelta(hours=1)
    if claimed:
        fields |= {"workerGroup": "wg", "workerId": "w", "started": NOW - timedelta(minutes=50)}
    if resolved is not None:
        fields |= {"resolved": resolved, "reasonResolved": "malformed-payload"}
    return Run.model_validate(fields)


def test_requests_are_a_one_of_by_storage_type() -> None:
    made = artifacts.from_request("T", 0, "a", request(storageType="s3", contentType="x/y"))
    assert (made.storage_type, made.content_type, made.key) == ("s3", "x/y", "t/T/0/a")
    link = artifacts.from_request("T", 0, "a", request(storageType="link", artifact="b"))
    assert link.details == {"artifact": "b"}
    obj = request(storageType="object", contentType="x/y", contentLength=3)
    made = artifacts.from_request("T", 0, "a", obj, upload_id="U")
    assert (made.storage_type, made.present, made.details) == (
        "object",
        False,
        {"contentLength": 3, "uploadId": "U"},
    )
    assert artifacts.object_name(made) == "t/T/0/a"
    # presence is not part of identity: re-creating a finished one is an identical repeat
    artifacts.check_replace(replace(made, present=True), made)
    with pytest.raises(errors.RequestConflict, match="expires"):
        artifacts.check_replace(made, replace(made, expires=made.expires + timedelta(days=1)))
    with pytest.raises(ValueError):
        request(storageType="error", reason="not-a-reason", message="m")


def test_create_checks_come_in_upstreams_order() -> None:
    with pytest.raises(errors.InputError, match="15 minutes"):
        artifacts.check_create(NOW - timedelta(minutes=16), None, NOW)
    with pytest.raises(errors.InputError, match="never claimed"):
        artifacts.check_create(LATER, run("pending", claimed=False), NOW)
    assert artifacts.check_create(NOW - timedelta(minutes=14), run("running"), NOW).runId == 0


@pytest.mark.parametrize(
    ("state", "resolved_ago", "allowed"),
    [
        ("running", None, True),
        ("exception", timedelta(minutes=24), True),
        ("exception", timedelta(minutes=26), False),
        ("completed", timedelta(minutes=1), False),
        ("failed", timedelta(minutes=1), False),
    ],
)
def test_only_running_runs_or_fresh_exceptions_take_artifacts(
    state: str, resolved_ago: timedelta | None, allowed: bool
) -> None:
    resolved = NOW - resolved_ago if resolved_ago is not None else None
    subject = run(state, resolved=resolved)
    if allowed:
        artifacts.check_run_open(LATER, LATER, subject, NOW)
    else:
        with pytest.raises(errors.RequestConflict):
            artifacts.check_run_open(LATER, LATER, subject, NOW)
    with pytest.raises(errors.InputError, match="after the task expiration"):
        artifacts.check_run_open(LATER + timedelta(seconds=1), LATER, subject, NOW)


def test_what_a_re_create_may_change() -> None:
    existing = artifact()
    artifacts.check_replace(existing, existing)  # identical: a refreshed upload URL
    artifacts.check_replace(existing, replace(existing, expires=LATER + timedelta(days=1)))
    artifacts.check_replace(existing, replace(existing, details={"url": "https://b/"}))
    as_link = artifact("link", content_type="application/octet-stream", details={"artifact": "y"})
    artifacts.check_replace(existing, as_link)  # reference -> link, content type free
    refused = [
        replace(existing, expires=LATER - timedelta(seconds=1)),
        replace(existing, content_type="text/html"),
        artifact("error", details={"reason": "file-missing-on-worker", "message": "m"}),
    ]
    for change in refused:
        with pytest.raises(errors.RequestConflict):
            artifacts.check_replace(existing, change)
    s3 = artifact("s3", details={"contentLength": 3})
    with pytest.raises(errors.RequestConflict):
        artifacts.check_replace(s3, replace(s3, details={"contentLength": 4}))
    with pytest.raises(errors.RequestConflict):
        artifacts.check_replace(as_link, replace(as_link, details={"artifact": "z"}))


def test_links_are_followed_until_a_cycle() -> None:
    link = artifact("link", details={"artifact": "public/b"})
    assert artifacts.next_hop(link, ["public/x"]) == "public/b"
    assert artifacts.next_hop(artifact(), ["public/x"]) is None
    with pytest.raises(errors.InputError, match="public/x -> public/b -> public/x"):
        artifacts.next_hop(
            replace(link, details={"artifact": "public/x"}), ["public/x", "public/b"]
        )


def test_info_never_shows_details_and_upload_urls_expire_with_the_artifact() -> None:
    info = artifact("s3", details={"contentLength": 12}).info()
    assert info == {
        "storageType": "s3",
        "name": "public/x",
        "expires": "2026-01-03T03:04:05.000Z",
        "contentType": "text/plain",
        "contentLength": 12,
    }
    assert artifacts.upload_expiry(NOW, LATER) == NOW + timedelta(minutes=45)
    assert artifacts.upload_expiry(NOW, NOW + timedelta(minutes=5)) == NOW + timedelta(minutes=5)
