"""`python -m omni.serve`: the OpenAI-compatible server, configured by its flags (omni.flags)."""

from __future__ import annotations

import importlib.util
from collections.abc import Sequence
from dataclasses import fields
from typing import Any

from omni.config import EngineConfig
from omni.flags import build_parser
from omni.http.config import ServerConfig


def parse_config(argv: Sequence[str] | None = None) -> ServerConfig:
    parser = build_parser()
    args = vars(parser.parse_args(argv))
    args["lora_modules"] = tuple(args["lora_modules"])
    args["storage_path"] = args["storage_path"].expanduser()
    if args["frame_interpolation_dir"] is not None:
        args["frame_interpolation_dir"] = args["frame_interpolation_dir"].expanduser()
    try:
        engine = EngineConfig(**fields_of(EngineConfig, args))
        config = ServerConfig(engine=engine, **fields_of(ServerConfig, args))
    except ValueError as exc:
        parser.error(str(exc))
    if config.uses_replicas and importlib.util.find_spec("ray") is None:
        parser.error(
            "--data-parallel-size and --ray-address run replicas on Ray, which is not installed: "
            'pip install -e ".[cluster]"'
        )
    return config


def fields_of(config_class: type, args: dict[str, Any]) -> dict[str, Any]:
    """The parsed flags that are fields of `config_class` (a flag's dest is its field's name)."""
    names = {f.name for f in fields(config_class)}
    return {name: value for name, value in args.items() if name in names}


def main(argv: Sequence[str] | None = None) -> None:
    config = parse_config(argv)
    from omni.http.server import run

    run(config)


if __name__ == "__main__":
    main()
