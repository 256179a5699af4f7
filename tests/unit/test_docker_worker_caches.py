"""Cache instances and purge requests on a real directory tree."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

from services.docker_worker.caches import CLOCK_SKEW, Caches, created_at
from shared.timeutil import utcnow


def test_purge_drops_free_instances_made_before_and_defers_mounted_ones(tmp_path: Path) -> None:
    caches = Caches(tmp_path)
    mounted = caches.acquire("build")
    free = caches.acquire("build")
    caches.release(free, purge=False)
    assert abs(created_at(free.path) - utcnow()) < timedelta(seconds=5)

    assert caches.drop_created_before("build", utcnow()) == 2
    assert not free.path.exists()
    assert mounted.path.exists()  # in use: deleted when released
    caches.release(mounted, purge=False)
    assert not mounted.path.exists()

    fresh = caches.acquire("build")
    caches.release(fresh, purge=False)
    # a request from before this instance (beyond the clock margin) leaves it alone
    assert caches.drop_created_before("build", utcnow() - 2 * CLOCK_SKEW) == 0
    assert fresh.path.exists()


def test_purge_never_follows_a_name_outside_the_cache_root(tmp_path: Path) -> None:
    (tmp_path / "outside").mkdir()
    (tmp_path / "outside" / "keep").mkdir()
    caches = Caches(tmp_path / "caches")
    for name in ("..", "../outside", "/tmp"):
        assert caches.drop_created_before(name, utcnow()) == 0
    assert (tmp_path / "outside" / "keep").exists()
