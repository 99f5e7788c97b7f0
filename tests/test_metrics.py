"""Metric edge cases of the evaluation protocol."""

import numpy as np
import pytest

from napari_medspike.engine.metrics import binary_metrics, mean_interval, paired_difference, summarise


def test_empty_prediction_on_empty_mask_scores_one():
    z = np.zeros((8, 8), bool)
    assert binary_metrics(z, z) == {"dice": 1.0, "iou": 1.0, "sensitivity": 1.0, "specificity": 1.0}


def test_missed_object_and_false_alarm():
    z, m = np.zeros((8, 8), bool), np.zeros((8, 8), bool)
    m[2:4, 2:4] = True
    missed = binary_metrics(z, m)
    assert missed["dice"] == 0 and missed["sensitivity"] == 0 and missed["specificity"] == 1
    alarm = binary_metrics(m, z)
    assert alarm["dice"] == 0 and alarm["specificity"] == pytest.approx(60 / 64)


def test_partial_overlap():
    p, m = np.zeros((4, 4), bool), np.zeros((4, 4), bool)
    p[0, :2] = True  # TP 1, FP 1
    m[0, 1:4] = True  # FN 2
    r = binary_metrics(p, m)
    assert r["dice"] == pytest.approx(2 / 5) and r["iou"] == pytest.approx(1 / 4)
    assert r["sensitivity"] == pytest.approx(1 / 3) and r["specificity"] == pytest.approx(12 / 13)


def test_summary_means_and_count():
    s = summarise([{"dice": 1.0, "iou": 1.0, "sensitivity": 1, "specificity": 1},
                   {"dice": 0.0, "iou": 0.0, "sensitivity": 0, "specificity": 1}])
    assert s["count"] == 2 and s["mean_dice"] == 0.5 and s["mean_specificity"] == 1.0
    assert s["ci95_specificity"] == [1.0, 1.0] and s["ci95_dice"][0] < 0.5 < s["ci95_dice"][1]


def test_bootstrap_interval_holds_the_mean_and_narrows_with_more_images():
    rng = np.random.default_rng(1)
    widths = []
    for n in (20, 80, 320):
        values = rng.beta(5, 2, n)
        low, high = mean_interval(values)
        assert low < values.mean() < high
        assert (low, high) == mean_interval(values)  # seeded: the same interval every time
        widths.append(high - low)
    assert widths[0] > 1.5 * widths[1] > 2.25 * widths[2]  # about 1/sqrt(n)
    # a coverage check: over 200 draws of 40 images, the 95 % interval holds the true mean
    # (5/7) in most of them (a broken interval, e.g. the sample mean twice, almost never)
    held = sum(lo < 5 / 7 < hi for lo, hi in (mean_interval(rng.beta(5, 2, 40), resamples=500) for _ in range(200)))
    assert 175 <= held <= 200
    assert mean_interval([0.7, 0.7]) == (0.7, 0.7)
    assert all(np.isnan(mean_interval([]))) and all(np.isnan(mean_interval([0.3])))  # one image: no interval
    with pytest.raises(ValueError, match="confidence level"):
        mean_interval([0.1, 0.2], level=95)


def test_paired_difference_matches_images_by_key():
    rng = np.random.default_rng(2)
    base = [{"key": f"k{i}", "dice": float(d)} for i, d in enumerate(rng.uniform(0.3, 0.9, 50))]
    better = [{**r, "dice": r["dice"] + 0.02 + 0.01 * rng.standard_normal()} for r in base][::-1]  # any order
    c = paired_difference(better, base)
    assert c["images"] == 50 and c["mean_difference"] == pytest.approx(0.02, abs=0.005)
    assert 0 < c["interval"][0] < 0.02 < c["interval"][1]  # clearly better, though the means' own
    assert c["better"] + c["worse"] == 50  # intervals (about +-0.05) overlap
    same = paired_difference(base, base)
    assert same["mean_difference"] == 0 and same["interval"] == [0.0, 0.0] and same["better"] == same["worse"] == 0
    assert paired_difference(base[:10], base[5:])["images"] == 5  # only the images both evaluated
    with pytest.raises(ValueError, match="share no image"):
        paired_difference(base[:5], base[5:])
    with pytest.raises(ValueError, match="unknown metric"):
        paired_difference(base, base, "accuracy")
    with pytest.raises(ValueError, match="no 'iou'"):
        paired_difference(base, base, "iou")


def test_gallery_never_shows_an_image_twice(tmp_path):
    import numpy as np

    from napari_medspike.cli.evaluate import write_gallery

    image, mask = np.zeros((8, 8, 3)), np.zeros((8, 8), bool)
    for n_rows in (1, 2, 3, 5, 9):
        rows = [{"key": f"k{i}", "dice": i / 10} for i in range(n_rows)]
        picks = write_gallery(rows, {r["key"]: (image, mask, mask) for r in rows}, tmp_path / f"g{n_rows}.png")
        keys = [key for _, key in picks]
        assert len(keys) == len(set(keys)) and (tmp_path / f"g{n_rows}.png").is_file()
        if n_rows >= 8:
            assert len(keys) == 8


def test_model_card_gives_the_validation_interval_where_one_was_measured(tmp_path):
    from napari_medspike.engine.reports import write_model_card

    figures = {"count": 88, "mean_dice": 0.7067, "mean_iou": 0.5924, "mean_sensitivity": 0.75,
               "mean_specificity": 0.96, "flips": True}
    for name, extra in (("with", {"ci95_dice": [0.652, 0.752], "ci95_iou": [0.539, 0.641]}), ("without", {})):
        meta = {"arch": "medqkformer", "config": {}, "metrics": {"original_resolution": {**figures, **extra}}}
        card = write_model_card(tmp_path / f"{name}.safetensors", meta).read_text()
        line = next(l for l in card.splitlines() if "original image resolution" in l)
        if extra:
            assert "Dice 0.7067 (95 % CI 0.652-0.752), IoU 0.5924 (95 % CI 0.539-0.641)" in line
        else:  # cards of models evaluated before intervals were reported
            assert "Dice 0.7067, IoU 0.5924" in line and "CI" not in line


def test_model_card_names_the_arithmetic_its_figures_were_measured_in(tmp_path):
    """The spiking model's figures were fp32; the documented command gives bf16 on CPUs with
    native bf16 (0.717 against the card's 0.720)."""
    from napari_medspike.engine.reports import write_model_card

    figures = {"count": 88, "mean_dice": 0.72, "mean_iou": 0.61, "mean_sensitivity": 0.78,
               "mean_specificity": 0.96, "flips": True}
    for precision in ("fp32", "bf16"):
        meta = {"arch": "medspikeformer", "config": {},
                "metrics": {"original_resolution": {**figures, "precision": precision}}}
        card = write_model_card(tmp_path / f"{precision}.safetensors", meta).read_text()
        line = next(l for l in card.splitlines() if "original image resolution" in l)
        assert f"`--precision {precision}`" in line, line


def test_model_card_says_what_its_energy_counts_and_what_its_firing_rate_is(tmp_path):
    """The card gave "mean firing rate 0.171" (a plain mean of the layers' rates; the network's
    spikes over its neurons: 0.099) and did not say that only synaptic operations were counted."""
    from napari_medspike.engine.reports import write_model_card

    energy = {"images": 8, "energy_mj": 1.76, "dense_ann_energy_mj": 5.9, "analog_gmacs": 0.01, "sops_g": 1.89,
              "mean_firing_rate": 0.078, "spikes_per_neuron_step": 0.39}
    meta = {"arch": "medspikeformer", "config": {}, "metrics": {"energy": energy}}
    card = write_model_card(tmp_path / "now.safetensors", meta).read_text()
    assert "synaptic operations only" in card and "neuron updates" in card
    assert "Firing rate 0.078: spikes over all neurons and timesteps" in card
    assert "5 virtual steps of its integer spikes: 0.390 spikes per neuron and timestep" in card
    binary = write_model_card(tmp_path / "binary.safetensors", {**meta, "metrics": {"energy": {
        **energy, "spikes_per_neuron_step": 0.078}}}).read_text()
    assert "Firing rate 0.078: spikes over all neurons and timesteps\n" in binary  # one spike a step: no more words
    old = {k: v for k, v in energy.items() if k != "spikes_per_neuron_step"}  # cards measured before
    earlier = write_model_card(tmp_path / "old.safetensors", {**meta, "metrics": {"energy": old}}).read_text()
    assert "Mean firing rate over neuron layers: 0.078" in earlier
    ann = {**energy, "mean_firing_rate": float("nan"), "spikes_per_neuron_step": float("nan")}  # no spikes
    card = write_model_card(tmp_path / "ann.safetensors", {**meta, "metrics": {"energy": ann}}).read_text()
    assert "Energy estimate" in card and "firing rate" not in card.lower() and "nan" not in card
