#!/usr/bin/env bash
# Trains the stronger float ResNet-20 on CIFAR-10 (JPEG q75 copy) that the long suite
# (cifar10-resnet20-long) starts from: 160 epochs, as the papers' 160-200, cosine from 0.1, with
# weight decay (SGD's decoupled 5e-3, the L2 5e-4 of the usual CIFAR recipes). The same run with
# only the kernels' L2 (5e-5) overfit: 87.14% (resnet20_cifar10_float_strong_nodecay.log).
# Resumable (BackupAndRestore under ~/.cache/kquant/runs): rerun the same command after an
# interruption; the log, one line per epoch, is appended beside the checkpoint. The run outlasts
# a sitting (160 epochs at ~90 s here); benchmarks/pending.sh carries its backup between machines.
set -euo pipefail
cd "$(dirname "$0")/.."
python examples/train.py --dataset=cifar10 --model=resnet20 --weight_bits=32 --activation_bits=32 \
  --epochs=160 --batch_size=128 --learning_rate=0.1 --weight_decay=5e-3 --seed=0 \
  --backup_dir="${KQUANT_CACHE:-$HOME/.cache/kquant}/runs/resnet20_cifar10_float_strong_decay" \
  --save_model=benchmarks/checkpoints/resnet20_cifar10_float_strong.h5 --export_dir= \
  | tee -a benchmarks/checkpoints/resnet20_cifar10_float_strong.log
