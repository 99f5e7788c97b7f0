"""The benchmark harness runs end to end (speed figures themselves are not asserted)."""

import json


def test_bench_writes_json_and_markdown(tmp_path):
    from napari_medspike.cli.bench import main

    assert main(["--models", "medqkformer", "ann_twin", "--size", "32", "--batches", "1", "--repeats", "2",
                 "--train-repeats", "1", "--train-batch", "2", "--out", str(tmp_path)]) == 0
    results = json.loads((tmp_path / "bench.json").read_text())
    qk = results["models"]["medqkformer"]
    assert qk["parameters"] == 7_429_345
    forward = qk["forward_fp32"]["batch1"]
    t = forward["seconds"]
    assert 0 < t["min"] <= t["median"] <= t["max"] and forward["images_per_s"] == 1 / t["median"]
    train = qk["train_fp32"]
    assert 0 < train["seconds"]["min"] <= train["seconds"]["median"] <= train["seconds"]["max"]
    assert train["seconds_per_image"] == train["seconds"]["median"] / 2  # batch 2
    assert 100 < train["peak_mem_mb"] < 20_000  # a real process's peak, in MB
    table = (tmp_path / "bench.md").read_text()
    assert "| medqkformer | 7.43 M |" in table and "| ann_twin |" in table
