"""The benchmark harness runs end to end (speed figures themselves are not asserted)."""

import json
import os


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


def test_bench_table_shows_the_largest_batch_that_ran():
    """A GPU run with --batches 1 32 reported an empty batch-8 column, and training times of
    0.02 s/img as 0.02 / 0.00: the table now shows the batch that ran and three digits."""
    from napari_medspike.cli.bench import markdown

    timing = {"seconds": {"median": 0.0125, "min": 0.012, "max": 0.013}, "images_per_s": 2560.0}
    model = {"parameters": 1e6, "gflops": 1.0, "forward_fp32": {"batch1": timing, "batch32": timing},
             "train_fp32": {"seconds_per_image": 0.00217, "peak_mem_mb": 5137.0, "batch": 8}}
    table = markdown({"machine": {"device": "gpu", "processor": "x86_64", "cpus": 16, "threads": None, "torch": "2"},
                      "size": 256, "models": {"basicunet": model}})
    assert "fwd b32 ms | img/s (b32)" in table
    assert "| basicunet | 1.00 M | 1.0 | fp32 | 12 (12–13) | 12 (12–13) | 2560.0 | 0.00217 | 5137 | 8 |" in table


def test_bench_refuses_bad_options_in_one_line_before_timing(tmp_path, capsys, monkeypatch):
    """Each was a traceback (or, for --batches 0, a table of zeros), some after the timing."""
    import pytest

    from napari_medspike.cli import bench

    timed = []
    monkeypatch.setattr(bench, "run", lambda args: timed.append(args) or {})
    base = ["--models", "ann_twin", "--out", str(tmp_path / "out")]
    for option, value in (("--size", "8"), ("--repeats", "0"), ("--threads", "0"), ("--batches", "0")):
        with pytest.raises(SystemExit) as stop:
            bench.main([*base, option, value])
        assert stop.value.code == 2 and f"{option} must be at least" in capsys.readouterr().err
    if not bench.torch.cuda.is_available():
        with pytest.raises(SystemExit):
            bench.main([*base, "--device", "cuda"])
        assert "sees no CUDA GPU" in capsys.readouterr().err
    a_file = tmp_path / "a_file"
    a_file.write_text("not a folder")
    assert bench.main(["--models", "ann_twin", "--out", str(a_file)]) == 2
    assert "it is a file, not a folder" in capsys.readouterr().err
    assert not timed


def test_a_fresh_processs_peak_memory_is_measured_without_proc(tmp_path, monkeypatch):
    """macOS has no /proc (Windows neither): the benchmark's memory column fell over there."""
    from napari_medspike.cli.bench import _fresh_process

    (tmp_path / "sitecustomize.py").write_text(
        "import builtins\n_open = builtins.open\n"
        "def no_proc(file, *args, **kwargs):\n"
        "    if str(file).startswith('/proc'):\n"
        "        raise FileNotFoundError(2, 'No such file or directory', file)\n"
        "    return _open(file, *args, **kwargs)\n"
        "builtins.open = no_proc\n", encoding="utf-8")
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join([str(tmp_path), os.environ.get("PYTHONPATH", "")]))
    peak = _fresh_process("import numpy as np\nheld = np.ones(40 * 2**20 // 8)\nout = {}")["peak_mb"]
    assert peak > 40  # (the fallback's figure may include the parent's peak: not bounded above here)
