#!/usr/bin/env bash
# cnnc training against PyTorch eager on this machine (LeNet-5 on MNIST: epoch time and
# accuracy; ResNet-18 / MobileNet v2 training steps: PyTorch's images/s). Method: the header
# of train_compare.py.
#
#   bench/train_compare.sh                      # 2 epochs each side, then the step rows
#   bench/train_compare.sh --epochs 10 --no-steps
#
# Needs python3 (with the venv module), cargo and the PyPI registry. The venv is made once in
# target/train-bench-venv (override with CNNC_TRAIN_VENV); torch from PyPI is large (~3 GB
# with its CUDA libraries, which the CPU runs do not use).
set -euo pipefail

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
venv="${CNNC_TRAIN_VENV:-$root/target/train-bench-venv}"

if [ ! -x "$venv/bin/python" ] || ! "$venv/bin/python" -c 'import torch, torchvision, numpy' 2>/dev/null; then
    echo "making the Python environment in $venv (torch, torchvision, numpy)" >&2
    python3 -m venv "$venv"
    "$venv/bin/pip" install --quiet --upgrade pip
    "$venv/bin/pip" install --quiet torch torchvision numpy
fi

cargo build --release --quiet --manifest-path "$root/Cargo.toml"
exec "$venv/bin/python" "$root/bench/train_compare.py" --cnnc "$root/target/release/cnnc" --root "$root" "$@"
