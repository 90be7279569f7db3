#!/usr/bin/env bash
# The GPU checks in one go, from the repository root, on a machine with a CUDA GPU (under
# 8 minutes on one H200): the engine's CUDA tests, then benchmarks/bench_gpu.py's tables.
#
#   bash benchmarks/gpu.sh [bench_gpu.py options, e.g. --skip monai]
#
# Python: $PYTHON, else .venv/bin/python, else python3 (a GPU machine's own, with torch). Both
# steps run even when the first fails; the exit code is the first failure's. The benchmark
# stops at the script's budget (GEOSEG_GPU_BUDGET_S, default 470 s): the rows printed by then
# are complete. Without a GPU the tests skip and the benchmark prints "not measured".
set -euo pipefail
cd "$(dirname "$0")/.."

PY=${PYTHON:-.venv/bin/python}
[ -x "$PY" ] || PY=python3
BUDGET=${GEOSEG_GPU_BUDGET_S:-470}
export PYTHONUNBUFFERED=1

"$PY" -c "import torch; print('torch', torch.__version__, '| CUDA GPU:',
    torch.cuda.get_device_name() if torch.cuda.is_available() else 'none')"

echo "== 1/2 CUDA tests: tests/test_engine_gpu.py"
tests_rc=0
timeout -k 10 180 "$PY" -m pytest tests/test_engine_gpu.py -q -p no:cacheprovider -rs \
    || tests_rc=$?

echo "== 2/2 benchmark: benchmarks/bench_gpu.py"
left=$((BUDGET - SECONDS))
bench_rc=0
if [ "$left" -lt 30 ]; then
    echo "not run: ${left} s left of this script's ${BUDGET} s budget"
    bench_rc=124
else
    timeout -k 15 --signal=INT "$left" "$PY" benchmarks/bench_gpu.py "$@" || bench_rc=$?
fi
if [ "$bench_rc" -eq 124 ]; then
    echo "bench_gpu.py stopped at this script's ${BUDGET} s budget: the rows above are" \
        "complete; run the rest with --skip (compile,workers,monai)"
fi

echo "tests exit ${tests_rc}, benchmark exit ${bench_rc}"
[ "$tests_rc" -ne 0 ] && exit "$tests_rc"
exit "$bench_rc"
