#!/usr/bin/env bash
# Trains the float ResNet-20 on CIFAR-10 (JPEG q75 copy) that every QAT benchmark row starts from.
# Resumable: rerun the same command after an interruption.
set -euo pipefail
cd "$(dirname "$0")/.."
# The committed checkpoint was trained with Keras' default batch-norm momentum (0.99), before
# the reference models moved to 0.9; --batch_norm_momentum=0.99 reproduces it.
python examples/train.py --dataset=cifar10 --model=resnet20 --weight_bits=32 --activation_bits=32 \
  --batch_norm_momentum=0.99 --epochs=30 --batch_size=128 --learning_rate=0.1 --seed=0 \
  --backup_dir="${KQUANT_CACHE:-$HOME/.cache/kquant}/runs/resnet20_cifar10_float" \
  --save_model=benchmarks/checkpoints/resnet20_cifar10_float.h5 --export_dir=
