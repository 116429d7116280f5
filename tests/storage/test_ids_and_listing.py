"""Job ids that never reach a path, and listing jobs in pages."""

from __future__ import annotations

from typing import Any

import pytest

from omni.errors import InvalidRequestError
from omni.jobs import JobStore
from omni.storage import is_job_id, new_job_id
from tests.storage.helpers import content_path, make_job


@pytest.mark.parametrize(
    "job_id",
    [
        "../videos.sqlite3",
        "video_../../etc/passwd",
        "video_" + "0" * 31,
        "video_" + "A" * 32,
        "video_" + "0" * 32 + "\n",
        "video_" + "0" * 32 + "/../x",
        "/tmp/video_" + "0" * 32,
        "",
    ],
)
def test_ids_that_are_not_ours_never_reach_a_path(store: JobStore, job_id: str) -> None:
    assert not is_job_id(job_id)
    assert store.get(job_id) is None
    assert store.delete(job_id) is False
    with pytest.raises(InvalidRequestError):
        store.open_artifact(job_id)
    with pytest.raises(InvalidRequestError):
        store.create(make_job(id=job_id))


def test_new_ids_are_random_and_valid() -> None:
    ids = {new_job_id() for _ in range(100)}
    assert len(ids) == 100
    assert all(is_job_id(job_id) for job_id in ids)


def test_content_paths_stay_inside_the_storage_directory(store: JobStore) -> None:
    path = content_path(store, new_job_id())
    assert path.parent == store.artifacts.directory


def collect_pages(store: JobStore, order: str, limit: int) -> list[list[str]]:
    pages: list[list[str]] = []
    after = None
    while True:
        page = store.list(after=after, limit=limit, order=order)
        pages.append([job.id for job in page.jobs])
        if not page.has_more:
            return pages
        after = page.jobs[-1].id
        assert len(pages) < 10


def test_listing_paginates_in_creation_order(store: JobStore) -> None:
    # Two jobs share a second: creation order still breaks the tie.
    jobs = [make_job(created_at=t) for t in (100, 100, 101, 102, 103)]
    for job in jobs:
        store.create(job)
    ids = [job.id for job in jobs]
    assert collect_pages(store, "asc", 2) == [ids[0:2], ids[2:4], ids[4:]]
    newest_first = ids[::-1]
    assert collect_pages(store, "desc", 2) == [
        newest_first[0:2],
        newest_first[2:4],
        newest_first[4:],
    ]
    assert collect_pages(store, "desc", 5) == [newest_first]
    assert store.list(limit=100).has_more is False


def test_listing_an_empty_store_gives_an_empty_page(store: JobStore) -> None:
    page = store.list()
    assert (page.jobs, page.has_more) == ([], False)


@pytest.mark.parametrize(
    "kwargs",
    [{"limit": 0}, {"limit": 101}, {"order": "sideways"}, {"after": new_job_id()}, {"after": "x"}],
)
def test_bad_listing_arguments_are_refused(store: JobStore, kwargs: dict[str, Any]) -> None:
    with pytest.raises(InvalidRequestError):
        store.list(**kwargs)
