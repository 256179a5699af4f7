"""Artifact naming, content types and the gzip choice (reference §2.7)."""

from __future__ import annotations

import pytest

from flotilla_worker.artifacts import content_type_for, should_gzip
from services.docker_worker.artifacts import member_artifact_name


@pytest.mark.parametrize(
    ("name", "content_type"),
    [
        ("public/a.txt", "text/plain"),
        ("public/b.json", "application/json"),
        ("public/c.html", "text/html"),
        ("public/d.png", "image/png"),
        ("public/e.tar.gz", "application/x-tar"),
        ("public/no-extension", "application/octet-stream"),
        ("public/f.weird-ext", "application/octet-stream"),
    ],
)
def test_content_type_comes_from_the_extension(name: str, content_type: str) -> None:
    assert content_type_for(name) == content_type


@pytest.mark.parametrize(
    ("name", "gzip"),
    [
        ("a.txt", True),
        ("a.log", True),
        ("noext", False),  # unknown type: stored as it is (issue 20)
        ("a.gz", False),
        ("a.tar.gz", False),
        ("a.ZIP", False),
        ("a.whl", False),
        ("a.zst", False),
        ("a.lz4", False),
        ("a.png", False),
        ("a.jpeg", False),
        ("a.woff2", False),
    ],
)
def test_already_compressed_types_are_not_gzipped(name: str, gzip: bool) -> None:
    assert should_gzip(name) is gzip


def test_member_names() -> None:
    assert member_artifact_name("public/result.txt", "file", "result.txt") == "public/result.txt"
    assert member_artifact_name("public/dir", "directory", "out/a.txt") == "public/dir/a.txt"
    assert member_artifact_name("public/dir/", "directory", "out/s/b.json") == "public/dir/s/b.json"
