#!/usr/bin/env bash
# Trains the float small MobileNetV2 on CIFAR-10 (JPEG q75 copy) that the cifar10-mobilenetv2
# benchmark rows start from. Resumable: rerun the same command after an interruption.
set -euo pipefail
cd "$(dirname "$0")/.."
python examples/train.py --dataset=cifar10 --model=mobilenet_v2 --weight_bits=32 --activation_bits=32 \
  --epochs=15 --batch_size=128 --learning_rate=0.1 --seed=0 \
  --backup_dir="${KQUANT_CACHE:-$HOME/.cache/kquant}/runs/mobilenet_v2_cifar10_float" \
  --save_model=benchmarks/checkpoints/mobilenet_v2_cifar10_float.h5 --export_dir=
