"""The command line: argparse subcommands (`flotilla --help`)."""

from __future__ import annotations

import argparse
from pathlib import Path


def _positive(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError("must be at least 1")
    return value


def _seconds(text: str) -> float:
    value = float(text)
    if value <= 0:
        raise argparse.ArgumentTypeError("must be more than 0")
    return value


def build_parser() -> argparse.ArgumentParser:
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument(
        "--json",
        action="store_true",
        default=argparse.SUPPRESS,  # so `flotilla --json task ...` survives the subparser
        help="machine-readable output (JSON) instead of tables",
    )
    parser = argparse.ArgumentParser(
        prog="flotilla",
        description="Work with a Flotilla deployment. Credentials and URLs come from "
        "TASKCLUSTER_* / FLOTILLA_* variables, or else from the nearest .flotilla/env.",
        parents=[common],
    )
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    task = commands.add_parser("task", help="create and inspect single tasks", parents=[common])
    task_commands = task.add_subparsers(dest="action", required=True, metavar="ACTION")
    create = task_commands.add_parser(
        "create", help="create a task from a YAML/JSON file", parents=[common]
    )
    create.add_argument("file", type=Path)
    create.add_argument("--task-id", help="use this taskId (default: a new slugid)")
    for name, text in (
        ("status", "the task's state and runs"),
        ("rerun", "run a resolved task again"),
        ("cancel", "cancel the task (exception/canceled)"),
    ):
        sub = task_commands.add_parser(name, help=text, parents=[common])
        sub.add_argument("task_id", metavar="TASKID")
    log = task_commands.add_parser("log", help="print the latest run's log", parents=[common])
    log.add_argument("task_id", metavar="TASKID")
    log.add_argument("-f", "--follow", action="store_true", help="follow the live log")
    log.add_argument("--run", type=int, help="run id (default: the latest)")
    log.add_argument("--poll", type=_seconds, default=1.0, help=argparse.SUPPRESS)
    artifacts = task_commands.add_parser(
        "artifacts", help="list a run's artifacts, or `get` one", parents=[common]
    )
    artifacts.add_argument("task_id", metavar="TASKID")
    artifacts.add_argument("--run", type=int, help="run id (default: the latest)")
    artifact_actions = artifacts.add_subparsers(dest="artifact_action", metavar="get")
    get = artifact_actions.add_parser("get", help="download an artifact", parents=[common])
    get.add_argument("name", metavar="NAME")
    get.add_argument("-o", "--output", help="file to write ('-': stdout; default: basename)")
    get.add_argument("--run", type=int, help="run id (default: the latest)")

    graph = commands.add_parser("graph", help="task graphs", parents=[common])
    graph_commands = graph.add_subparsers(dest="action", required=True, metavar="ACTION")
    submit = graph_commands.add_parser(
        "submit", help="submit a graph file (tasks named symbolically)", parents=[common]
    )
    submit.add_argument("file", type=Path)
    submit.add_argument("--concurrency", type=_positive, default=8, help="createTask calls at once")
    submit.add_argument("--task-group-id", help="use this taskGroupId (default: a new slugid)")
    submit.add_argument("--watch", action="store_true", help="then watch the group to the end")
    submit.add_argument("--poll", type=_seconds, default=5.0, help=argparse.SUPPRESS)

    group = commands.add_parser("group", help="task groups", parents=[common])
    group_commands = group.add_subparsers(dest="action", required=True, metavar="ACTION")
    watch = group_commands.add_parser(
        "watch", help="a live table of the group until every task resolved", parents=[common]
    )
    watch.add_argument("task_group_id", metavar="GROUPID")
    watch.add_argument(
        "--poll", type=_seconds, default=5.0, help="seconds between safety-net listings"
    )

    listen = commands.add_parser(
        "listen", help="print the queue's events from one exchange", parents=[common]
    )
    listen.add_argument("exchange", metavar="EXCHANGE", help="e.g. task-completed")
    listen.add_argument("--task-group", dest="task_group_id", metavar="G")
    listen.add_argument("--task-id", dest="task_id", metavar="T")
    listen.add_argument("--task-queue", dest="task_queue_id", metavar="PROV/TYPE")
    listen.add_argument(
        "--route",
        dest="routes",
        action="append",
        default=[],
        metavar="R",
        help="also bind route.R (repeatable)",
    )
    listen.add_argument("--count", type=_positive, help="exit after this many events")

    pending = commands.add_parser(
        "pending", help="repair pending queues (an operator's tool)", parents=[common]
    )
    pending_commands = pending.add_subparsers(dest="action", required=True, metavar="ACTION")
    rebuild = pending_commands.add_parser(
        "rebuild",
        help="republish the runs MongoDB says are pending (messages lost in RabbitMQ)",
        description="Purge each task queue's pending queue in RabbitMQ and publish again "
        "every run the database says is pending, best first; then make pendingTasks exact. "
        "Reads FLOTILLA_MONGO_URL, FLOTILLA_MONGO_DB, FLOTILLA_AMQP_URL and "
        "FLOTILLA_PENDING_QUEUE_EXPIRES as the services do.",
        parents=[common],
    )
    rebuild.add_argument("task_queue_ids", nargs="+", metavar="TASK_QUEUE")

    workers = commands.add_parser(
        "workers", help="task queues, or the workers of one", parents=[common]
    )
    workers.add_argument("task_queue_id", nargs="?", metavar="TASK_QUEUE")
    commands.add_parser(
        "pools", help="worker pools and their capacity (the provisioner's API)", parents=[common]
    )
    return parser
