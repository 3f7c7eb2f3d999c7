#!/usr/bin/env bash
# The planted-delay study of --persistency auto: cpu preset, m=32, K in {1, 2, 5, auto:8}, 3 seeds,
# equal work: 16,896 sample-steps per run (12 epochs at K=1), loading delays of 0, 0.1, 1 and 2 steps, the step
# measured first on this machine. Run it alone: its seconds are only as quiet as the machine.
#   bash reports/auto-persistency/study.sh [OUT]      (OUT defaults to runs/auto-study)
set -eu
out=$(realpath -m "${1:-runs/auto-study}")
cd "$(dirname "$0")/../.."
mkdir -p "$out"
export OMP_NUM_THREADS=1
rm -rf "$out/step"
.venv/bin/persist train --dataset digits --width 0.125 --lr 0.0005 --normalization standardize -m 32 --epochs 3 \
  --device cpu --quiet --out "$out/step" > /dev/null
step_ms=$(.venv/bin/python - "$out/step/epochs.jsonl" <<'PY'
import json, sys
rows = [json.loads(line) for line in open(sys.argv[1])][1:]  # the first epoch warms up
print(f"{min(r['compute_s'] / r['steps'] for r in rows) * 1000:.2f}")
PY
)
echo "step: $step_ms ms (compute per step, epochs 2-3)" | tee "$out/step.txt"
for fraction in 0 0.1 1 2; do
  d=$(.venv/bin/python -c "print(round($fraction * $step_ms, 2))")
  name="delay-${fraction}step"
  .venv/bin/persist sweep --preset cpu --pipelines preloaded --batch-sizes 32 --persistencies 1,2,5,auto \
    --schedules constant --budget 16896sample-steps --delay-ms "$d" --quiet --out "$out/runs-$name" \
    > "$out/sweep-$name.log" 2>&1
  .venv/bin/persist report "$out/runs-$name"/* --out "$out/$name" > "$out/report-$name.log" 2>&1
  echo "$name: --delay-ms $d" | tee -a "$out/step.txt"
done
echo "done: $out"
