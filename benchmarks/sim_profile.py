"""A device profile for the simulator: what each piece of work costs, read from a JSON file.

    {"format": "omni-sim-profile-v1", "name": ..., "device": ..., "model": ...,
     "tokens": {"px_per_token": 16, "text_tokens": 512, "shared_forward": true},
     "default_size": [1024, 1024],
     "forward": {"model": "interpolate" | "linear", "points": [[rows, tokens_per_row, ms], ...],
                 "mixed_size_factor": 1.0},
     "step_overhead_ms": 0.1,
     "encode": {"fixed_ms": .., "per_request_ms": .., "per_text_call_ms": ..,
                "per_prompt_ms": ..},
     "decode": {"fixed_ms": .., "per_output_ms": .., "per_megapixel_ms": ..},
     "response": {"fixed_ms": .., "per_megapixel_ms": ..},
     "pipeline": {"fixed_ms": .., "per_step_ms": ..},
     "capacity": 1.0 | null, "response_shares_capacity": true, "slowdown": 1.0,
     "sources": [...], "notes": "..."}

A forward's cost is a function of its rows and its longest row (the scheduler pads every row to
it). `forward_ms` either interpolates piecewise-linearly between measured points or evaluates a
least-squares fit ms = a + c*rows + b*rows*T + d*rows*T^2 (T: tokens per row); the exporter picks
the one with the lower leave-one-out error. `capacity` is how much work the server's concurrent
activities (forward, encode, decode, and responses when `response_shares_capacity`) get done
together per unit of time: null when each runs at full speed beside the others, 1 when they take
turns (one interpreter lock on a CPU; one GPU's SMs shared by its streams).
`slowdown` stretches every cost: what the same work takes inside a loaded server next to its
HTTP event loop and load generator, against the same work timed alone (measured, see
benchmarks/sim_measure.py).
"""

from __future__ import annotations

import bisect
import itertools
import json
from collections.abc import Hashable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from benchmarks.workload import RequestClass

FORMAT = "omni-sim-profile-v1"
PROFILE_DIR = Path(__file__).parent / "profiles"
LINEAR_TERMS = ("fixed", "rows", "rows_tokens", "rows_tokens2")
COST_SECTIONS = {
    "encode": ("fixed_ms", "per_request_ms", "per_text_call_ms", "per_prompt_ms"),
    "decode": ("fixed_ms", "per_output_ms", "per_megapixel_ms"),
    "response": ("fixed_ms", "per_megapixel_ms"),
    "pipeline": ("fixed_ms", "per_step_ms"),
}


class ProfileError(ValueError):
    """A profile file that the simulator cannot use."""


def linear_features(rows: float, tokens: float) -> list[float]:
    return [1.0, rows, rows * tokens, rows * tokens * tokens]


def fit_linear(points: Sequence[tuple[int, int, float]]) -> list[float]:
    """Non-negative least squares on LINEAR_TERMS, by trying every subset of the terms."""
    features = np.array([linear_features(r, t) for r, t, _ in points])
    target = np.array([ms for _, _, ms in points])
    weights = 1 / np.maximum(target, 1e-9)  # relative error: small forwards count as much
    best: tuple[float, list[float]] | None = None
    for size in range(1, len(LINEAR_TERMS) + 1):
        for subset in itertools.combinations(range(len(LINEAR_TERMS)), size):
            if len(subset) > len(points):
                continue
            columns = features[:, subset] * weights[:, None]
            solution = np.linalg.lstsq(columns, target * weights, rcond=None)[0]
            if (solution < 0).any():
                continue
            coefficients = [0.0] * len(LINEAR_TERMS)
            for index, value in zip(subset, solution, strict=True):
                coefficients[index] = float(value)
            error = float(np.sum((columns @ solution - target * weights) ** 2))
            if best is None or error < best[0] - 1e-12:
                best = (error, coefficients)
    if best is None:
        raise ProfileError("no non-negative linear fit of the forward points")
    return best[1]


@dataclass(frozen=True)
class ForwardModel:
    points: tuple[tuple[int, int, float], ...]  # (rows, tokens per row, ms)
    kind: str = "interpolate"
    mixed_size_factor: float = 1.0  # a forward whose rows differ in size (padding, masks)

    def __post_init__(self) -> None:
        if self.kind not in ("interpolate", "linear"):
            raise ProfileError(f"forward model must be interpolate or linear, got {self.kind}")
        object.__setattr__(self, "_linear", fit_linear(self.points))
        by_tokens: dict[int, list[tuple[int, float]]] = {}
        for rows, tokens, ms in sorted(self.points):
            by_tokens.setdefault(tokens, []).append((rows, ms))
        object.__setattr__(self, "_curves", by_tokens)
        object.__setattr__(self, "_token_grid", sorted(by_tokens))
        object.__setattr__(self, "_cache", {})

    def linear_ms(self, rows: float, tokens: float) -> float:
        features = linear_features(rows, tokens)
        return sum(c * f for c, f in zip(self._linear, features, strict=True))

    def ms(self, rows: int, tokens: int, mixed: bool = False) -> float:
        key = (rows, tokens)
        value = self._cache.get(key)
        if value is None:
            value = self._linear_or_interpolated(rows, tokens)
            self._cache[key] = value
        return value * (self.mixed_size_factor if mixed else 1.0)

    def _linear_or_interpolated(self, rows: int, tokens: int) -> float:
        if self.kind == "linear":
            return self.linear_ms(rows, tokens)
        grid = self._token_grid
        index = bisect.bisect_left(grid, tokens)
        if index < len(grid) and grid[index] == tokens:
            return self._along_rows(grid[index], rows)
        if index == 0 or index == len(grid):  # outside the grid: scale the nearest curve
            nearest = grid[0] if index == 0 else grid[-1]
            scale = self.linear_ms(rows, tokens) / max(self.linear_ms(rows, nearest), 1e-9)
            return self._along_rows(nearest, rows) * scale
        low, high = grid[index - 1], grid[index]
        share = (tokens - low) / (high - low)
        return (1 - share) * self._along_rows(low, rows) + share * self._along_rows(high, rows)

    def _along_rows(self, tokens: int, rows: int) -> float:
        """Piecewise-linear in rows; past the last point, the last segment's slope goes on."""
        curve = self._curves[tokens]
        if len(curve) == 1:
            return curve[0][1] * self.linear_ms(rows, tokens) / self.linear_ms(curve[0][0], tokens)
        for (r0, m0), (r1, m1) in itertools.pairwise(curve):
            if rows <= r1:
                return m0 + (m1 - m0) * (rows - r0) / (r1 - r0)
        (r0, m0), (r1, m1) = curve[-2], curve[-1]
        return m1 + (m1 - m0) * (rows - r1) / (r1 - r0)


def leave_one_out_error(points: Sequence[tuple[int, int, float]], kind: str) -> float:
    """Mean relative error predicting each point from the others (points at grid edges too)."""
    errors = []
    for index, (rows, tokens, ms) in enumerate(points):
        rest = tuple(p for i, p in enumerate(points) if i != index)
        try:
            predicted = ForwardModel(rest, kind).ms(rows, tokens)
        except (ProfileError, KeyError, ZeroDivisionError):
            continue
        errors.append(abs(predicted - ms) / ms)
    return float(np.mean(errors)) if errors else float("inf")


@dataclass(frozen=True, slots=True)
class Shape:
    """One image of a request class, as the scheduler and the cost model see it."""

    step_keys: tuple[Hashable, ...]
    num_rows: int
    tokens_per_row: int
    output_key: Hashable  # same key: decoded in one batch
    megapixels: float


@dataclass(frozen=True, slots=True)
class Profile:
    name: str
    device: str
    model: str
    px_per_token: int
    text_tokens: int
    shared_forward: bool
    default_size: tuple[int, int]
    forward: ForwardModel
    step_overhead_ms: float
    encode: dict[str, float]
    decode: dict[str, float]
    response: dict[str, float]
    pipeline: dict[str, float]
    capacity: float | None
    response_shares_capacity: bool
    slowdown: float
    raw: dict

    def tokens_per_row(self, width: int, height: int, frames: int | None = None) -> int:
        return (width // self.px_per_token) * (height // self.px_per_token) * (
            frames or 1
        ) + self.text_tokens

    def shape(self, request_class: RequestClass) -> Shape:
        c = request_class
        size = (c.width, c.height, c.num_frames)
        key = ("denoiser",) if self.shared_forward else ("denoiser", *size)
        return Shape(
            step_keys=(key,) * c.num_inference_steps,
            num_rows=2 if c.uses_cfg else 1,
            tokens_per_row=self.tokens_per_row(c.width, c.height, c.num_frames),
            output_key=(key, *size),
            megapixels=c.width * c.height * (c.num_frames or 1) / 1e6,
        )

    def encode_ms(self, num_requests: int, num_new_prompts: int) -> float:
        """One encode call; only prompts not in the text cache run the text encoders."""
        e = self.encode
        text = e["per_text_call_ms"] + e["per_prompt_ms"] * num_new_prompts
        return e["fixed_ms"] + e["per_request_ms"] * num_requests + (text if num_new_prompts else 0)

    def decode_ms(self, num_outputs: int, megapixels: float) -> float:
        d = self.decode
        per_output = d["per_output_ms"] + d["per_megapixel_ms"] * megapixels
        return d["fixed_ms"] + num_outputs * per_output

    def response_ms(self, megapixels: float) -> float:
        return self.response["fixed_ms"] + self.response["per_megapixel_ms"] * megapixels


def number(data: dict, key: str, where: str, allow_none: bool = False) -> float | None:
    value = data.get(key)
    if value is None and allow_none and key in data:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float)) or value < 0:
        raise ProfileError(f"{where}.{key} must be a non-negative number, got {value!r}")
    return float(value)


def parse_profile(data: object) -> Profile:
    if not isinstance(data, dict):
        raise ProfileError("a profile is a JSON object")
    if data.get("format") != FORMAT:
        raise ProfileError(f"format must be {FORMAT!r}, got {data.get('format')!r}")
    for key in ("name", "tokens", "forward", "default_size", *COST_SECTIONS):
        if key not in data:
            raise ProfileError(f"the profile has no {key!r}")
    sections = {}
    for section, keys in COST_SECTIONS.items():
        if not isinstance(data[section], dict):
            raise ProfileError(f"{section} must be an object")
        sections[section] = {k: number(data[section], k, section) for k in keys}
    tokens, forward = data["tokens"], data["forward"]
    if not isinstance(tokens, dict) or not isinstance(forward, dict):
        raise ProfileError("tokens and forward must be objects")
    points = forward.get("points")
    if not isinstance(points, list) or not points:
        raise ProfileError("forward.points must be a non-empty list of [rows, tokens, ms]")
    parsed = []
    for point in points:
        if not (isinstance(point, list) and len(point) == 3) or not all(
            isinstance(v, (int, float)) and not isinstance(v, bool) and v > 0 for v in point
        ):
            raise ProfileError(f"forward point {point!r} is not [rows, tokens, ms] > 0")
        parsed.append((int(point[0]), int(point[1]), float(point[2])))
    size = data["default_size"]
    if not (isinstance(size, list) and len(size) == 2 and all(isinstance(v, int) for v in size)):
        raise ProfileError("default_size must be [width, height]")
    mixed = number(forward, "mixed_size_factor", "forward") if "mixed_size_factor" in forward else 1
    return Profile(
        name=str(data["name"]),
        device=str(data.get("device", "")),
        model=str(data.get("model", "")),
        px_per_token=int(number(tokens, "px_per_token", "tokens") or 16),
        text_tokens=int(number(tokens, "text_tokens", "tokens")),
        shared_forward=bool(tokens.get("shared_forward", True)),
        default_size=(size[0], size[1]),
        forward=ForwardModel(tuple(parsed), str(forward.get("model", "interpolate")), mixed),
        step_overhead_ms=number(data, "step_overhead_ms", "profile")
        if "step_overhead_ms" in data
        else 0.0,
        capacity=number(data, "capacity", "profile", allow_none=True)
        if "capacity" in data
        else None,
        response_shares_capacity=bool(data.get("response_shares_capacity", True)),
        slowdown=number(data, "slowdown", "profile") if "slowdown" in data else 1.0,
        raw=data,
        **sections,
    )


def load_profile(name_or_path: str | Path) -> Profile:
    """A JSON path, or the name of one shipped in benchmarks/profiles/."""
    path = Path(name_or_path)
    if not path.is_file():
        path = PROFILE_DIR / f"{name_or_path}.json"
    if not path.is_file():
        raise FileNotFoundError(f"no profile {name_or_path!r}")
    try:
        data = json.loads(path.read_text())
    except json.JSONDecodeError as exc:
        raise ProfileError(f"{path}: not JSON: {exc}") from None
    return parse_profile(data)
