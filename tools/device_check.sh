#!/usr/bin/env bash
# The one prepared GPU check (issue 31), for a session lent a GPU through the device tool's `run`:
#   run(command="bash tools/device_check.sh", timeout_s=600)
# It installs the project into the machine's own python3 (its PyTorch, no downloads), then
#   1. `bench --all` at the paper setting (h256, g20, batch 32, 5 particles, 10 frames), fp32 and bf16
#      side by side, eager for every model and compiled for SQAIR, R-SQAIR(IN) and R-SQAIR(RMC);
#   2. a few minutes of the headline suite at bf16 (suites/device-smoke.yaml).
# Files land in $OUT (the device tool brings them back; default results/device-check/ when run by hand):
# bench-cuda-paper.json (commit it under results/bench/ with the device's name), bench.txt, smoke/
# (the smoke run's table and metrics) and log.txt. Each step has its own time limit, so a slow compile
# cannot eat the whole lease; a step that fails is reported and the next one still runs.
set -uo pipefail
cd "$(dirname "$0")/.."
out=${OUT:-results/device-check}
mkdir -p "$out/smoke"
exec > >(tee "$out/log.txt") 2>&1

python3 -m pip install --quiet --no-deps --no-build-isolation -e . || { echo "device_check: install failed"; exit 1; }
python3 -c "import torch; print('torch', torch.__version__, 'cuda', torch.cuda.is_available(),
      torch.cuda.get_device_name(0) if torch.cuda.is_available() else '')"
status=0

echo "== 1. bench, paper setting, fp32 and bf16, eager and compiled =="
timeout 330 python3 -m rsqair_bench bench --all --device cuda --precision fp32 bf16 --modes eager compiled \
    --compiled-models sqair sqair+in sqair+rmc --iterations 10 --warmup 2 --data-sequences 0 \
    --json "$out/bench-cuda-paper.json" | tee "$out/bench.txt" || { echo "device_check: bench exit $?"; status=1; }

echo "== 2. the headline suite at bf16, a few minutes (suites/device-smoke.yaml) =="
timeout 200 python3 -m rsqair_bench run suites/device-smoke.yaml || { echo "device_check: smoke run exit $?"; status=1; }
for f in results/device-smoke/report/table.md results/device-smoke/report/throughput.md; do
  [ -f "$f" ] && cp "$f" "$out/smoke/"
done
for m in results/device-smoke/*/seed0/metrics.json; do
  [ -f "$m" ] && cp "$m" "$out/smoke/$(basename "$(dirname "$(dirname "$m")")" | tr '+' '_')_metrics.json"
done
exit "$status"
