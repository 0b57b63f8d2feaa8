#!/usr/bin/env bash
# cnnc against onnxruntime on the standard networks, on this machine: numerical agreement
# (cnnc run vs ORT on the exported model), latency at 1 and 2 threads interleaved call by call,
# compile time vs ORT session creation, peak RSS. Writes bench/results-<date>.md.
#
#   bench/compare.sh                                  # every network (vgg16 takes minutes)
#   bench/compare.sh --nets lenet5,resnet18,mobilenet_v2 --rounds 3
#   bench/compare.sh --check-only                     # only the numerical check
#   bench/compare.sh --file bench/ort_ops.cnn         # every network of a file, numerics only
#   bench/compare.sh --nets resnet50 --batch 8        # throughput at batch 8 too (the default; 1: none)
#
# Needs python3 (with the venv module), cargo, and the PyPI registry. The venv is made once in
# target/bench-venv (override with CNNC_BENCH_VENV). Method: see the header of compare.py.
set -euo pipefail

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
venv="${CNNC_BENCH_VENV:-$root/target/bench-venv}"

if [ ! -x "$venv/bin/python" ] || ! "$venv/bin/python" -c 'import onnxruntime, numpy' 2>/dev/null; then
    echo "making the Python environment in $venv (onnxruntime, numpy)" >&2
    python3 -m venv "$venv"
    "$venv/bin/pip" install --quiet --upgrade pip
    "$venv/bin/pip" install --quiet onnxruntime numpy
fi

cargo build --release --quiet --manifest-path "$root/Cargo.toml"
exec "$venv/bin/python" "$root/bench/compare.py" --cnnc "$root/target/release/cnnc" --root "$root" "$@"
