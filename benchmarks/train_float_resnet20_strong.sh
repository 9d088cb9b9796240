#!/usr/bin/env bash
# Trains the stronger float ResNet-20 on CIFAR-10 (JPEG q75 copy) that the long suite
# (cifar10-resnet20-long) starts from: 160 epochs, as the papers' 160-200, cosine from 0.1.
# Resumable (BackupAndRestore): rerun the same command after an interruption; the log, one
# line per epoch, is appended beside the checkpoint. The live backup stays outside the tree;
# the run outlasts a sitting (~2 h of 4.9 at ~110 s/epoch here), and a sitting's machine may
# not keep ~/.cache, so `$0 --snapshot` copies the backup to $SNAPSHOT for a commit, and a
# machine without a backup starts from that snapshot. The finished run removes the snapshot.
set -euo pipefail
cd "$(dirname "$0")/.."
BACKUP="${KQUANT_CACHE:-$HOME/.cache/kquant}/runs/resnet20_cifar10_float_strong"
SNAPSHOT=benchmarks/checkpoints/resnet20_cifar10_float_strong.resume
if [ "${1:-}" = --snapshot ]; then
  rm -rf "$SNAPSHOT" && cp -r "$BACKUP" "$SNAPSHOT" && ls "$SNAPSHOT"
  exit
fi
if [ ! -d "$BACKUP" ] && [ -d "$SNAPSHOT" ]; then
  mkdir -p "$(dirname "$BACKUP")" && cp -r "$SNAPSHOT" "$BACKUP"
fi
python examples/train.py --dataset=cifar10 --model=resnet20 --weight_bits=32 --activation_bits=32 \
  --epochs=160 --batch_size=128 --learning_rate=0.1 --seed=0 --backup_dir="$BACKUP" \
  --save_model=benchmarks/checkpoints/resnet20_cifar10_float_strong.h5 --export_dir= \
  | tee -a benchmarks/checkpoints/resnet20_cifar10_float_strong.log
rm -rf "$SNAPSHOT"
