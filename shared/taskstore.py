"""Tasks in MongoDB: one document per task, changed only by conditional updates.

Every change goes through `TaskStore.mutate`: load the record, let a pure transition
(shared.transitions) decide, then store the new state *and* the effects it implies (the
outbox) in one update conditioned on the version that was read. A lost race re-reads and
decides again. After the update the effects are carried out (shared.outbox) and cleared;
a crash in between leaves them in the outbox for the relay, so no event is lost.
"""

from __future__ import annotations

import asyncio
import logging
import os
from collections.abc import Callable, Coroutine, Mapping
from dataclasses import dataclass, replace
from datetime import datetime
from typing import Any

from pymongo.errors import DuplicateKeyError

from shared import errors
from shared.db import Database
from shared.events import Message
from shared.models import Run, RunState, TaskDefinition, priority_to_int
from shared.outbox import Outbox, effect_document
from shared.timeutil import utcnow
from shared.transitions import Effect, Outcome, TaskRecord

log = logging.getLogger(__name__)

TASKS = "tasks"
SIDE_DEPENDENCIES = "task_dependencies"  # long dependency lists, by TaskRecord.dependencies_ref
LOOKUP_BATCH = 1000
MAX_ATTEMPTS = 20  # optimistic-concurrency retries before giving up with a 500


class ConcurrentModification(Exception):
    """The task kept changing under us; retrying the whole request is safe."""


def to_document(record: TaskRecord) -> dict[str, Any]:
    """The stored form. The definition is kept as JSON text: payloads may hold keys MongoDB
    cannot store as field names (`$x`, `a.b`), and queries only use the copied fields."""
    task = record.definition
    document: dict[str, Any] = {
        "_id": record.task_id,
        "definition": stored_definition(record),
        "taskGroupId": task.taskGroupId,
        "taskQueueId": task.taskQueueId,
        "schedulerId": task.schedulerId,
        "projectId": task.projectId,
        "priority": priority_to_int(task.priority),
        "deadline": task.deadline,
        "expires": task.expires,
        "version": record.version,
        # Due-time fields are left out while unset, so their sparse indexes skip the task.
        **{k: v for k, v in _state_fields(record).items() if v is not None},
    }
    if record.dependencies_ref is not None:
        document["dependenciesRef"] = record.dependencies_ref
    return document


def stored_definition(record: TaskRecord) -> str:
    """The definition as kept in the task's document: without a side-stored dependency
    list, whether or not this record carries it."""
    if record.dependencies_ref is None or not record.definition.dependencies:
        return record.definition.model_dump_json()
    return record.definition.model_copy(update={"dependencies": []}).model_dump_json()


def _state_fields(record: TaskRecord) -> dict[str, Any]:
    """Fields a transition may change. Due-time fields are present only while due, so
    their sparse indexes hold exactly the tasks a background sweep must look at."""
    last = record.last_run
    return {
        "runs": [run.model_dump() for run in record.runs],
        "retriesLeft": record.retries_left,
        "everResolved": record.ever_resolved,
        # Present (the group's id) until the task first resolves: "is any task of the
        # group still open?" is one indexed lookup, and the mark changes in the same write
        # as the task's state, so it is exact through any crash or repeat.
        "openInGroup": None if record.ever_resolved else record.definition.taskGroupId,
        "takenUntil": record.taken_until,
        "deadlineDue": record.definition.deadline if record.is_open else None,
        "resolvedAt": last.resolved if last is not None and not record.is_open else None,
        # For listPendingTasks, which reads MongoDB (claimers take runs from RabbitMQ).
        "pendingSince": last.scheduled
        if last is not None and last.state == RunState.PENDING
        else None,
    }


def from_document(document: Mapping[str, Any]) -> TaskRecord:
    return TaskRecord(
        task_id=document["_id"],
        definition=TaskDefinition.model_validate_json(document["definition"]),
        runs=tuple(Run.model_validate(run) for run in document.get("runs", ())),
        retries_left=document["retriesLeft"],
        ever_resolved=document.get("everResolved", False),
        version=document["version"],
        dependencies_ref=document.get("dependenciesRef"),
    )


def update_for(
    before: TaskRecord, after: TaskRecord, effects: list[dict[str, Any]], now: datetime
) -> dict[str, Any]:
    to_set: dict[str, Any] = {"version": before.version + 1}
    to_unset: dict[str, str] = {}
    for key, value in _state_fields(after).items():
        if value is None:
            to_unset[key] = ""
        else:
            to_set[key] = value
    if after.definition is not before.definition:
        to_set["definition"] = stored_definition(after)
        to_set["priority"] = priority_to_int(after.definition.priority)
    for index, effect in enumerate(effects):
        to_set[f"outbox.{outbox_key(before.version + 1, index)}"] = effect
    if effects:
        to_set["outboxDue"] = now
    update: dict[str, Any] = {"$set": to_set}
    if to_unset:
        update["$unset"] = to_unset
    return update


def outbox_key(version: int, index: int) -> str:
    # Sorting keys gives the order the effects were decided in.
    return f"v{version:07d}-{index:04d}"


@dataclass(frozen=True)
class Loaded:
    """A task as read, with any outbox entries a crashed writer left behind."""

    record: TaskRecord
    outbox: Mapping[str, Any]


class TaskStore:
    def __init__(self, db: Database, outbox: Outbox, *, fault: str = "") -> None:
        self.db = db
        self.tasks = db[TASKS]
        self.outbox = outbox
        # A test hook: "exit-after-commit" kills the process right after the first
        # state change is stored and before its effects are carried out.
        self._fault = fault
        self._background: set[asyncio.Task[Any]] = set()

    async def get(self, task_id: str, *, whole: bool = True) -> Loaded | None:
        """The task as stored; `whole=False` skips reading a side-stored dependency list
        (transitions never need it, only answers that show the definition do)."""
        document = await self.tasks.find_one({"_id": task_id})
        if document is None:
            return None
        record = from_document(document)
        if whole:
            (record,) = await self.complete([record])
        return Loaded(record, dict(document.get("outbox") or {}))

    async def load(self, task_id: str) -> TaskRecord | None:
        loaded = await self.get(task_id)
        return loaded.record if loaded is not None else None

    async def require(self, task_id: str, *, whole: bool = True) -> Loaded:
        loaded = await self.get(task_id, whole=whole)
        if loaded is None:
            raise errors.ResourceNotFound(f"Task `{task_id}` not found")
        return loaded

    async def load_many(self, task_ids: list[str], *, whole: bool = True) -> dict[str, TaskRecord]:
        """The tasks that exist among `task_ids`: one `$in` query per thousand ids (an
        index search on MongoDB and on our patched FerretDB)."""
        unique = list(dict.fromkeys(task_ids))
        found: dict[str, TaskRecord] = {}
        for start in range(0, len(unique), LOOKUP_BATCH):
            batch = unique[start : start + LOOKUP_BATCH]
            records = [from_document(d) async for d in self.tasks.find({"_id": {"$in": batch}})]
            if whole:
                records = await self.complete(records)
            found.update((record.task_id, record) for record in records)
        return found

    async def complete(self, records: list[TaskRecord]) -> list[TaskRecord]:
        """The records with their side-stored dependency lists put back."""
        refs = [r.dependencies_ref for r in records if r.partial]
        if not refs:
            return records
        lists = {
            d["_id"]: d["dependencies"]
            async for d in self.db[SIDE_DEPENDENCIES].find({"_id": {"$in": refs}})
        }
        return [
            replace(r, definition=r.definition.model_copy(update={"dependencies": lists[ref]}))
            if r.partial and (ref := r.dependencies_ref) in lists
            else r
            for r in records
        ]

    async def insert(
        self,
        record: TaskRecord,
        effects: tuple[Effect, ...] = (),
        *,
        extra: Mapping[str, Any] | None = None,
    ) -> TaskRecord | None:
        """Insert a new task with the effects of its creation in its outbox, then carry
        them out. None if the taskId is already taken."""
        if record.dependencies_ref is not None and not record.partial:
            await self._store_dependencies(record)
        documents = [effect_document(effect) for effect in effects]
        keys = [outbox_key(record.version, index) for index in range(len(documents))]
        document = {**to_document(record), **(extra or {})}
        if documents:
            document["outbox"] = dict(zip(keys, documents, strict=True))
            document["outboxDue"] = utcnow()
        try:
            await self.tasks.insert_one(document)
        except DuplicateKeyError:
            return None
        self._maybe_crash(record.task_id)
        if documents:
            await self.outbox.deliver(record.task_id, record.version, document["outbox"])
        return record

    async def _store_dependencies(self, record: TaskRecord) -> None:
        """Before the task: whoever finds the task finds its list. The id names the
        content, so a list already there (a repeated createTask) is the same list."""
        try:
            await self.db[SIDE_DEPENDENCIES].insert_one(
                {
                    "_id": record.dependencies_ref,
                    "dependencies": list(record.definition.dependencies),
                    "expires": record.definition.expires,
                }
            )
        except DuplicateKeyError:
            pass

    async def delete(self, record: TaskRecord) -> None:
        await self.tasks.delete_one({"_id": record.task_id})
        if record.dependencies_ref is not None:
            await self.db[SIDE_DEPENDENCIES].delete_one({"_id": record.dependencies_ref})

    async def mutate(
        self,
        task_id: str,
        decide: Callable[[TaskRecord], Outcome],
        *,
        loaded: Loaded | None = None,
        deliver_later: bool = False,
    ) -> Outcome:
        """Load (unless given) → decide → store conditionally → carry out the effects.
        Raises ResourceNotFound when the task does not exist."""
        for _attempt in range(MAX_ATTEMPTS):
            if loaded is None:
                loaded = await self.require(task_id, whole=False)
            record = loaded.record
            # Effects a crashed writer left behind go out with ours (at least once).
            leftover = loaded.outbox
            outcome = decide(record)
            if not outcome.changed:
                await self.outbox.perform([effect_document(e) for e in outcome.effects])
                return outcome
            stored = await self._store(
                record, outcome.record, outcome.effects, leftover, later=deliver_later
            )
            if stored is not None:
                return Outcome(stored, outcome.effects, True)
            loaded = None  # lost a race: read again and decide again
        raise ConcurrentModification(f"task {task_id} changed {MAX_ATTEMPTS} times under us")

    async def _store(
        self,
        before: TaskRecord,
        after: TaskRecord,
        effects: tuple[Effect, ...],
        leftover: Mapping[str, Any],
        *,
        later: bool = False,
    ) -> TaskRecord | None:
        now = utcnow()
        documents = [effect_document(effect) for effect in effects]
        version = before.version + 1
        result = await self.tasks.update_one(
            {"_id": before.task_id, "version": before.version},
            update_for(before, after, documents, now),
        )
        if result.matched_count == 0:
            return None
        self._maybe_crash(before.task_id)
        keys = [outbox_key(version, index) for index in range(len(documents))]
        outbox = {**leftover, **dict(zip(keys, documents, strict=True))}
        if later:
            # The caller answers first (a worker waiting on a claim); the outbox already
            # holds the effects, so a crash before they go out only delays them.
            self.in_background(self.outbox.deliver(before.task_id, version, outbox))
        else:
            await self.outbox.deliver(before.task_id, version, outbox)
        return replace(after, version=version)

    def in_background(self, work: Coroutine[Any, Any, Any]) -> None:
        """Run bookkeeping after the response; `drain` waits for it at shutdown."""
        task = asyncio.create_task(work)
        self._background.add(task)
        task.add_done_callback(self._finished)

    def _finished(self, task: asyncio.Task[Any]) -> None:
        self._background.discard(task)
        if not task.cancelled() and task.exception() is not None:
            log.error("background bookkeeping failed", exc_info=task.exception())

    async def drain(self) -> None:
        while self._background:
            await asyncio.gather(*list(self._background), return_exceptions=True)

    def _maybe_crash(self, task_id: str) -> None:
        if self._fault == "exit-after-commit":
            log.warning("fault injected: exiting after commit", extra={"taskId": task_id})
            os._exit(70)

    async def publish(self, messages: list[Message]) -> None:
        await self.outbox.perform([effect_document(message) for message in messages])
