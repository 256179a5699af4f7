#!/usr/bin/env python3
"""flotilla-standin-healthcheck mongo|amqp: the HEALTHCHECK of the stand-in server images.

Each speaks the first step of its protocol to the server in the same container, the way a
client would, without starting another runtime (an Erlang VM for rabbitmq-diagnostics
costs seconds of CPU per probe; mongosh is not there):

- `mongo`: an OP_MSG `{ping: 1}` on 127.0.0.1:27017 answers `ok: 1`.
- `amqp`: the AMQP 0-9-1 header on 127.0.0.1:5672 is answered with Connection.Start.

Standard library only. Exit 0 = healthy.
"""

from __future__ import annotations

import socket
import struct
import sys

TIMEOUT_S = 4.0
OP_MSG = 2013


def _bson_ping() -> bytes:
    elements = b"\x10ping\x00" + struct.pack("<i", 1)
    elements += b"\x02$db\x00" + struct.pack("<i", 6) + b"admin\x00"
    return struct.pack("<i", len(elements) + 5) + elements + b"\x00"


def _read(sock: socket.socket, size: int) -> bytes:
    data = b""
    while len(data) < size:
        chunk = sock.recv(size - len(data))
        if not chunk:
            raise ConnectionError("the server closed the connection")
        data += chunk
    return data


def check_mongo() -> str | None:
    body = struct.pack("<I", 0) + b"\x00" + _bson_ping()
    message = struct.pack("<iiii", 16 + len(body), 1, 0, OP_MSG) + body
    with socket.create_connection(("127.0.0.1", 27017), timeout=TIMEOUT_S) as sock:
        sock.sendall(message)
        length, _, _, opcode = struct.unpack("<iiii", _read(sock, 16))
        reply = _read(sock, length - 16)
    if opcode != OP_MSG:
        return f"unexpected reply opcode {opcode}"
    at = reply.find(b"\x01ok\x00")  # ok as a double
    if at >= 0 and struct.unpack_from("<d", reply, at + 4)[0] == 1.0:
        return None
    return "ping did not answer ok: 1"


def check_amqp() -> str | None:
    with socket.create_connection(("127.0.0.1", 5672), timeout=TIMEOUT_S) as sock:
        sock.sendall(b"AMQP\x00\x00\x09\x01")
        frame = _read(sock, 11)
    # method frame (1) on channel 0 whose class/method is 10/10: Connection.Start
    if frame[0] == 1 and frame[7:11] == b"\x00\x0a\x00\x0a":
        return None
    return f"unexpected first frame {frame!r}"


def main(argv: list[str]) -> int:
    checks = {"mongo": check_mongo, "amqp": check_amqp}
    if len(argv) != 1 or argv[0] not in checks:
        print("usage: flotilla-standin-healthcheck mongo|amqp", file=sys.stderr)
        return 2
    try:
        problem = checks[argv[0]]()
    except OSError as exc:
        problem = f"{argv[0]} on this container: {exc}"
    if problem:
        print(f"unhealthy: {problem}")
        return 1
    print("healthy")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
