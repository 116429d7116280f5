from __future__ import annotations

import json

from benchmarks.compare import ratios, shared_standalone
from benchmarks.metrics import RequestRecord, summarize_level
from benchmarks.report import RunResult, plot, run_from_dict, table, to_json
from benchmarks.serve import batch_counts_between


def run_result(label: str, latency: float, mode: str = "concurrency") -> RunResult:
    """One level of 4 one-image requests, each taking `latency`, back to back."""
    records = [
        RequestRecord("a", 1, start=i * latency, end=(i + 1) * latency, ok=True) for i in range(4)
    ]
    records[0].queue_time_s = 0.01
    level = summarize_level(mode, 8, records, {"a": latency}, [2.0])
    return RunResult(label, "http://127.0.0.1:1", "w", {"a": "a"}, {"a": latency}, [level])


def test_results_survive_a_json_round_trip():
    original = [run_result("omni", 0.5), run_result("baseline", 1.0)]
    restored = [run_from_dict(d) for d in json.loads(to_json(original))]
    assert restored == original


def test_ratios_put_omni_over_each_baseline():
    text = ratios(run_result("omni", 0.5), [run_result("baseline", 1.0)])
    assert "omni / baseline:" in text
    assert "throughput 2.00x" in text
    assert "latency p50 0.50x, p99 0.50x" in text


def test_table_has_a_row_per_server_and_level():
    lines = table([run_result("omni", 0.5), run_result("baseline", 1.0)]).splitlines()
    assert [line.split()[0] for line in lines[2:]] == ["omni", "baseline"]


def test_plot_writes_one_png_per_load_mode(tmp_path):
    runs = [run_result("omni", 0.5), run_result("omni", 0.5, mode="rate")]
    written = plot(runs, tmp_path / "x", "title")
    assert sorted(p.name for p in written) == ["x-concurrency.png", "x-rate.png"]
    assert all(p.read_bytes().startswith(b"\x89PNG") for p in written)


def test_compare_scores_every_server_against_the_fastest_standalone_latency():
    fast, slow = run_result("omni", 0.5), run_result("baseline", 1.0)
    reference = shared_standalone([fast, slow])
    assert reference == {"a": 0.5}
    slow.levels[0].rescore_slo(reference, [1.5, 2.0])
    assert slow.levels[0].slo_attainment == {"k=1.5": 0.0, "k=2": 1.0}


def test_batch_sizes_of_a_level_are_the_difference_between_two_stats_answers():
    before = {"batch_size_counts": {"1": 5, "8": 2}}
    after = {"batch_size_counts": {"1": 5, "8": 6, "3": 1}}
    level = run_result("omni", 0.5).levels[0]
    level.batch_size_counts = batch_counts_between(before, after)
    assert level.batch_size_counts == {"3": 1, "8": 4}
    assert level.mean_batch == 7.0
    assert batch_counts_between(None, after) == {}
