#!/usr/bin/env bash
# One medspike-train run on a lent GPU machine (after tools/gpu/prepare.sh here; carry .gpu).
# Stops the run at DEADLINE seconds after the start (give --minutes below it for a clean end), so the
# copy back happens inside the call's limit; meanwhile it copies the best checkpoint so far,
# float16-stored, and the history to $OUT every 30 s, so a call cut short still returns weights.
#   bash tools/gpu/train.sh 480 --arch medqkformer --data .gpu/kvasir-seg --out runs/g --size 128 ...
# Run one at a time: runs side by side on one GPU slowed one another down (BENCHMARKS.md, "GPU").
set -uo pipefail
DEADLINE=${1:?seconds}; shift
OUT=${OUT:-/tmp/out}; mkdir -p "$OUT"
RUN=$(python3 -c 'import sys; a = sys.argv[1:]; print(a[a.index("--out") + 1])' "$@")
export PYTHONUNBUFFERED=1 MEDSPIKE_MALLOC=default TQDM_DISABLE=1
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .gpu/whl/*.whl || exit 3
export PYTHONPATH=$PWD:/tmp/site:$PWD/.gpu/stub
nvidia-smi --query-gpu=name,memory.total --format=csv,noheader 2>&1 | tee "$OUT/log.txt"
copy_back() {
  [ -f "$RUN/best.safetensors" ] && python3 tools/gpu/half.py "$RUN/best.safetensors" "$OUT/best.safetensors" >/dev/null
  [ -f "$RUN/history.csv" ] && cp "$RUN/history.csv" "$OUT/history.csv"
}
python3 -m napari_medspike.cli.train "$@" >> "$OUT/log.txt" 2>&1 &
PID=$!
START=$(date +%s)
while kill -0 $PID 2>/dev/null; do
  sleep 10
  if [ -z "${STOPPED:-}" ] && [ $(( $(date +%s) - START )) -ge "$DEADLINE" ]; then
    echo "deadline: stopping the run" >> "$OUT/log.txt"; kill -TERM $PID 2>/dev/null; STOPPED=1
  fi
  [ $(( ($(date +%s) - START) % 30 )) -lt 10 ] && copy_back
done
wait $PID; echo "exit status $?" >> "$OUT/log.txt"
copy_back
grep -a -v "^INFO" "$OUT/log.txt" | tail -20
