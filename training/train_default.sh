#!/usr/bin/env bash
# The commands behind the shipped default model (napari_medspike/weights/default.*).
# This task had no GPU: a CPU-budget MedQKFormer at 128x128 on 2 cores. With a GPU, train the
# paper-size MedSpikeFormer instead (training/README.md, two-phase recipe at 256², T = 4).
set -euo pipefail
DATA=${DATA:-../shared/data/kvasir-seg}
RUN=${RUN:-runs/qk128}
medspike-train --arch medqkformer --data "$DATA" --out "$RUN" --size 128 --epochs 200 \
    --minutes 85 --val-fraction 0.1 --seed 0 \
    --description "CPU-budget default model (no GPU in this task): MedQKFormer at 128x128, 2 CPU cores."
# extended with the same settings (exact resume: model, optimiser, scheduler, RNG): first to
# 16 epochs (session 1), then to 39 epochs (session 2; the shipped weights are epoch 32's)
medspike-train --arch medqkformer --data "$DATA" --out "$RUN" --size 128 --epochs 16 \
    --minutes 400 --val-fraction 0.1 --seed 0 --resume
medspike-train --arch medqkformer --data "$DATA" --out "$RUN" --size 128 --epochs 39 \
    --minutes 400 --val-fraction 0.1 --seed 0 --resume
medspike-evaluate --checkpoint "$RUN/best.safetensors" --data "$DATA" --split "$RUN/split.json" \
    --subset val --json "$RUN/val_original_resolution.json" --report "$RUN/report"
python training/ship_model.py --run "$RUN" --name default --eval "$RUN/val_original_resolution.json" \
    --note "Training data licence: Kvasir-SEG, research and education only; commercial use needs permission (Jha et al., MMM 2020)."
