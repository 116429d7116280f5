"""What the server is: GET /health, GET /v1/models and GET /v1/stats."""

from __future__ import annotations

import msgspec
from aiohttp import web

from omni.engine.engine import EngineState
from omni.errors import EngineNotReadyError
from omni.http.front_ends import front_end_info
from omni.http.model_card import model_card
from omni.http.schemas import Health, ModelList, json_response
from omni.http.state import ENGINE, SERVER_CONFIG, STARTED_AT


async def health(request: web.Request) -> web.Response:
    """200 while the engine lives; 503 (the error body) while it loads or once it has died."""
    engine = request.app[ENGINE]
    if engine.state == EngineState.LOADING:
        raise EngineNotReadyError(f"{engine.config.model} is still loading")
    if engine.state == EngineState.DEAD:
        raise EngineNotReadyError(engine.error or "the engine died")
    return json_response(Health(status="ok", model=engine.config.name))


async def list_models(request: web.Request) -> web.Response:
    card = model_card(request.app[ENGINE], request.app[STARTED_AT])
    return json_response(ModelList([card]))


async def engine_stats(request: web.Request) -> web.Response:
    """The engine's counters, e.g. `batch_size_counts` shows how requests shared forwards.
    With replicas: their totals, and each replica's own under `replicas`. `front_end` is the
    process that answered (one of --api-server-count)."""
    engine = request.app[ENGINE]
    answer = {"state": engine.state.value, **msgspec.to_builtins(engine.stats())}
    answer["front_end"] = front_end_info(request.app[SERVER_CONFIG])
    replicas = engine.replicas()
    if replicas:
        # Their histograms are for /metrics: counts per bucket say little in JSON.
        answer["replicas"] = [
            {key: value for key, value in replica.items() if key != "histograms"}
            for replica in msgspec.to_builtins(replicas)
        ]
    return json_response(answer)
