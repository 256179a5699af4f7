"""The failure budget every background loop runs under (shared/loops.py)."""

from __future__ import annotations

import logging

import pytest

from shared.loops import FailureBudget, LoopFailed


async def test_a_loop_that_keeps_failing_gives_up_and_one_that_recovers_does_not() -> None:
    budget = FailureBudget("test loop", allowed=3, min_failing_s=0)
    for _ in range(2):
        async with budget.attempt():
            raise RuntimeError("boom")
    async with budget.attempt() as summary:  # a success resets the count
        summary["done"] = 1
    assert budget.failures == 0
    for _ in range(2):
        async with budget.attempt():
            raise RuntimeError("boom")
    with pytest.raises(LoopFailed):
        async with budget.attempt():
            raise RuntimeError("boom")


async def test_a_budget_also_needs_time_to_run_out() -> None:
    budget = FailureBudget("patient loop", allowed=1, min_failing_s=3600)
    for _ in range(10):  # a blip of fast failures is not yet "keeps failing"
        async with budget.attempt():
            raise ConnectionError("database restarting")
    assert budget.failures == 10


async def test_each_pass_logs_one_summary_line(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG, logger="shared.loops")
    calls = 0

    async def flaky() -> dict[str, int]:
        nonlocal calls
        calls += 1
        if calls in (2, 4, 5):
            raise ValueError(f"bad pass {calls}")
        return {"handled": calls}

    budget = FailureBudget("summary loop", allowed=2, min_failing_s=0)
    with pytest.raises(LoopFailed):  # 2 failures in a row (passes 4 and 5) spend it
        while True:
            async with budget.attempt() as summary:
                summary.update(await flaky())
    assert calls == 5
    lines = [r for r in caplog.records if getattr(r, "loop", None) == "summary loop"]
    passes = [r for r in lines if hasattr(r, "ok")]
    assert [r.ok for r in passes] == [True, False, True, False, False]
    assert (passes[0].handled, passes[2].handled) == (1, 3)
    assert lines[-1].levelname == "CRITICAL"
