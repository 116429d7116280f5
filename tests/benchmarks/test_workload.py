from __future__ import annotations

from collections import Counter
from dataclasses import replace

import pytest

from benchmarks.workload import (
    WORKLOAD_DIR,
    class_counts,
    load_workload,
    parse_workload,
    sample_requests,
)


def two_class_workload(**extra):
    return parse_workload(
        {
            "name": "two",
            "classes": [
                {"name": "a", "weight": 3, "width": 512, "height": 512, "num_inference_steps": 20},
                {"name": "b", "weight": 1, "width": 1024, "height": 768,
                 "num_inference_steps": 30, **extra},
            ],
        }
    )  # fmt: skip


@pytest.mark.parametrize("path", sorted(WORKLOAD_DIR.glob("*.json")), ids=lambda p: p.stem)
def test_every_shipped_workload_parses(path):
    workload = load_workload(str(path))
    assert workload.classes and workload.name


def test_shipped_workloads_load_by_name():
    assert load_workload("mixed-resolution").name == "mixed-resolution"
    with pytest.raises(FileNotFoundError, match="shipped"):
        load_workload("no-such-workload")


def test_mixed_resolution_mix_splits_twenty_requests_as_fifteen_25_45_15_percent():
    counts = class_counts(load_workload("mixed-resolution"), 20)
    assert sorted(counts.values()) == [3, 3, 5, 9]
    assert sum(counts.values()) == 20


def test_class_counts_always_add_up_to_the_requested_count():
    workload = load_workload("mixed-steps")
    for count in range(1, 40):
        assert sum(class_counts(workload, count).values()) == count


def test_tiny_scale_maps_flux_sizes_to_multiples_of_16_and_fewer_steps():
    workload = load_workload("mixed-resolution").scaled(1 / 16, 0.2)
    sides = sorted(c.width for c in workload.classes)
    assert sides == [32, 48, 64, 96]
    assert sorted(c.num_inference_steps for c in workload.classes) == [4, 4, 5, 7]


def test_scaling_never_goes_below_one_step_or_one_size_multiple():
    scaled = two_class_workload().scaled(0.001, 0.001)
    assert all(c.width == 16 and c.num_inference_steps == 1 for c in scaled.classes)


def test_unknown_class_fields_are_rejected():
    with pytest.raises(ValueError, match="unknown class fields"):
        two_class_workload(num_step=4)


def test_cfg_needs_both_a_negative_prompt_and_a_scale_above_one():
    assert two_class_workload(negative_prompt="x", true_cfg_scale=4.0).classes[1].uses_cfg
    assert not two_class_workload(negative_prompt="x").classes[1].uses_cfg


def test_sampled_requests_follow_the_weights_and_repeat_under_the_same_seed():
    workload = two_class_workload()
    specs = sample_requests(workload, 40, seed=7)
    assert Counter(s.request_class.name for s in specs) == {"a": 30, "b": 10}
    assert specs == sample_requests(workload, 40, seed=7)
    assert specs != sample_requests(workload, 40, seed=8)


def test_unique_prompts_differ_for_every_request_and_keep_classes_and_seeds():
    workload = load_workload("mixed-steps")
    plain = sample_requests(workload, 64, seed=3)
    unique = sample_requests(replace(workload, unique_prompts=True), 64, seed=3)
    assert len({s.prompt for s in plain}) <= 8
    assert len({s.prompt for s in unique}) == 64
    assert [(s.request_class, s.seed) for s in unique] == [(s.request_class, s.seed) for s in plain]
