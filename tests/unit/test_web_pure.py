"""The web console's pure parts: ANSI rendering, graph layout, critical path, sessions."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from services.web import ansi, graph, profiler
from services.web.session import SessionCodec, csrf_ok, new_session

T0 = datetime(2026, 1, 1, tzinfo=UTC)


def at(seconds: float) -> datetime:
    return T0 + timedelta(seconds=seconds)


def test_ansi_colours_become_spans_and_markup_is_escaped() -> None:
    lines = ansi.AnsiLines()
    out = lines.render("\x1b[31mred <script>alert(1)</script>\x1b[0m plain \x1b[31mon")
    assert out == (
        '<span class="fg1">red &lt;script&gt;alert(1)&lt;/script&gt;</span> plain '
        '<span class="fg1">on</span>'
    )
    # colour state carries over to the next line until reset
    assert lines.render("still\x1b[1;92m bright") == (
        '<span class="fg1">still</span><span class="fg10 b"> bright</span>'
    )
    assert "\x1b" not in lines.render("\x1b[2Kerased\x1b[?25l")


def test_log_lines_are_numbered_with_anchors_across_split_chunks() -> None:
    splitter = ansi.LineSplitter()
    chunks = [b"one\ntw", "o é".encode()[:-1], "é".encode()[-1:] + b"\nthree"]
    lines = [line for chunk in chunks for line in splitter.feed(chunk)] + splitter.flush()
    assert lines == ["one", "two é", "three"]
    html = ansi.render_log(b"a\nb\n")
    assert '<span class="line" id="L2"><a class="ln" href="#L2">2</a>b</span>' in html
    assert 'id="L3"' not in html


def test_graph_depth_is_the_longest_in_group_chain() -> None:
    deps = {"a": [], "b": ["a"], "c": ["a"], "d": ["b", "c", "a"], "x": ["outside"]}
    assert graph.depths(deps) == {"a": 0, "b": 1, "c": 1, "d": 2, "x": 0}
    layout = graph.layout(deps, order=["a", "c", "b", "d", "x"])
    nodes = {n.task_id: n for n in layout.nodes}
    assert (nodes["c"].row, nodes["b"].row) == (0, 1)  # `order` decides within a column
    assert {(e.source, e.target) for e in layout.edges} == {
        ("a", "b"),
        ("a", "c"),
        ("b", "d"),
        ("c", "d"),
        ("a", "d"),
    }
    assert all(e.x1 < e.x2 for e in layout.edges)


def test_graph_depth_survives_deep_chains_and_cycles() -> None:
    chain = {f"t{i}": [f"t{i - 1}"] if i else [] for i in range(5000)}
    assert graph.depths(chain)["t4999"] == 4999
    assert set(graph.depths({"a": ["b"], "b": ["a"]})) == {"a", "b"}


def task(
    task_id: str, created: float, deps: list[str], runs: list[tuple[float, float, float]]
) -> profiler.TaskTiming:
    return profiler.TaskTiming(
        task_id,
        task_id,
        at(created),
        deps,
        [
            profiler.RunTiming(i, "completed", at(s), at(st), at(r))
            for i, (s, st, r) in enumerate(runs)
        ],
    )


def test_critical_path_follows_the_dependency_that_released_each_task() -> None:
    tasks = {
        "a": task("a", 0, [], [(0, 1, 5)]),
        "fast": task("fast", 0, ["a"], [(5, 6, 7)]),
        "slow": task("slow", 0, ["a"], [(5, 9, 20)]),  # 4 s waiting for a worker
        "d": task("d", 0, ["fast", "slow"], [(20, 21, 25)]),
        "other": task("other", 0, [], [(0, 0.5, 3)]),
    }
    path = profiler.critical_path(tasks)
    assert path.task_ids == ["a", "slow", "d"]
    assert path.total_s == 25
    assert path.waiting_for_worker_s == 1 + 4 + 1
    assert path.running_s == 4 + 11 + 4
    assert path.waiting_for_dependencies_s == 0


def test_critical_path_counts_retried_runs_and_handles_empty_groups() -> None:
    assert profiler.critical_path({}).task_ids == []
    retried = {"r": task("r", 0, [], [(1, 2, 3), (3, 10, 12)])}
    path = profiler.critical_path(retried)
    assert (path.waiting_for_worker_s, path.running_s, path.waiting_for_dependencies_s) == (8, 3, 1)


def test_timeline_bars_cover_waiting_pending_and_running() -> None:
    start, span, rows = profiler.timeline([task("b", 0, ["a"], [(5, 6, 10)])], at(100))
    assert (start, span) == (at(0), 10)
    assert [(b.kind, b.left, b.width) for b in rows[0]] == [
        ("waiting", 0, 50),
        ("pending", 50, 10),
        ("running-completed", 60, 40),
    ]


def test_session_cookie_round_trips_and_refuses_tampering() -> None:
    codec = SessionCodec("k1")
    session = new_session()
    # Characters outside base64's alphabet: they could not turn up in a cookie by chance.
    signed = type(session)(session.csrf, "me@home", "token:secret")
    cookie = codec.encode(signed)
    assert "token:secret" not in cookie and "me@home" not in cookie
    assert codec.decode(cookie) == signed
    assert "token:secret" not in repr(signed)
    assert codec.decode(cookie[:-4] + "AAAA") is None
    assert SessionCodec("k2").decode(cookie) is None
    assert codec.decode(None) is None
    assert csrf_ok(signed, signed.csrf)
    assert not csrf_ok(signed, None) and not csrf_ok(signed, "x") and not csrf_ok(None, "x")


def test_yaml_dates_go_back_to_the_queue_in_the_protocol_form() -> None:
    from services.web.tasks import _jsonable

    parsed = {"created": datetime(2026, 1, 2, 3, 4, 5, 678000), "tags": [{"d": T0}], "n": 1}
    assert _jsonable(parsed) == {
        "created": "2026-01-02T03:04:05.678Z",
        "tags": [{"d": "2026-01-01T00:00:00.000Z"}],
        "n": 1,
    }


def test_a_watched_group_binds_every_task_exchange_with_its_routing_key_pattern() -> None:
    from services.web.live import bindings_for, summarize
    from shared.routing import task_routing_key

    key = task_routing_key(
        task_id="t1",
        run_id=0,
        provisioner_id="p",
        worker_type="w",
        scheduler_id="-",
        task_group_id="g1",
    )
    patterns = {b.event: b.pattern for b in bindings_for("g1")}
    assert patterns["task-completed"] == "primary.*.*.*.*.*.*.*.g1.#"
    assert patterns["task-group-resolved"] == "primary.g1.#"
    words, pattern = key.split("."), patterns["task-running"].split(".")
    assert all(p in ("*", w) for p, w in zip(pattern[:9], words[:9], strict=True))
    status = {"taskId": "t1", "taskGroupId": "g1", "state": "completed", "runs": [{}, {}]}
    assert summarize("x/task-completed", {"status": status}) == (
        "g1",
        {
            "taskId": "t1",
            "state": "completed",
            "runs": 2,
            "taskQueueId": None,
            "started": None,
            "resolved": None,
        },
    )
    assert summarize("x/task-group-resolved", {"taskGroupId": "g1"}) == (
        "g1",
        {"groupResolved": True},
    )
    assert summarize("x/task-pending", {"no": "status"}) is None
