#!/usr/bin/env bash
# Prepare .whl/ (ignored by git) for benchmarks/gpu_check.sh on a GPU machine that has
# PyTorch, transformers and most of our dependencies but no network (Python 3.12, x86-64):
#
#   bash benchmarks/gpu_wheels.sh        # here, with network; then carry .whl to the GPU machine
#
# * wheels of what olmo_nn imports for `olmo train`, evaluation and the GPU tests that such an
#   image lacks, at .venv's versions, for CPython 3.12 manylinux x86-64 (MISSING below: of
#   pyproject's dependencies that olmo_nn imports, torch, numpy, safetensors, tiktoken,
#   tokenizers, pyyaml, pyarrow, tqdm, matplotlib, transformers and pytest are in the
#   workplace's CUDA image; zstandard is not, and olmo_nn.data.documents imports it);
# * .whl/olmo-eval-cache/hf_datasets: the validation splits the built-in tasks read, copied
#   from this machine's task-data cache (olmo_nn.eval.task_data; downloaded here if absent),
#   for the bf16 evaluation test (gpu_check.sh points OLMO_EVAL_CACHE at it).
#
# About 21 MB in all. PYTHON (default .venv/bin/python) must have pip and olmo_nn.
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-.venv/bin/python}
DEST=.whl
MISSING=(zstandard)

mkdir -p "$DEST"
for name in "${MISSING[@]}"; do
    version=$("$PYTHON" -c "import importlib.metadata as m, sys; print(m.version(sys.argv[1]))" "$name")
    rm -f "$DEST/$name"-*.whl
    "$PYTHON" -m pip download --quiet --no-deps --only-binary=:all: --python-version 3.12 \
        --implementation cp --platform manylinux_2_28_x86_64 --platform manylinux_2_27_x86_64 \
        --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 \
        --platform manylinux1_x86_64 -d "$DEST" "$name==$version"
done

"$PYTHON" - "$DEST/olmo-eval-cache/hf_datasets" <<'EOF'
import shutil
import sys
from pathlib import Path

from olmo_nn.eval.task_data import REQUIRED_SPLITS, ensure_task_data

source, target = ensure_task_data(), Path(sys.argv[1])
for dataset, config in REQUIRED_SPLITS:
    split = Path(dataset) / (config or "none") / "validation"
    shutil.rmtree(target / split, ignore_errors=True)
    shutil.copytree(source / split, target / split)
EOF

du -sh "$DEST"
ls "$DEST"
