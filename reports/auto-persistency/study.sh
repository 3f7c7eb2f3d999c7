#!/usr/bin/env bash
# The planted-delay study of --persistency auto (issue 21): cpu preset, m=32, K in {1, 2, 5, auto:8}, 3 seeds,
# equal work: 16,896 sample-steps per run (12 epochs at K=1), delays 0, a tenth of a step and a full step (43 ms/step measured just before).
set -u
cd /work/main
export OMP_NUM_THREADS=1
for d in 0 4.3 43; do
  .venv/bin/persist sweep --preset cpu --pipelines preloaded --batch-sizes 32 --persistencies 1,2,5,auto \
    --schedules constant --budget 16896sample-steps --delay-ms $d --quiet --out /work/study/runs-d$d > /work/study/sweep-d$d.log 2>&1
  .venv/bin/persist report /work/study/runs-d$d/* --out /work/study/report-d$d > /work/study/report-d$d.log 2>&1
done
echo done > /work/study/DONE
