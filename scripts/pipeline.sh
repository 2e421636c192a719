#!/usr/bin/env bash
# The long measurements behind the shipped configs and the report, in order (hours on 2 cores):
# searches and finetuning of ResNet-20 (branch A) beside PILLAR training (branch B), then the suite,
# the activation comparison, scaling, the report and the README headline. A step whose output already
# exists is skipped, so an interrupted run picks up where it stopped (delete an output to redo it).
set -uo pipefail
cd "$(dirname "$0")/.."
R=.venv/bin/ringlet
M=models/resnet20-fmnist
log() { echo "[$(date +%H:%M:%S)] $*"; }
todo() { [ ! -e "$1" ]; }
branch_a() {
  todo $M.eco.json && $R search --model $M --mode eco --out $M.eco.json --report $M.eco.report.json --plot results/resnet20-eco.png --no-progress
  log "eco done"
  todo $M.8-64.json && $R search --model $M --mode budget --budget 8/64 --naive --out $M.8-64.json --report $M.8-64.report.json --plot results/resnet20-8-64.png --no-progress
  log "8/64 done"
  todo $M.6-64.json && $R search --model $M --mode budget --budget 6/64 --naive --out $M.6-64.json --report $M.6-64.report.json --plot results/resnet20-6-64.png --no-progress
  log "6/64 done"
  todo models/resnet20-fmnist-ft6-64.safetensors && $R finetune --model $M --relu-config $M.6-64.json --epochs ${FT_EPOCHS:-5} --out models/resnet20-fmnist-ft6-64 --no-progress --json > $M.6-64ft.report.json
  .venv/bin/python - <<'PY'
import json
p = "models/resnet20-fmnist.6-64.json"
c = json.load(open(p)); c["checkpoint"] = "resnet20-fmnist-ft6-64"
json.dump(c, open(p, "w"), indent=2)
PY
  log "finetune done"
  todo results/sharing.json && $R bench sharing --epochs ${SHARING_EPOCHS:-12} --lr 0.02 --out results/sharing.json
  log "sharing done"
}
branch_b() {
  todo models/resnet20-fmnist-poly4.safetensors || return 0
  $R train --model $M --dataset fashion-mnist --poly degree=4,range=5 --pillar 5e-5 --epochs ${POLY_EPOCHS:-8} \
     --lr 0.01 --name resnet20-fmnist-poly4 --out runs/poly --threads 1 --no-progress --json > runs/poly.json
  cp runs/poly/resnet20-fmnist-poly4.safetensors runs/poly/resnet20-fmnist-poly4.json models/
  log "poly done"
}
mkdir -p results
OMP_NUM_THREADS=1 branch_a > runs/branch_a.log 2>&1 &
A=$!
branch_b > runs/branch_b.log 2>&1 &
B=$!
wait $A $B
todo results/suite.json && $R bench suite --models resnet20 --links lan,highbw,wan,wan-rtt --samples ${SAMPLES:-64} --out results/suite.json --real-links > runs/suite.log 2>&1
log "suite done"
todo results/activations.json && $R bench activations --model resnet20 --samples 32 --out results/activations.json > runs/activations.log 2>&1
log "activations done"
todo results/scale.json && $R bench scale --model resnet20 --out results/scale.json > runs/scale.log 2>&1
log "scale done"
$R report results/suite.json --out results/report --extra results/scale.json results/sharing.json results/activations.json
.venv/bin/python scripts/readme_report.py results/suite.json
log "all done"
