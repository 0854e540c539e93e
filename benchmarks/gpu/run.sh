#!/usr/bin/env bash
# The whole device check of the GLA and delta-rule Triton kernels, in one call, most
# important first: versions, first calls with an empty Triton cache, correctness at full
# size against float64 references (`pytest -m gpu tests/gpu`), timings of recur triton,
# recur chunk and torch SDPA for both families, launch-setting variants, GLA stage
# timings, mLSTM timings (bench_mlstm.py: recur triton, recur chunk, mlstm_kernels), then FLA
# (from wheels carried in .whl/) while time is left. Every step has its
# own time limit, so a step that hangs costs only its share. Writes log.txt and
# results.jsonl under $OUT; `python benchmarks/gpu/summary.py $OUT/results.jsonl` prints
# the tables. Run from the repository root. `SMOKE=1` runs it all on the CPU at tiny sizes
# in Triton's interpreter (times meaningless), to check the script before a lease;
# DEADLINE (seconds, default 570) bounds the whole run. The steps' limits add up to more
# than one call, so they come in two parts: PART=1 (the default) the GLA and delta-rule
# kernels and FLA, PART=2 the mLSTM, head-wise RNN and ParaRNN kernels; PART=all both.
set -u
OUT=${OUT:-/tmp/recur-gpu}
mkdir -p "$OUT"
export PYTHONUNBUFFERED=1 PYTHONPATH=$PWD
export TRITON_CACHE_DIR=$(mktemp -d)
RESULTS=$OUT/results.jsonl
: > "$RESULTS"
exec > >(tee -a "$OUT/log.txt") 2>&1
PY=${PYTHON:-python3}
BENCH="$PY benchmarks/gpu/bench.py --out $RESULTS ${SMOKE:+--smoke}"
# every step ends by DEADLINE seconds after the start (a lease runs one command for at most
# 600 s), so the summary always prints
DEADLINE=${DEADLINE:-570}
START=$(date +%s)
step() { echo "== $1 ($(( $(date +%s) - START )) s)"; }
# the smaller of a step's own limit and the time left before the deadline (at least 1 s)
limit() { local left=$(( DEADLINE - 10 - ($(date +%s) - START) )); [ "$left" -lt "$1" ] && echo $(( left > 1 ? left : 1 )) || echo "$1"; }

if [ -z "${SMOKE:-}" ]; then
    nvidia-smi --query-gpu=name,memory.total,driver_version,clocks.sm,clocks.max.sm --format=csv
fi
$PY -c "import sys, torch, triton; print('python', sys.version.split()[0], '| torch', torch.__version__, '| cuda', torch.version.cuda, '| triton', triton.__version__, '|', torch.cuda.get_device_name() if torch.cuda.is_available() else 'no CUDA')"
# FLA goes to its own folder, on the path only for the FLA steps
FLA_SITE=$(mktemp -d)
if ls .whl/*.whl >/dev/null 2>&1; then
    $PY -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --target "$FLA_SITE" .whl/*.whl || FLA_SITE=
else
    FLA_SITE=
fi

PART=${PART:-1}
part() { [ "$PART" = all ] || [ "$PART" = "$1" ]; }

if part 1; then
step "first calls (empty Triton cache)"
timeout $(limit 150) $BENCH --first-call
fi
if [ -z "${SMOKE:-}" ]; then
    families=$(part 1 && echo gla delta; part 2 && echo mlstm)
    for family in $families; do
        step "correctness at full size: $family"
        timeout $(limit 150) $PY -m pytest -q -m gpu -p no:cacheprovider --durations=5 \
            tests/gpu/test_${family}_triton_gpu.py 2>&1 | tail -25
    done
fi
if part 1; then
step "timings: GLA"
# an earlier kernel file, when one was carried (see NOTES.md), is timed in the same process
BASELINE=$(ls benchmarks/gpu/baseline/*.py 2>/dev/null | head -1)
timeout $(limit 150) $BENCH --family gla ${T_LIST:+--T $T_LIST} ${BASELINE:+--baseline $BASELINE}
step "timings: gated delta rule"
timeout $(limit 100) $BENCH --family delta ${T_LIST:+--T $T_LIST}
step "launch-setting variants"
timeout $(limit 90) $BENCH --variants
step "GLA stages"
timeout $(limit 40) $BENCH --breakdown
if [ -n "$FLA_SITE" ] && [ "${FLA_TIMEOUT:-150}" != 0 ]; then
    # FLA autotunes at its first call (minutes on an H200): whatever time is left
    step "timings: FLA chunk_gla"
    PYTHONPATH=$PYTHONPATH:$FLA_SITE timeout $(limit ${FLA_TIMEOUT:-150}) $BENCH --fla --family gla ${T_LIST:+--T $T_LIST}
    step "timings: FLA chunk_gated_delta_rule"
    PYTHONPATH=$PYTHONPATH:$FLA_SITE timeout $(limit ${FLA_TIMEOUT:-150}) $BENCH --fla --family delta ${T_LIST:+--T $T_LIST}
fi
fi
if part 2; then
step "timings: mLSTM (recur triton, recur chunk, mlstm_kernels)"
timeout $(limit 120) $PY benchmarks/gpu/bench_mlstm.py --out $RESULTS ${SMOKE:+--smoke}
step "timings: head-wise LSTM, GRU, sLSTM"
timeout $(limit 150) $PY benchmarks/gpu/bench_rnn.py --out "$RESULTS" ${SMOKE:+--smoke}
step "timings: ParaRNN Newton solve (newton family)"
timeout $(limit 150) $PY benchmarks/gpu/bench_newton.py --out "$RESULTS" ${SMOKE:+--smoke}
fi
step "summary"
$PY benchmarks/gpu/summary.py "$RESULTS"
