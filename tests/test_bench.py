"""The benchmark harness runs end to end (speed figures themselves are not asserted)."""

import json


def test_bench_writes_json_and_markdown(tmp_path):
    from napari_medspike.cli.bench import main

    assert main(["--models", "medqkformer", "ann_twin", "--size", "32", "--batches", "1", "--repeats", "2",
                 "--train-repeats", "1", "--train-batch", "2", "--out", str(tmp_path)]) == 0
    results = json.loads((tmp_path / "bench.json").read_text())
    qk = results["models"]["medqkformer"]
    assert qk["parameters"] == 7_429_345
    assert len(qk["forward_fp32"]["batch1"]["seconds"]) == 3 and qk["train_fp32"]["peak_mem_mb"] > 0
    table = (tmp_path / "bench.md").read_text()
    assert "| medqkformer | 7.43 M |" in table and "| ann_twin |" in table
