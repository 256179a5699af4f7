"""Range headers for artifact downloads: one range, or the whole object."""

from __future__ import annotations

import pytest

from shared.artifact_bytes.ranges import ByteRange, RangeNotSatisfiable, parse_range


@pytest.mark.parametrize(
    ("header", "expected"),
    [
        ("bytes=0-9", ByteRange(0, 9)),
        ("bytes=10-", ByteRange(10, 99)),
        ("bytes=-10", ByteRange(90, 99)),
        ("bytes=-1000", ByteRange(0, 99)),  # a suffix longer than the object is all of it
        ("bytes=50-1000", ByteRange(50, 99)),  # an end past the object is clipped
        ("bytes=99-99", ByteRange(99, 99)),
        (" bytes = 1-2 ", ByteRange(1, 2)),
    ],
)
def test_single_ranges(header: str, expected: ByteRange) -> None:
    assert parse_range(header, 100) == expected


@pytest.mark.parametrize(
    "header",
    [None, "", "bytes=", "bytes=-", "bytes=5-2", "items=0-1", "bytes=0-1,5-6", "bytes=a-b"],
)
def test_what_is_not_one_valid_range_means_the_whole_object(header: str | None) -> None:
    assert parse_range(header, 100) is None


@pytest.mark.parametrize(
    ("header", "total"), [("bytes=100-", 100), ("bytes=-0", 100), ("bytes=-5", 0), ("bytes=0-", 0)]
)
def test_unsatisfiable_ranges(header: str, total: int) -> None:
    with pytest.raises(RangeNotSatisfiable):
        parse_range(header, total)


def test_content_range_and_length() -> None:
    span = ByteRange(90, 99)
    assert span.length == 10
    assert span.content_range(100) == "bytes 90-99/100"
