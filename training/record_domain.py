"""Record in a checkpoint what kind of images it was trained on (its metadata ``"domain"``), so
that fine-tuning it on another kind keeps it for its own (``napari_medspike.engine.routing``).

    python training/record_domain.py --model default --data data/kvasir-seg

Reads the training images (the data folders' pairs minus the validation keys the checkpoint
records), keeps the style vectors of up to 128 of them (a seeded choice) and rewrites the
checkpoint with the same tensors (float16 storage stays float16); its model card gets the line
that says so (the rest of the card is left as it is).
"""

from __future__ import annotations

import argparse
from pathlib import Path

from napari_medspike.data.dataset import find_pairs
from napari_medspike.engine.checkpoint import (load_model, model_card_path, read_metadata, resolve_checkpoint,
                                               save_checkpoint)
from napari_medspike.engine.reports import DOMAIN_LINE_START, dataset_name, domain_line
from napari_medspike.engine.routing import domain_record


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", required=True, help="shipped model name or checkpoint file (rewritten)")
    parser.add_argument("--data", nargs="+", required=True, help="the folders it was trained on")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    path = resolve_checkpoint(args.model)
    meta = read_metadata(path)
    model = load_model(path)
    val = set(meta.get("training", {}).get("val_keys") or [])
    train = [p for p in find_pairs(args.data)[0] if p.key not in val]
    if not train:
        raise SystemExit(f"no training images in {args.data} (all {len(val)} are validation keys?)")
    names = ", ".join(dataset_name(str(d)) for d in args.data)
    record = domain_record(model, [p.image for p in train], source=f"training images of {names}", seed=args.seed)
    save_checkpoint(model, path, half=meta.get("storage_dtype") == "float16",
                    **{**model.info.record(), "domain": record})
    card = model_card_path(path)
    if card.exists():
        kept = [line for line in card.read_text(encoding="utf-8").splitlines() if not line.startswith(DOMAIN_LINE_START)]
        head = next((i for i, line in enumerate(kept) if not line.startswith(("#", "-", " ")) and i > 2), len(kept))
        card.write_text("\n".join(kept[:head] + [domain_line(read_metadata(path))] + kept[head:]) + "\n", encoding="utf-8")
    print(f"{path}: domain record of {record['images']} of {len(train)} training images ({names})")


if __name__ == "__main__":
    main()
