"""`flotilla listen EXCHANGE [--task-group G] [--task-id T] [--route R]`: print each event."""

from __future__ import annotations

from collections.abc import Sequence

from cli.bindings import describe_event, event_name, listen_bindings
from cli.config import CliConfig
from cli.events import subscribe
from cli.output import Output


async def listen(
    config: CliConfig,
    out: Output,
    exchange: str,
    *,
    task_group_id: str | None,
    task_id: str | None,
    task_queue_id: str | None,
    routes: Sequence[str],
    count: int | None,
) -> int:
    event = event_name(exchange, config.exchange_prefix)
    bindings = listen_bindings(
        event,
        task_group_id=task_group_id,
        task_id=task_id,
        task_queue_id=task_queue_id,
        routes=routes,
    )
    async with subscribe(config, bindings) as subscription:
        patterns = ", ".join(binding.pattern for binding in bindings)
        out.note(f"listening on {config.exchange_prefix}{event} ({patterns}); Ctrl-C to stop")
        received = 0
        while count is None or received < count:
            message = await subscription.next()
            received += 1
            if out.json_mode:
                out.json(
                    {
                        "exchange": message.exchange,
                        "routingKey": message.routing_key,
                        "body": message.body,
                    }
                )
            else:
                out.line(describe_event(message.event, message.routing_key, message.body))
    return 0
