"""Thousands of generated requests to every route: never a 5xx, every error in the envelope.

The server is the shared `python -m omni.serve` process on the tiny FLUX model: video routes
parse and validate everything, then refuse the image model (400), so no video job runs.
"""

from __future__ import annotations

import http.client
import json
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor

import pytest
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st

from tests.http.fuzz_requests import requests_for_every_route
from tests.http.raw import exchange
from tests.http.test_errors import assert_still_serving

NUM_REQUESTS = 5000
BATCH = 8  # requests sent at once: the server answers one batch while the next is generated
ANSWER_TIMEOUT_S = 15.0  # a server that stops answering fails the test
statuses: Counter[int] = Counter()

fuzz_settings = settings(
    max_examples=NUM_REQUESTS // BATCH,
    deadline=None,
    database=None,
    derandomize=True,  # the same requests every run: a failure reproduces
    phases=[Phase.generate, Phase.shrink],
    suppress_health_check=list(HealthCheck),
)


def check_answer(raw: bytes, url: str) -> None:
    try:
        response = exchange(url, raw, timeout=ANSWER_TIMEOUT_S)
    except http.client.RemoteDisconnected:
        pytest.fail(f"the server closed the connection without an answer to {raw[:300]!r}")
    statuses[response.status] += 1
    assert response.status < 500, (raw[:500], response.status, response.body[:500])
    if response.status < 400:
        return
    assert response.headers["Content-Type"].startswith("application/json"), raw[:500]
    if raw.startswith(b"HEAD "):  # an answer to HEAD has no body
        return
    body = json.loads(response.body)
    assert set(body) == {"error", "detail"}, (raw[:500], body)
    assert body["error"]["message"] and body["error"]["type"], (raw[:500], body)


@pytest.mark.slow
def test_no_generated_request_gets_a_5xx_or_an_error_without_the_envelope(url: str) -> None:
    started = time.monotonic()

    with ThreadPoolExecutor(BATCH) as senders:

        @fuzz_settings
        @given(batch=st.lists(requests_for_every_route, min_size=BATCH, max_size=BATCH))
        def answers_well(batch: list[bytes]) -> None:
            for answered in [senders.submit(check_answer, raw, url) for raw in batch]:
                answered.result()

        answers_well()

    assert sum(statuses.values()) >= NUM_REQUESTS, statuses
    assert_still_serving(url)
    print(f"{sum(statuses.values())} requests in {time.monotonic() - started:.0f} s: {statuses}")
