"""Rotary tables made once per token layout: the same values, without rebuilding them."""

from __future__ import annotations

import torch
from diffusers.models.transformers.transformer_flux import FluxPosEmbed

from omni.models.rotary import RotaryTables
from tests.models.test_mixed_shapes import FLUX_SIZES, forward, prepared


class Positions(torch.nn.Module):
    """A stand-in pos_embed: (ids, 2 * ids) as float32, counting its calls."""

    def __init__(self) -> None:
        super().__init__()
        self.calls = 0

    def forward(self, ids: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        self.calls += 1
        return ids.float(), 2 * ids.float()


def ids(length: int) -> torch.Tensor:
    return torch.arange(length * 3).reshape(length, 3)


def test_a_layout_is_computed_once_and_the_least_recently_used_goes_first():
    positions = Positions()
    table_bytes = 2 * 10 * 3 * 4
    tables = RotaryTables(positions, max_bytes=2 * table_bytes)
    first = tables.get("a", lambda: ids(10))
    assert tables.get("a", lambda: ids(10)) is first and positions.calls == 1
    tables.get("b", lambda: ids(10))
    tables.get("a", lambda: ids(10))  # now b is the least recently used
    tables.get("c", lambda: ids(10))
    assert positions.calls == 3 and tables.num_bytes == 2 * table_bytes
    tables.get("a", lambda: ids(10))
    assert positions.calls == 3
    tables.get("b", lambda: ids(10))
    assert positions.calls == 4  # b was evicted
    big = tables.get("big", lambda: ids(100))  # larger than the bound: made, never kept
    assert torch.equal(big[0], ids(100).float()) and tables.num_bytes <= 2 * table_bytes


def test_answering_stands_in_for_the_module_only_inside_the_block():
    positions = Positions()
    tables = RotaryTables(positions)
    table = tables.get("a", lambda: ids(4))
    with tables.answering(table):
        assert positions(ids(9)) is table
    assert positions.calls == 1
    assert positions(ids(4))[0].shape == (4, 3) and positions.calls == 2


def test_flux_forwards_build_no_table_once_their_layouts_are_known(flux, monkeypatch):
    """Mixed sizes (padded, a table per size) and one size alone (the transformer's own table):
    the second forward of the same layouts calls FluxPosEmbed not once, and predicts the same
    as forwards that rebuild every table."""
    built = []
    original = FluxPosEmbed.forward
    monkeypatch.setattr(
        FluxPosEmbed, "forward", lambda self, ids: built.append(ids.shape) or original(self, ids)
    )
    rows = flux.rows(prepared(flux, FLUX_SIZES))
    monkeypatch.setattr(flux, "rotary", RotaryTables(flux.pipe.transformer.pos_embed))
    fresh = forward(flux, rows) + forward(flux, rows[:1])
    assert 0 < len(built) <= len({row.request.latents.shape for row in rows}) + 1
    built.clear()
    again = forward(flux, rows) + forward(flux, rows[:1])
    assert built == []
    for before, after in zip(fresh, again, strict=True):
        assert torch.equal(before, after)
