#!/usr/bin/env bash
# Issue 8's GPU checks as one prepared device call (about 9 minutes on an H100/H200).
#
# A lent device gives a session 15 minutes in all, its start included, so the checks that
# need a GPU are packed here, each under its own time limit, most important first; a stage
# that runs out of time is killed, says so, and the next one still runs. Everything lands in
# $OUT (the device tool brings it back) or benchmarks/results/gpu/ elsewhere.
#
# The device image has torch but not lark. Fetch lark's wheel once, here, before the call:
#   echo /.whl/ >> .git/info/exclude
#   python3 -m pip download --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
#       --platform manylinux2014_x86_64 -d .whl lark==1.3.1
# then run with the device tool:  command "bash benchmarks/gpu_session.sh", carry [".whl"],
# timeout_s 600. Stage limits can be changed without editing: STEP_S=... EPOCH_S=... bash ...
set -u
cd "$(dirname "$0")/.."
OUT=${OUT:-benchmarks/results/gpu}
mkdir -p "$OUT"
export PYTHONUNBUFFERED=1

stage() {  # stage NAME SECONDS COMMAND...: run with a limit, keep its log, never stop the script
    local name=$1 limit=$2
    shift 2
    echo "== $name (limit ${limit} s) =="
    local t0=$SECONDS
    timeout -s INT -k 15 "$limit" "$@" 2>&1 | tee "$OUT/$name.log"
    local rc=${PIPESTATUS[0]}
    echo "== $name: exit $rc after $((SECONDS - t0)) s$([ "$rc" = 124 ] && echo ', stopped by its limit') =="
}

if ls .whl/*.whl >/dev/null 2>&1; then
    python3 -m pip install -q --no-index --no-deps --no-compile --target /tmp/site .whl/*.whl \
        && export PYTHONPATH=/tmp/site
fi
install_nasc() {  # an editable install; where pip cannot build offline, the same packages through links
    python3 -m pip install -q --no-deps --no-build-isolation -e . >"$OUT/install.log" 2>&1 && return 0
    echo "pip could not install nasc (see install.log): importing it through /tmp/nasc-farm instead"
    rm -rf /tmp/nasc-farm && mkdir -p /tmp/nasc-farm && cp -r nasc /tmp/nasc-farm/nasc
    for d in grammar compiler runtime spaces; do ln -s "$PWD/$d" "/tmp/nasc-farm/nasc/$d"; done
    export PYTHONPATH=/tmp/nasc-farm${PYTHONPATH:+:$PYTHONPATH}
}
install_nasc
python3 -c "import nasc.runtime.search, nasc.spaces" || { echo "nasc does not import"; exit 1; }
nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv | tee "$OUT/gpu.txt"
python3 -c "import torch; print('torch', torch.__version__, 'cuda', torch.version.cuda)" | tee -a "$OUT/gpu.txt"

# 1. the tests that skip without CUDA: graph replay = eager, fused groups in NHWC, a graphed search
stage cuda_tests "${TESTS_S:-150}" python3 -m pytest -q -p no:cacheprovider -rs tests/runtime/test_step.py

# 2. one search step, full DARTS supernet: what fused groups do to the graphed step (never timed on a GPU)
stage search_step "${STEP_S:-200}" python3 benchmarks/search_step.py --only softmax --batches 64 256 \
    --lowerings shared fused default optimised --out "$OUT/search_step-cuda.json"

# 3. a real search epoch (synthetic CIFAR-10 in its own file format) and the 50-epoch projection
stage search_epoch "${EPOCH_S:-180}" python3 benchmarks/search_epoch.py --synthetic --batch 256 \
    --run-epochs 2 --epochs 50 --progress 25 --out "$OUT/search_epoch-256.json"

# 4. compiled cells, alone and replayed inside a CUDA graph (never tried on a GPU)
stage compiled "${COMPILE_S:-60}" python3 benchmarks/search_step.py --only softmax --batches 64 \
    --lowerings compiled compiled+graphs --out "$OUT/search_step-compiled-cuda.json"
ls -l "$OUT"
