#!/usr/bin/env bash
# The long measurements behind the shipped configs and the report, in order (hours on 2 cores):
# searches and finetuning of ResNet-20 (branch A) beside PILLAR training (branch B), then the suite,
# the activation comparison, scaling, the report and the README headline.
set -uo pipefail
cd "$(dirname "$0")/.."
R=.venv/bin/ringlet
M=models/resnet20-fmnist
log() { echo "[$(date +%H:%M:%S)] $*"; }
branch_a() {
  $R search --model $M --mode eco --out $M.eco.json --report $M.eco.report.json --plot results/resnet20-eco.png --no-progress
  log "eco done"
  $R search --model $M --mode budget --budget 8/64 --naive --out $M.8-64.json --report $M.8-64.report.json --plot results/resnet20-8-64.png --no-progress
  log "8/64 done"
  $R search --model $M --mode budget --budget 6/64 --naive --out $M.6-64.json --report $M.6-64.report.json --plot results/resnet20-6-64.png --no-progress
  log "6/64 done"
  $R finetune --model $M --relu-config $M.6-64.json --epochs ${FT_EPOCHS:-5} --out models/resnet20-fmnist-ft6-64 --no-progress --json > $M.6-64ft.report.json
  .venv/bin/python - <<'PY'
import json
p = "models/resnet20-fmnist.6-64.json"
c = json.load(open(p)); c["checkpoint"] = "resnet20-fmnist-ft6-64"
json.dump(c, open(p, "w"), indent=2)
PY
  log "finetune done"
}
branch_b() {
  $R train --model $M --dataset fashion-mnist --poly degree=4,range=5 --pillar 5e-5 --epochs ${POLY_EPOCHS:-8} \
     --lr 0.01 --name resnet20-fmnist-poly4 --out runs/poly --threads 1 --no-progress --json > runs/poly.json
  cp runs/poly/resnet20-fmnist-poly4.safetensors runs/poly/resnet20-fmnist-poly4.json models/
  log "poly done"
}
mkdir -p results
branch_a > runs/branch_a.log 2>&1 &
A=$!
branch_b > runs/branch_b.log 2>&1 &
B=$!
wait $A $B
$R bench suite --models resnet20 --samples ${SAMPLES:-64} --out results/suite.json --real-links > runs/suite.log 2>&1
log "suite done"
$R bench activations --model resnet20 --samples 32 --out results/activations.json > runs/activations.log 2>&1
log "activations done"
$R bench scale --model resnet20 --out results/scale.json > runs/scale.log 2>&1
log "scale done"
$R report results/suite.json --out results/report --extra results/scale.json results/sharing.json results/activations.json
.venv/bin/python scripts/readme_report.py results/suite.json
log "all done"
