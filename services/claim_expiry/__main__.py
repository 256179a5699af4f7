"""`python -m services.claim_expiry`: the composition root."""

from __future__ import annotations

import asyncio
import sys
from collections.abc import Sequence

from services.claim_expiry.reapers import ClaimReaper, DeadlineReaper, Expirer
from shared import artifact_bytes, logs, resolution_queue, service
from shared.config import load_settings

# claim-expiry is also where half-done work is finished: effects a crashed writer left
# in a task's outbox.
RELAY_INTERVAL_S = 5.0
RELAY_GRACE_S = 5.0


async def _loops(runtime: service.Runtime) -> Sequence[service.Loop]:
    outbox = runtime.store.outbox
    await resolution_queue.declare(runtime.broker, runtime.settings)  # before we resolve any
    byte_store = artifact_bytes.open_store(runtime.settings, runtime.db)
    await byte_store.start()
    return [
        ClaimReaper(runtime).run,
        DeadlineReaper(runtime).run,
        Expirer(runtime, byte_store).run,
        lambda: outbox.run_relay(
            first_s=RELAY_INTERVAL_S, interval_s=RELAY_INTERVAL_S, grace_s=RELAY_GRACE_S
        ),
    ]


def main() -> None:
    settings = load_settings()
    logs.configure(settings.log_level, service="services.claim_expiry")
    sys.exit(asyncio.run(service.run(settings, _loops)))


if __name__ == "__main__":
    main()
