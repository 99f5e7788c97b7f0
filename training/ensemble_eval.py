"""Per-image Dice of several checkpoints predicting together (their probabilities averaged), each
at its own input size or at ``@SIZE``, on the validation images of the first one's split:

    python training/ensemble_eval.py default runs/qk256/best.safetensors --data ../shared/data/kvasir-seg \
        --compare BASE.json
    python training/ensemble_eval.py runs/qk256/best.safetensors@128 --data ../shared/data/kvasir-seg

Mirror TTA and fp32 for each, threshold 0.5, at the original resolution, as ``medspike-evaluate``.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from napari_medspike.cli.evaluate import describe_comparison, read_evaluation, select_subset
from napari_medspike.data.dataset import find_pairs, load_pair
from napari_medspike.engine.checkpoint import load_model
from napari_medspike.engine.metrics import binary_metrics, paired_difference, summarise
from napari_medspike.inference.predictor import predict


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("models", nargs="+", help="checkpoint or CHECKPOINT@SIZE")
    parser.add_argument("--data", nargs="+", required=True)
    parser.add_argument("--compare", type=Path, default=None, help="a medspike-evaluate --json of the same images")
    args = parser.parse_args()
    members = []
    for spec in args.models:
        name, _, size = spec.partition("@")
        members.append((load_model(name), int(size) if size else None))
    pairs, _ = find_pairs(args.data)
    pairs = select_subset(pairs, "val", members[0][0], None)
    rows = []
    for pair in pairs:
        image, mask = load_pair(pair, as_float=False)
        prob = sum(predict(m, image, flips=True, precision="fp32", tile_size=s) for m, s in members) / len(members)
        rows.append({"key": pair.key, **binary_metrics(prob >= 0.5, mask)})
    summary = summarise(rows)
    low, high = summary["ci95_dice"]
    print(f"{' + '.join(args.models)}: Dice {summary['mean_dice']:.4f} (95% CI {low:.3f}-{high:.3f}), "
          f"IoU {summary['mean_iou']:.4f} on {summary['count']} images")
    if args.compare:
        baseline = read_evaluation(args.compare)
        comparison = {"baseline": str(args.compare),
                      **{m: paired_difference(rows, baseline, m) for m in ("dice", "iou")}}
        print("\n".join(describe_comparison(comparison)))


if __name__ == "__main__":
    main()
