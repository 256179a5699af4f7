"""Slugids: v4 UUIDs in url-safe base64 without padding, as upstream uses for taskIds."""

from __future__ import annotations

import base64
import uuid

# Upstream's URL-parameter pattern: 22 chars whose bits spell a v4 UUID (version nibble 4,
# RFC 4122 variant). A 22-char id that is not v4 is rejected.
SLUGID_PATTERN = r"^[A-Za-z0-9_-]{8}[Q-T][A-Za-z0-9_-][CGKOSWaeimquy26-][A-Za-z0-9_-]{10}[AQgw]$"


def slugid() -> str:
    """A fresh v4 slugid whose first character is never '-' (safe as a CLI argument)."""
    raw = bytearray(uuid.uuid4().bytes)
    raw[0] &= 0x7F  # upstream's "nice" slugids clear the top bit so the id never starts with '-'
    return base64.urlsafe_b64encode(bytes(raw)).decode("ascii")[:22]
