"""`flotilla`: the composition root. Reads the environment once, runs one command, and
turns every failure a user can cause into one line on stderr and an exit code."""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import sys
from collections.abc import Sequence
from pathlib import Path

from cli import artifacts, listen, logs, pending, submit, tasks, watch, workers
from cli.args import build_parser
from cli.config import CliConfig, config_from
from cli.envfile import load_environment
from cli.errors import translate
from cli.output import Output
from cli.session import Clients, open_clients


async def run(args: argparse.Namespace, config: CliConfig, out: Output) -> int:
    if args.command == "listen":
        return await listen.listen(
            config,
            out,
            args.exchange,
            task_group_id=args.task_group_id,
            task_id=args.task_id,
            task_queue_id=args.task_queue_id,
            routes=args.routes,
            count=args.count,
        )
    if args.command == "pending":
        return await pending.rebuild(config, out, args.task_queue_ids)
    async with open_clients(config) as clients:
        if args.command == "pools":
            return await workers.list_pools(clients, out)
        if args.command == "workers":
            if args.task_queue_id:
                return await workers.list_workers(clients, out, args.task_queue_id)
            return await workers.list_task_queues(clients, out)
        if args.command == "group":
            return await watch.watch_group(clients, out, config, args.task_group_id, args.poll)
        if args.command == "graph":
            plan = await submit.submit_graph(
                clients,
                out,
                config,
                args.file,
                concurrency=args.concurrency,
                task_group_id=args.task_group_id,
            )
            if args.watch:
                return await watch.watch_group(clients, out, config, plan.task_group_id, args.poll)
            return 0
        return await run_task_command(args, config, out, clients)


async def run_task_command(
    args: argparse.Namespace, config: CliConfig, out: Output, clients: Clients
) -> int:
    action = args.action
    if action == "create":
        return await tasks.create(clients, out, config, args.file, args.task_id)
    if action == "status":
        return await tasks.show_status(clients, out, args.task_id)
    if action == "rerun":
        return await tasks.rerun(clients, out, args.task_id)
    if action == "cancel":
        return await tasks.cancel(clients, out, args.task_id)
    if action == "log":
        return await logs.show_log(
            clients, out.json_mode, args.task_id, args.run, args.follow, args.poll
        )
    if action == "artifacts":
        if args.artifact_action == "get":
            return await artifacts.get_artifact(
                clients, out, args.task_id, args.name, args.run, args.output
            )
        return await artifacts.list_artifacts(clients, out, args.task_id, args.run)
    raise AssertionError(f"unhandled task action {action}")


QUIET_LOGGERS = ("aio_pika", "aiormq", "taskcluster")  # their failures reach us as errors


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    for name in QUIET_LOGGERS:
        logging.getLogger(name).setLevel(logging.CRITICAL)
    out = Output(json_mode=getattr(args, "json", False))
    try:
        config = config_from(load_environment(Path.cwd(), os.environ))
        return asyncio.run(run(args, config, out))
    except KeyboardInterrupt:
        return 130
    except Exception as exc:
        error = translate(exc)
        if error is None:
            raise
        print(f"flotilla: {error.message}", file=sys.stderr)
        return error.exit_code


if __name__ == "__main__":
    sys.exit(main())
