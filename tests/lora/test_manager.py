"""The device's adapter LRU (--max-loras): pinned while a request holds them, evicted after; and the
LoRA flags of `python -m omni.serve`."""

from __future__ import annotations

import threading
from pathlib import Path

import pytest
from diffusers import FluxPipeline

from omni.config import EngineConfig
from omni.errors import EngineOverloadedError, InvalidRequestError
from omni.lora import manager as manager_module
from omni.lora.manager import LoraManager
from omni.lora.sources import LoraSources
from omni.lora.spec import LoraSpec, lora_specs
from omni.lora.weights import read_lora
from omni.serve import parse_config
from tests.engine.helpers import generate_all, image_params
from tests.lora.helpers import make_lora


@pytest.fixture(scope="module")
def root(tiny_flux_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("lru")
    for seed, name in enumerate("abc"):
        make_lora(FluxPipeline, tiny_flux_dir, root / name, seed=seed)
    return root


def manager(model_dir: Path, root: Path, max_loras: int) -> LoraManager:
    transformer = FluxPipeline.from_pretrained(model_dir).transformer
    return LoraManager(LoraSources({}, root), FluxPipeline, transformer, max_loras, 16)


def test_pinned_adapters_stay_and_the_least_recently_used_free_one_goes(
    tiny_flux_dir: Path, root: Path
) -> None:
    loras = manager(tiny_flux_dir, root, max_loras=2)
    a = loras.acquire([LoraSpec(local_path="a")])
    b = loras.acquire([LoraSpec(local_path="b")])
    with pytest.raises(EngineOverloadedError, match="all 2 LoRA slots"):
        loras.acquire([LoraSpec(local_path="c")])  # a and b are both held

    loras.release(a)
    c = loras.acquire([LoraSpec(local_path="c")])  # evicts a, the free one
    again = loras.acquire([LoraSpec(local_path="b")])
    assert loras.num_loaded == 2
    assert again[0][0] is b[0][0]  # b stayed loaded: no second read
    loras.release(b)
    loras.release(again)
    loras.release(c)
    with pytest.raises(InvalidRequestError, match="--max-loras 2"):
        loras.check([LoraSpec(local_path=name) for name in "abc"])


def test_the_lora_field_reads_objects_lists_and_json_text() -> None:
    one = lora_specs('{"name": "style", "scale": 0.5}')
    assert one == (LoraSpec(name="style", scale=0.5),)
    assert lora_specs([{"local_path": "x"}, {"name": "y"}]) == (
        LoraSpec(local_path="x"),
        LoraSpec(name="y"),
    )
    assert lora_specs("{}") is None and lora_specs([]) is None
    with pytest.raises(InvalidRequestError, match="lora must be a JSON object"):
        lora_specs('{"name": "style", "scale": 1000}')  # past the scale bound


def test_the_serve_flags_set_the_lora_config(root: Path) -> None:
    modules = ["--lora-modules", f"a={root / 'a'}", f"b={root / 'b'}"]
    config = parse_config(
        [*modules, "--lora-dir", str(root), "--max-loras", "3", "--max-lora-rank", "32"]
    ).engine
    assert config.lora_modules == (("a", str(root / "a")), ("b", str(root / "b")))
    assert (config.lora_dir, config.max_loras, config.max_lora_rank) == (str(root), 3, 32)
    for bad in (["--lora-modules", "nameless"], ["--lora-dir", str(root / "none")]):
        with pytest.raises(SystemExit):
            parse_config(bad)


def test_lora_and_cfg_parallel_are_refused_together(root: Path) -> None:
    with pytest.raises(ValueError, match="cfg-parallel"):
        EngineConfig(lora_dir=str(root), cfg_parallel_size=2)


def test_adapters_are_read_off_the_engine_thread(
    tiny_flux_dir: Path, root: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    threads = []

    def recording(*args, **kwargs):
        threads.append(threading.current_thread().name)
        return read_lora(*args, **kwargs)

    monkeypatch.setattr(manager_module, "read_lora", recording)
    params = image_params(width=32, height=32, num_inference_steps=2, lora=(LoraSpec("a", "a"),))
    (finished,), _ = generate_all(tiny_flux_dir, [params], lora_dir=str(root))

    assert finished.output is not None and threads
    assert "omni-engine" not in threads
