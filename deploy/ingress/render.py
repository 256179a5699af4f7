#!/usr/bin/env python3
"""Render the ingress's nginx.conf from deploy/ingress/nginx.conf.template.

Flotilla's one root URL: every API under `/api/<service>/v1/`, routed by path prefix to
its service's upstream, as a Taskcluster deployment is. A service is given as
`--upstream NAME=HOST:PORT`; repeat it for each replica of that service (they are
balanced, least connections first). A service with no upstream is not routed: its paths
answer Taskcluster's 404 body naming it.

    render.py --listen 127.0.0.1:8080 --upstream queue=127.0.0.1:8180 \
        --upstream worker-manager=127.0.0.1:8181 --runtime-dir DIR --log-dir DIR
    render.py --compose          # the config deploy/compose.yaml mounts (stdout)

Standard library only: deploy/local/ingress.sh runs it with the system python3.
"""

from __future__ import annotations

import argparse
import getpass
import os
import re
import sys
from pathlib import Path

TEMPLATE = Path(__file__).resolve().parent / "nginx.conf.template"

# Upstream name -> the public path prefixes it serves, in Taskcluster's URL layout. The
# queue process also serves the Auth API and the signed artifact-byte URLs it hands out.
ROUTES: dict[str, tuple[str, ...]] = {
    "queue": ("/api/queue/", "/api/auth/", "/artifact-bytes/"),
    "worker-manager": ("/api/worker-manager/",),
    "index": ("/api/index/",),
    "purge-cache": ("/api/purge-cache/",),
    "object": ("/api/object/",),
    "web": ("/",),  # the web console, at the root as upstream's UI
}

# Internal addresses of the services in deploy/compose.yaml (compose service names). A
# service added to the compose file gets its line here; then regenerate compose.nginx.conf
# (`python3 deploy/ingress/render.py --compose > deploy/ingress/compose.nginx.conf`).
COMPOSE_UPSTREAMS: dict[str, list[str]] = {
    "queue": ["queue:8180"],
    "worker-manager": ["provisioner:8181"],
    "index": ["index:8182"],
    "purge-cache": ["purge-cache:8183"],
    "object": ["object:8184"],
    "web": ["web:8185"],
}

_ADDRESS = re.compile(r"^[A-Za-z0-9_.\-\[\]:]+:[0-9]{1,5}$")


def api_services(upstreams: dict[str, list[str]]) -> list[str]:
    """The `/api/<service>/` names a set of upstreams serves, in route order. Pure."""
    return [
        prefix.split("/")[2]
        for name, prefixes in ROUTES.items()
        if upstreams.get(name)
        for prefix in prefixes
        if prefix.startswith("/api/")
    ]


def render(
    upstreams: dict[str, list[str]],
    *,
    listen: str,
    pid: str,
    error_log: str,
    access_log: str,
    temp_dir: str,
    user: str | None = None,
    workers: str = "1",
    resolver: str | None = None,
) -> str:
    """The nginx.conf text. Pure (reads only the template).

    With a `resolver` (a DNS server's address), each service is one host name looked up
    again every few seconds instead of a fixed upstream: nginx resolves an upstream's names
    only when it starts, so after a restart of the services behind it (new addresses) it
    would keep sending to the old ones. Replicas sharing the name are used in turn."""
    unknown = sorted(set(upstreams) - set(ROUTES))
    if unknown:
        raise ValueError(f"unknown services {unknown}; known: {', '.join(ROUTES)}")
    blocks, locations = [], []
    for name, prefixes in ROUTES.items():
        servers = upstreams.get(name) or []
        if not servers:
            continue
        for server in servers:
            if not _ADDRESS.match(server):
                raise ValueError(f"{name}: {server!r} is not HOST:PORT")
        if resolver is not None:
            if len(servers) != 1:
                raise ValueError(f"{name}: with a resolver, replicas share one name")
            # A variable makes nginx resolve the name per request (cached `valid` s).
            target = (
                f"set $flotilla_backend {servers[0]};\n      proxy_pass http://$flotilla_backend;"
            )
        else:
            lines = "".join(f"    server {server};\n" for server in servers)
            blocks.append(
                f"  upstream flotilla_{name.replace('-', '_')} {{\n"
                "    least_conn;\n"
                f"{lines}"
                "    keepalive 32;\n"
                "  }"
            )
            target = f"proxy_pass http://flotilla_{name.replace('-', '_')};"
        for prefix in prefixes:
            # `^~`: a served prefix wins over the catch-all regex for unserved services;
            # `= /api/queue` (no slash) is the service's too, not an "unserved" one.
            matches = ["/"] if prefix == "/" else [f"^~ {prefix}"]
            if prefix.startswith("/api/"):
                matches.append(f"= {prefix.rstrip('/')}")
            for match in matches:
                locations.append(
                    f"    location {match} {{\n"
                    f"      set $flotilla_service {name};\n"
                    # No URI after the upstream: nginx passes the request URI exactly as
                    # the client sent it (%2F kept), which the Hawk MAC covers.
                    f"      {target}\n"
                    "    }"
                )
    served = ", ".join(api_services(upstreams)) or "none"
    if not upstreams.get("web"):
        locations.append(
            "    location / {\n"
            "      default_type application/json;\n"
            '      return 404 \'{"code":"ResourceNotFound","message":"Nothing is served '
            "at this path by this deployment (no web console). APIs are under "
            f'/api/<service>/v1/; served here: {served}.","requestInfo":{{"method":'
            '"$request_method","params":{},"payload":{},"time":"$time_iso8601"}}\\n\';\n'
            "    }"
        )
    values = {
        "USER": f"user {user};" if user else "# (not root: nginx runs as the invoking user)",
        "WORKERS": workers,
        "PID": pid,
        "ERROR_LOG": error_log,
        "ACCESS_LOG": access_log,
        "TEMP": temp_dir,
        "LISTEN": listen,
        "UPSTREAMS": "\n".join(blocks)
        or (
            f"  resolver {resolver} valid=5s ipv6=off;\n  resolver_timeout 5s;"
            if resolver
            else "  # (no services)"
        ),
        "LOCATIONS": "\n".join(locations),
        "SERVED": served,
    }
    text = TEMPLATE.read_text()
    for key, value in values.items():
        text = text.replace(f"@@{key}@@", value)
    return text


def render_compose() -> str:
    return render(
        COMPOSE_UPSTREAMS,
        listen="80",
        pid="/var/run/nginx.pid",
        error_log="stderr",
        access_log="/dev/stdout",
        temp_dir="/var/cache/nginx",
        user="nginx",
        workers="auto",
        resolver="127.0.0.11",  # Docker's embedded DNS on a user-defined network
    )


def _parse_upstreams(values: list[str]) -> dict[str, list[str]]:
    upstreams: dict[str, list[str]] = {}
    for value in values:
        name, sep, address = value.partition("=")
        if not sep:
            raise SystemExit(f"--upstream wants NAME=HOST:PORT, got {value!r}")
        upstreams.setdefault(name, []).append(address)
    return upstreams


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--compose", action="store_true", help="the compose file's config")
    parser.add_argument("--listen", default="127.0.0.1:8080")
    parser.add_argument("--upstream", action="append", default=[], metavar="NAME=HOST:PORT")
    parser.add_argument("--runtime-dir", help="pid file and temp dirs go here")
    parser.add_argument("--log-dir", help="ingress.log and ingress-access.log go here")
    parser.add_argument("--workers", default="1")
    parser.add_argument("-o", "--output", help="write here instead of stdout")
    args = parser.parse_args(argv)
    if args.compose:
        text = render_compose()
    else:
        if not args.runtime_dir or not args.log_dir:
            parser.error("--runtime-dir and --log-dir are needed (or --compose)")
        runtime = Path(args.runtime_dir).resolve()
        logs = Path(args.log_dir).resolve()
        for sub in ("body", "proxy", "fastcgi", "uwsgi", "scgi"):
            (runtime / "temp" / sub).mkdir(parents=True, exist_ok=True)
        # nginx started as root would hand its workers to `nobody`, who cannot write the
        # temp dirs made here: keep the invoking user.
        user = getpass.getuser() if os.geteuid() == 0 else None
        try:
            text = render(
                _parse_upstreams(args.upstream),
                listen=args.listen,
                pid=str(runtime / "ingress.pid"),
                error_log=str(logs / "ingress.log"),
                access_log=str(logs / "ingress-access.log"),
                temp_dir=str(runtime / "temp"),
                user=user,
                workers=args.workers,
            )
        except ValueError as exc:
            raise SystemExit(f"render.py: {exc}") from exc
    if args.output:
        Path(args.output).write_text(text)
    else:
        sys.stdout.write(text)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
