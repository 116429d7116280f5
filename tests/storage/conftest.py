from __future__ import annotations

from collections.abc import Callable

import pytest

from omni.jobs import JobStore


@pytest.fixture
def store(open_store: Callable[..., JobStore]) -> JobStore:
    """The job store under test: SQLite, then Postgres (files in a local directory)."""
    return open_store()
