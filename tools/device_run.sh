#!/usr/bin/env bash
# The one device call: install carried wheels, lay out dreamlmc, run the CUDA tests (pytest -m cuda, tests/test_cuda.py
# and the real tiny-cuda-nn test) and the GPU benchmarks. Run on the device machine from the repository root.
set -u
export PYTHONUNBUFFERED=1 HF_HUB_OFFLINE=1 TRANSFORMERS_VERBOSITY=error
OUT=${OUT:-device_out}; mkdir -p "$OUT"
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl || exit 1
# no network there, so no pip install of dreamlmc: lay out the package as setup.py's package_dir does, by links
mkdir -p /tmp/pkg/dreamlmc && ln -sf "$PWD"/dreamlmc/* /tmp/pkg/dreamlmc/ && ln -sfn "$PWD/renderers" /tmp/pkg/dreamlmc/renderers && ln -sfn "$PWD/guidance" /tmp/pkg/dreamlmc/guidance
export PYTHONPATH=/tmp/pkg:/tmp/site
nvidia-smi --query-gpu=name,memory.total --format=csv,noheader
# run from /tmp/pkg so that `python -m dreamlmc.cli` (children of the checks) finds the laid-out package first
R=$PWD; case "$OUT" in /*) ;; *) OUT="$R/$OUT";; esac; cd /tmp/pkg
[ "${BENCH_ONLY:-0}" = 1 ] || (cd $R && timeout 300 python3 -m pytest -q -m cuda -rs tests 2>&1 | tail -30 | tee "$OUT/cuda_tests.log")
[ "${CHECK_ONLY:-0}" = 1 ] && exit 0
timeout 120 python3 $R/tools/bench_renderer.py --device cuda --out "$OUT/renderer_cuda.json" 2>&1 | tail -12 | tee "$OUT/bench_renderer.log"
timeout 150 python3 $R/tools/bench_speed.py --device cuda --warmup 100 --repeats 30 --e2e --out "$OUT/speed_cuda.json" 2>&1 | grep -v Warning | tail -20 | tee "$OUT/bench_speed.log"
