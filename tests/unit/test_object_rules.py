"""The object service's pure rules: lock-in, hashes, method choice, finishing."""

from __future__ import annotations

import base64
import hashlib
import json
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from typing import Any

import pydantic
import pytest

from services.object import rules
from services.object.rules import CreateUploadRequest, FinishUploadRequest
from services.queue.context import Issuer
from services.queue.object_artifacts import download_credentials, upload_credentials, upload_id_for
from shared import errors

NOW = datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC)
UPLOAD = "dLsvnP8gR7OiEWTJwP7ZXw"
SHA256 = hashlib.sha256(b"data").hexdigest()


def create(**fields: Any) -> CreateUploadRequest:
    body = {
        "projectId": "p",
        "uploadId": UPLOAD,
        "expires": "2026-02-01T00:00:00.000Z",
        "proposedUploadMethods": {},
        **fields,
    }
    return CreateUploadRequest.model_validate(body)


def finish(**fields: Any) -> FinishUploadRequest:
    return FinishUploadRequest.model_validate({"projectId": "p", "uploadId": UPLOAD, **fields})


def test_requests_check_hash_shapes_but_accept_unknown_algorithms() -> None:
    assert create(hashes={"sha256": SHA256, "md5": "whatever"}).hashes["md5"] == "whatever"
    with pytest.raises(pydantic.ValidationError):
        create(hashes={"sha256": "abc"})
    with pytest.raises(pydantic.ValidationError):
        create(uploadId="nope")


def test_an_upload_locks_its_id_project_and_expiry_and_hashes_only_grow() -> None:
    record = rules.new_record("n", create(hashes={"sha256": SHA256}), NOW)
    assert record.upload_expires == NOW + rules.UPLOAD_DEADLINE
    assert rules.relock(record, create()) == record
    grown = rules.relock(record, create(hashes={"sha512": "a" * 128}))
    assert grown.hashes == {"sha256": SHA256, "sha512": "a" * 128}
    for changed in (
        create(uploadId="fLsvnP8gR7OiEWTJwP7ZXw"),
        create(projectId="q"),
        create(expires="2026-02-01T00:00:00.001Z"),
        create(hashes={"sha256": "b" * 64}),
    ):
        with pytest.raises(errors.RequestConflict):
            rules.relock(record, changed)
    finished = rules.check_finish(record, finish())
    with pytest.raises(errors.RequestConflict):
        rules.relock(finished, create())


def test_inline_data_is_decoded_bounded_and_checked_against_declared_hashes() -> None:
    inline = rules.DataInline(contentType="t", objectData=base64.b64encode(b"data").decode())
    data = rules.decode_inline(inline)
    assert rules.check_inline_hashes({"sha256": SHA256}, data)["sha256"] == SHA256
    with pytest.raises(errors.InputError, match="does not match"):
        rules.check_inline_hashes({"sha256": "0" * 64}, data)
    with pytest.raises(errors.InputError, match="base64"):
        rules.decode_inline(rules.DataInline(contentType="t", objectData="***"))
    big = base64.b64encode(b"x" * (rules.DATA_INLINE_MAX_BYTES + 1)).decode()
    with pytest.raises(errors.InputError, match="at most"):
        rules.decode_inline(rules.DataInline(contentType="t", objectData=big))


def test_methods_are_chosen_in_upstreams_order() -> None:
    put = {"contentType": "t", "contentLength": 3}
    inline = {"contentType": "t", "objectData": ""}
    both = create(proposedUploadMethods={"putUrl": put, "dataInline": inline})
    assert rules.choose_upload_method(both.proposedUploadMethods) == "dataInline"
    only_put = create(proposedUploadMethods={"putUrl": put})
    assert rules.choose_upload_method(only_put.proposedUploadMethods) == "putUrl"
    assert rules.choose_upload_method(create().proposedUploadMethods) is None
    accept = rules.AcceptDownloadMethods
    assert rules.choose_download_method(accept(getUrl=True, simple=True)) == "getUrl"
    assert rules.choose_download_method(accept(simple=True)) == "simple"
    with pytest.raises(rules.NoMatchingMethod):
        rules.choose_download_method(accept.model_validate({"HTTP:GET": True}))


def test_finishing_checks_project_upload_and_hashes() -> None:
    record = rules.new_record("n", create(hashes={"sha256": SHA256}), NOW)
    with pytest.raises(errors.InputError):
        rules.check_finish(record, finish(projectId="q"))
    with pytest.raises(errors.RequestConflict):
        rules.check_finish(record, finish(uploadId="fLsvnP8gR7OiEWTJwP7ZXw"))
    with pytest.raises(errors.RequestConflict):
        rules.check_finish(record, finish(hashes={"sha256": "c" * 64}))
    done = rules.check_finish(record, finish(hashes={"sha512": "d" * 128}))
    assert done.finished and done.hashes == {"sha256": SHA256, "sha512": "d" * 128}
    assert rules.check_finish(done, finish(hashes={"sha256": SHA256})) is done  # a repeat
    with pytest.raises(errors.RequestConflict):
        rules.check_finish(done, finish(hashes={"sha256": "c" * 64}))
    with pytest.raises(errors.InputError, match="No data"):
        rules.check_uploaded_length(record, None)
    with pytest.raises(errors.InputError, match="contentLength"):
        rules.check_uploaded_length(replace(record, content_length=4), 5)


def test_only_finished_unexpired_objects_are_downloadable() -> None:
    record = rules.new_record("n", create(), NOW)
    with pytest.raises(errors.ResourceNotFound):
        rules.downloadable(record, "n", NOW)
    done = rules.check_finish(record, finish())
    assert rules.downloadable(done, "n", NOW) is done
    with pytest.raises(errors.ResourceNotFound):
        rules.downloadable(done, "n", done.expires + timedelta(seconds=1))
    with pytest.raises(errors.ResourceNotFound):
        rules.downloadable(None, "n", NOW)


def test_the_queues_upload_ids_are_stable_slugids() -> None:
    first = upload_id_for("t/T/0/public/a")
    assert create(uploadId=first).uploadId == first  # the object service takes it
    assert first == upload_id_for("t/T/0/public/a")
    assert first != upload_id_for("t/T/0/public/b")


def test_the_queues_object_credentials_name_and_bound_their_holder() -> None:
    issuer = Issuer("static/root", "token")
    made = upload_credentials(
        issuer,
        task_id="T",
        run_id=0,
        worker_group="wg",
        worker_id="w1",
        project_id="p",
        object_name="t/T/0/public/a b",
        expires=NOW + timedelta(days=7),
        now=NOW,
    )
    assert made["clientId"] == "artifact-upload/T/0/on/wg/w1"
    cert = json.loads(made["certificate"])
    assert cert["scopes"] == ["object:upload:p:t/T/0/public/a b"]
    assert cert["expiry"] - cert["start"] == 24 * 3600 * 1000  # min(expires, 24 h)
    soon = upload_credentials(
        issuer,
        task_id="T",
        run_id=0,
        worker_group="wg",
        worker_id="w1",
        project_id="p",
        object_name="o",
        expires=NOW + timedelta(hours=2),
        now=NOW,
    )
    assert json.loads(soon["certificate"])["expiry"] - cert["start"] == 2 * 3600 * 1000
    reader = download_credentials(
        issuer, task_id="T", run_id=0, name="public/a b", object_name="t/T/0/public/a b", now=NOW
    )
    # a space cannot travel in a Hawk id
    assert reader["clientId"] == "artifact-download/T/0/public/a_b"
    assert json.loads(reader["certificate"])["scopes"] == ["object:download:t/T/0/public/a b"]
