#!/usr/bin/env bash
# Trains the shipped checkpoints in models/ (plaintext, CPU). Each run resumes after its last
# finished epoch if interrupted; the finished checkpoint is copied into models/.
# Usage: scripts/train_zoo.sh [THREADS]   (default 1 thread, so other work can go on)
set -euo pipefail
cd "$(dirname "$0")/.."
T=${1:-1}
R=.venv/bin/ringlet
train() {  # model epochs lr extra-args...
  local model=$1 epochs=$2 lr=$3; shift 3
  $R train --model "$model" --dataset fashion-mnist --epochs "$epochs" --lr "$lr" \
     --threads "$T" --out runs/zoo --no-progress "$@"
  cp "runs/zoo/$model-fmnist.safetensors" "runs/zoo/$model-fmnist.json" models/
}
train fmnist-net 30 0.05
train resnet20 30 0.1
train resnet18 6 0.1
train vit 12 1e-3 --optimizer adamw --weight-decay 0.05 --warmup-epochs 1
