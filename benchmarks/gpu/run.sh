#!/usr/bin/env bash
# GLA kernels on one CUDA device, in one call: versions, first-call time with an empty
# Triton cache, correctness at full head size against the float64 naive loop, then timings
# of recur triton, recur chunk, torch SDPA and FLA's chunk_gla (when carried in .whl/).
# Writes log.txt and results.jsonl under $OUT. Run from the repository root.
set -u
OUT=${OUT:-/tmp/recur-gpu}
mkdir -p "$OUT"
export PYTHONUNBUFFERED=1 PYTHONPATH=$PWD
export TRITON_CACHE_DIR=$(mktemp -d)
RESULTS=$OUT/results.jsonl
: > "$RESULTS"
exec > >(tee -a "$OUT/log.txt") 2>&1

nvidia-smi --query-gpu=name,memory.total,driver_version,clocks.sm,clocks.max.sm --format=csv
python3 -c "import sys, torch, triton; print('python', sys.version.split()[0], '| torch', torch.__version__, '| cuda', torch.version.cuda, '| triton', triton.__version__, '|', torch.cuda.get_device_name())"
if ls .whl/*.whl >/dev/null 2>&1; then
    python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl \
        && export PYTHONPATH=$PYTHONPATH:/tmp/site
fi

echo "== first call (empty Triton cache)"
timeout 120 python3 benchmarks/gpu/bench_gla.py --first-call --out "$RESULTS"
echo "== correctness at full size"
timeout 150 python3 -m pytest -q -m gpu -p no:cacheprovider tests/gpu 2>&1 | tail -25
echo "== timings: recur and SDPA"
timeout 120 python3 benchmarks/gpu/bench_gla.py --out "$RESULTS" ${T_LIST:+--T $T_LIST}
if [ "${STAGES:-1}" != 0 ]; then
    echo "== stages"
    timeout 100 python3 benchmarks/gpu/bench_gla.py --breakdown --out "$RESULTS"
fi
if [ "${FLA_TIMEOUT:-90}" != 0 ] && python3 -c "import fla" 2>/dev/null; then
    echo "== timings: FLA"
    timeout ${FLA_TIMEOUT:-90} python3 benchmarks/gpu/bench_gla.py --fla --out "$RESULTS" ${T_LIST:+--T $T_LIST}
fi
echo "== summary"
python3 benchmarks/gpu/summary.py "$RESULTS"
