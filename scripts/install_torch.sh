#!/usr/bin/env bash
# Install PyTorch into the project's virtual environment without pulling a multi-gigabyte
# CUDA build onto a machine that has no GPU.
#
#   TORCH_VARIANT=auto (default)  cuda when `nvidia-smi -L` lists a GPU, cpu otherwise
#   TORCH_VARIANT=cpu | cuda      force one
#   TORCH_VERSION=2.13.0          the release to install (must satisfy pyproject.toml's range)
#   TORCH_INDEX_URL=...           a specific wheel index, e.g. https://download.pytorch.org/whl/cu128
set -euo pipefail
py="$1"
version="${TORCH_VERSION:-2.13.0}"
variant="${TORCH_VARIANT:-auto}"
if [ "$variant" = auto ]; then
    if command -v nvidia-smi >/dev/null 2>&1 && nvidia-smi -L >/dev/null 2>&1; then
        variant=cuda
    else
        variant=cpu
    fi
fi
installed="$("$py" -c 'import torch; print(torch.__version__)' 2>/dev/null || true)"
if [ -n "$installed" ]; then
    base="${installed%%+*}"
    if [ "$base" = "$version" ]; then
        is_cuda="$("$py" -c 'import torch; print(int(torch.version.cuda is not None))')"
        if { [ "$variant" = cpu ] && [ "$is_cuda" = 0 ]; } || { [ "$variant" = cuda ] && [ "$is_cuda" = 1 ]; }; then
            echo "torch $installed ($variant) already installed"
            exit 0
        fi
    fi
    echo "replacing torch $installed with torch $version ($variant)"
fi
if [ -n "${TORCH_INDEX_URL:-}" ]; then
    "$py" -m pip install --force-reinstall --no-deps "torch==$version" --index-url "$TORCH_INDEX_URL"
elif [ "$variant" = cpu ]; then
    # A CPU wheel that pip can see locally (find-links) first, then PyTorch's CPU index.
    "$py" -m pip install --force-reinstall --no-deps --no-index "torch==$version" 2>/dev/null \
        || "$py" -m pip install --force-reinstall --no-deps "torch==$version" \
            --index-url https://download.pytorch.org/whl/cpu
else
    "$py" -m pip install --force-reinstall --no-deps "torch==$version"
fi
# torch's own dependencies (sympy, networkx, ...) from the regular index.
"$py" -m pip install "torch==$version"
