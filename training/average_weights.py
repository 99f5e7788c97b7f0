"""Average the weights of two checkpoints of one architecture (batch-norm statistics too), e.g. a
model and a continuation of it, and save the result for ``medspike-evaluate``:

    python training/average_weights.py default runs/qk256/best.safetensors runs/soup256.safetensors --size 256

The result keeps the second checkpoint's record; ``--size`` sets the input size it predicts at.
"""

from __future__ import annotations

import argparse

from napari_medspike.engine.checkpoint import load_model, save_checkpoint


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("first")
    parser.add_argument("second")
    parser.add_argument("out")
    parser.add_argument("--weight", type=float, default=0.5, help="the second checkpoint's share")
    parser.add_argument("--size", type=int, default=None, help="input size of the result (default: the second's)")
    args = parser.parse_args()
    first, second = load_model(args.first), load_model(args.second)
    theirs = second.state_dict()
    first.load_state_dict({k: v.float().lerp(theirs[k].float(), args.weight).to(v.dtype) if v.is_floating_point() else v
                           for k, v in first.state_dict().items()})
    record = second.info.record()
    if args.size:
        record["input_size"] = args.size
    save_checkpoint(first, args.out, **record)
    print(f"{args.out}: {1 - args.weight:g} x {args.first} + {args.weight:g} x {args.second}, input {record['input_size']}")


if __name__ == "__main__":
    main()
