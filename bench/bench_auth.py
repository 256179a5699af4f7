"""Verified requests per second for the pure auth layer, on one core.

Requests are signed exactly as the official client signs them (mohawk, the client's
own ext), against a realistic role set (~200 roles, a third of them star roles), and
verified with `shared.auth.authenticate`. "warm" is the steady state (role expansions
cached, as for a client that keeps calling); "cold" disables the resolver's caches so
every request pays for full role expansion.

    .venv/bin/python -m bench.bench_auth [--seconds 1.0]
"""

from __future__ import annotations

import argparse
import json
import platform
import time
from collections.abc import Callable
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import mohawk
import taskcluster

from shared.auth import ClientRecord, HawkRequest, RoleResolver, authenticate, validate_roles
from shared.timeutil import utcnow

RESULTS = Path(__file__).parent / "results" / "auth.json"
HOST, PORT = "queue.example.com", 443
ROOT_URL = f"https://{HOST}"
WORKER_TOKEN = "workerAccessToken-0123456789abcdefABCDEF01"
ROOT_TOKEN = "rootAccessToken-0123456789abcdefABCDEF0123"
TASK_ID = "fN1SbArXTPSVFNUvaOlinQ"


def realistic_roles() -> dict[str, list[str]]:
    """~200 roles shaped like a real deployment: projects, repos, pools, hooks, groups."""
    roles: dict[str, list[str]] = {
        "anonymous": [
            "queue:get-artifact:public/*",
            "queue:list-task-queues",
            "queue:pending-count:*",
        ]
    }
    for p in range(60):
        roles[f"project:p{p}"] = [
            f"queue:create-task:project:p{p}",
            f"queue:route:index.project.p{p}.*",
            f"queue:scheduler-id:p{p}-level-*",
            f"queue:get-artifact:project/p{p}/*",
            f"secrets:get:project/p{p}/*",
            f"assume:worker-pool:proj-p{p}/*",
        ]
    for o in range(40):
        roles[f"repo:github.com/org{o}/*"] = [
            "queue:create-task:highest:proj-*",
            "queue:route:checks",
            f"queue:route:index.org{o}.<..>.*",
            f"secrets:get:repo/org{o}/<..>",
            f"assume:project:p{o % 60}",
        ]
    for w in range(50):
        roles[f"worker-pool:proj-p{w}/*"] = [
            f"queue:claim-work:proj-p{w}/<..>",
            "queue:worker-id:<..>/*",
            f"queue:create-artifact:proj-p{w}/*",
        ]
        roles[f"worker-type:prov{w}/wt"] = [f"queue:claim-work:prov{w}/wt", f"assume:project:p{w}"]
    for h in range(15):
        roles[f"hook-id:group{h}/*"] = [f"queue:create-task:low:hooks/{h}", f"assume:project:p{h}"]
    for g in range(10):
        roles[f"mozilla-group:team{g}"] = [
            f"assume:project:p{g}",
            f"assume:repo:github.com/org{g}/*",
            "queue:get-task:*",
        ]
    return roles


def sign(
    client_id: str,
    token: str,
    method: str,
    path: str,
    body: bytes = b"",
    ext: bytes | str = b"e30=",
) -> HawkRequest:
    sender = mohawk.Sender(
        credentials={"id": client_id, "key": token, "algorithm": "sha256"},
        ext=ext,
        url=ROOT_URL + path,
        content=body.decode() if body else "",
        content_type="application/json" if body else "",
        method=method,
    )
    return HawkRequest(
        method=method,
        resource=path,
        host=HOST,
        port=PORT,
        authorization=sender.request_header,
        content_type="application/json" if body else None,
        body=body,
    )


def client_ext(**options: Any) -> bytes:
    """The ext the official client would send for these options."""
    queue = taskcluster.Queue({"rootUrl": ROOT_URL, **options})
    return queue.makeHawkExt()


def cases(now: datetime) -> dict[str, tuple[HawkRequest, str | None]]:
    """Each case: the signed request and the clientId it must authenticate as."""
    worker = {"clientId": "worker/w1", "accessToken": WORKER_TOKEN}
    body = json.dumps(
        {"workerGroup": "g", "workerId": "w", "tasks": 1, "pad": "x" * 10_200},
        separators=(",", ":"),
    ).encode()
    temp = taskcluster.createTemporaryCredentials(
        "static/root",
        ROOT_TOKEN,
        now - timedelta(minutes=1),
        now + timedelta(hours=1),
        [f"queue:get-artifact:private/{i}/*" for i in range(18)]
        + ["assume:worker-pool:proj-p3/wt", "assume:repo:github.com/org5/app"],
        name=f"task-client/{TASK_ID}/0/on/g/w/until/{int(now.timestamp())}",
    )
    temp_ext = client_ext(
        credentials={
            "clientId": temp["clientId"],
            "accessToken": temp["accessToken"],
            "certificate": temp["certificate"],
        }
    )
    authorized_ext = client_ext(
        credentials=worker,
        authorizedScopes=["queue:claim-work:proj-p3/wt", "queue:worker-id:wt/*"],
    )
    task = f"/api/queue/v1/task/{TASK_ID}"
    claim = "/api/queue/v1/claim-work/proj-p3%2Fwt"
    temp_token = temp["accessToken"].decode()
    return {
        "(a) GET, Hawk": (sign("worker/w1", WORKER_TOKEN, "GET", task), "worker/w1"),
        "(b) POST, 10 KB body": (sign("worker/w1", WORKER_TOKEN, "POST", claim, body), "worker/w1"),
        "(c) GET, certificate": (
            sign(temp["clientId"], temp_token, "GET", task, ext=temp_ext),
            temp["clientId"],
        ),
        "(d) GET, authorizedScopes": (
            sign("worker/w1", WORKER_TOKEN, "GET", task, ext=authorized_ext),
            "worker/w1",
        ),
        "(e) GET, anonymous": (HawkRequest("GET", "/api/queue/v1/ping", HOST, PORT), None),
    }


def measure(fn: Callable[[], object], seconds: float) -> float:
    """Best of three runs of ~seconds/3 each, in calls per second."""
    best = 0.0
    for _ in range(3):
        calls, started = 0, time.perf_counter()
        deadline = started + seconds / 3
        while True:
            for _ in range(100):
                fn()
            calls += 100
            elapsed = time.perf_counter() - started
            if elapsed >= seconds / 3 and time.perf_counter() >= deadline:
                break
        best = max(best, calls / elapsed)
    return best


def clients(now: datetime) -> dict[str, ClientRecord]:
    expires = now + timedelta(days=30)
    worker_scopes = (
        "assume:worker-pool:proj-p3/wt",
        "assume:mozilla-group:team4",
        "queue:create-artifact:*",
    )
    return {
        "worker/w1": ClientRecord(
            clientId="worker/w1", accessToken=WORKER_TOKEN, scopes=worker_scopes, expires=expires
        ),
        "static/root": ClientRecord(
            clientId="static/root", accessToken=ROOT_TOKEN, scopes=("*",), expires=expires
        ),
    }


def run(seconds: float) -> dict[str, Any]:
    roles = realistic_roles()
    started = time.perf_counter()
    validate_roles(roles)
    validate_ms = (time.perf_counter() - started) * 1000
    started = time.perf_counter()
    warm = RoleResolver(roles)
    build_ms = (time.perf_counter() - started) * 1000
    cold = RoleResolver(roles, cache_size=0)  # every request expands its roles afresh

    now = utcnow()
    known = clients(now)
    rows = []
    for name, (request, expected) in cases(now).items():
        # Check once outside the loop: a benchmark of failures would be meaningless.
        result = authenticate(request, known, warm, now)
        assert result.client_id == expected, (name, result)
        row: dict[str, Any] = {"case": name, "expanded_scopes": len(result.scopes)}
        for label, resolver in (("warm", warm), ("cold", cold)):
            rate = measure(lambda r=request, s=resolver: authenticate(r, known, s, now), seconds)
            row[f"{label}_requests_per_s"] = round(rate)
            row[f"{label}_us_per_request"] = round(1e6 / rate, 1)
        rows.append(row)
    return {
        "benchmark": "auth",
        "measured_at": now.isoformat(),
        "python": f"{platform.python_implementation()} {platform.python_version()}",
        "machine": platform.machine(),
        "roles": len(roles),
        "star_roles": sum(r.endswith("*") for r in roles),
        "validate_roles_ms": round(validate_ms, 2),
        "resolver_build_ms": round(build_ms, 3),
        "results": rows,
    }


def print_table(report: dict[str, Any]) -> None:
    print(
        f"{report['roles']} roles ({report['star_roles']} star roles); validate_roles "
        f"{report['validate_roles_ms']} ms, RoleResolver() {report['resolver_build_ms']} ms; "
        f"one core, {report['python']} on {report['machine']}"
    )
    columns = ("case", "warm req/s", "us/req", "cold req/s", "us/req", "scopes")
    header = f"{columns[0]:<28}" + "".join(f"{c:>12}" for c in columns[1:])
    print(header)
    print("-" * len(header))
    for row in report["results"]:
        values = (
            f"{row['warm_requests_per_s']:,}",
            row["warm_us_per_request"],
            f"{row['cold_requests_per_s']:,}",
            row["cold_us_per_request"],
            row["expanded_scopes"],
        )
        print(f"{row['case']:<28}" + "".join(f"{v:>12}" for v in values))


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--seconds", type=float, default=1.5, help="time per measurement")
    args = parser.parse_args()
    report = run(args.seconds)
    print_table(report)
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(report, indent=2) + "\n")
    print(f"\nwrote {RESULTS}")


if __name__ == "__main__":
    main()
