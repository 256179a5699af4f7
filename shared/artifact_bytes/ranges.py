"""The `Range` request header (RFC 9110 §14), as far as artifact downloads need it: one
byte range per request. Pure."""

from __future__ import annotations

import re
from dataclasses import dataclass

from shared import errors

_SINGLE = re.compile(r"bytes=(\d*)-(\d*)")


@dataclass(frozen=True)
class ByteRange:
    start: int
    end: int  # inclusive, as in Content-Range

    @property
    def length(self) -> int:
        return self.end - self.start + 1

    def content_range(self, total: int) -> str:
        return f"bytes {self.start}-{self.end}/{total}"


class RangeNotSatisfiable(errors.ApiError):
    code, status = "RangeNotSatisfiable", 416


def parse_range(header: str | None, total: int) -> ByteRange | None:
    """The range to serve of a `total`-byte object, or None for all of it (status 200).

    A header we do not understand (another unit, several ranges, a malformed one) is
    ignored, as RFC 9110 allows: the client then gets the whole object. A well-formed
    range that starts past the end raises RangeNotSatisfiable (416).
    """
    if header is None:
        return None
    match = _SINGLE.fullmatch(header.strip().replace(" ", ""))
    if match is None or match.group(1) == match.group(2) == "":
        return None
    first, last = match.group(1), match.group(2)
    if first == "":  # a suffix: the last N bytes
        suffix = int(last)
        if suffix == 0 or total == 0:
            raise RangeNotSatisfiable(f"Range {header!r} selects no bytes of {total}.")
        return ByteRange(max(total - suffix, 0), total - 1)
    start = int(first)
    if last != "" and int(last) < start:
        return None  # invalid, so ignored
    if start >= total:
        raise RangeNotSatisfiable(f"Range {header!r} starts past the end ({total} bytes).")
    return ByteRange(start, total - 1 if last == "" else min(int(last), total - 1))
