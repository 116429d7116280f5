"""What only a shared store has to do: servers claiming at once, and a dropped connection."""

from __future__ import annotations

import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from omni.jobs.artifacts import LocalArtifacts
from omni.jobs.queue import Claim
from tests.services import new_database
from tests.storage.helpers import INPUT, make_job

NUM_JOBS = 40
NUM_SERVERS = 4


@pytest.fixture
def database(postgres_server_url: str) -> str:
    return new_database(postgres_server_url)


def test_servers_claiming_at_once_take_every_job_exactly_once(
    database: str, tmp_path: Path
) -> None:
    from omni.jobs.postgres import PostgresJobStore

    stores = [
        PostgresJobStore(database, LocalArtifacts(tmp_path), worker_id=f"server-{n}")
        for n in range(NUM_SERVERS)
    ]
    jobs = [make_job() for _ in range(NUM_JOBS)]
    for job in jobs:
        stores[0].create(job, INPUT)

    def claim_all(store: PostgresJobStore) -> list[Claim]:
        claims = []
        while (claim := store.claim()) is not None:
            claims.append(claim)
        return claims

    with ThreadPoolExecutor(NUM_SERVERS) as pool:
        taken = list(pool.map(claim_all, stores))
    claimed = [claim.job_id for claims in taken for claim in claims]

    assert sorted(claimed) == sorted(job.id for job in jobs)  # none twice, none left
    assert stores[0].count_queued() == 0
    for store in stores:
        store.close()


def test_the_store_connects_again_after_its_connection_drops(database: str, tmp_path: Path) -> None:
    import psycopg

    from omni.jobs.postgres import PostgresJobStore

    store = PostgresJobStore(database, LocalArtifacts(tmp_path))
    job = make_job()
    store.create(job, INPUT)
    with psycopg.connect(database, autocommit=True) as admin:  # as a database restart would
        admin.execute(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
            "WHERE datname = current_database() AND pid <> pg_backend_pid()"
        )
        # pg_terminate_backend only signals: wait until the store's backend is really gone
        pid = store._db.info.backend_pid
        deadline = time.monotonic() + 30
        while admin.execute("SELECT 1 FROM pg_stat_activity WHERE pid = %s", (pid,)).fetchone():
            assert time.monotonic() < deadline, "the store's backend outlived its termination"
            time.sleep(0.01)

    with pytest.raises(psycopg.OperationalError):
        store.get(job.id)  # the statement in flight fails; the caller retries
    assert store.get(job.id) == job
    store.close()
