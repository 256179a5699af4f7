"""Command-stats files are named after the process that writes them."""

from __future__ import annotations

from shared import commandstats


def test_process_names() -> None:
    assert commandstats.process_name("/repo/services/queue/__main__.py") == "queue"
    assert commandstats.process_name("/repo/bench/__main__.py") == "bench"
    assert commandstats.process_name("/usr/bin/pytest") == "pytest"
    assert commandstats.process_name("-c") == "python"
    assert commandstats.process_name("") == "python"
