#!/usr/bin/env bash
# The one device call: install carried wheels, install dreamlmc, run the CUDA checks and the GPU benchmarks.
# Run on the device machine from the repository root (see tools/device_check.py).
set -u
export PYTHONUNBUFFERED=1 HF_HUB_OFFLINE=1 TRANSFORMERS_VERBOSITY=error
OUT=${OUT:-device_out}; mkdir -p "$OUT"
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl || exit 1
export PYTHONPATH=/tmp/site
python3 -m pip install -q --no-deps --no-build-isolation --no-index -e . >/dev/null 2>&1 || python3 -m pip install -q --no-deps --no-build-isolation -e . || exit 1
nvidia-smi --query-gpu=name,memory.total --format=csv,noheader
timeout 240 python3 tools/device_check.py 2>&1 | grep -v Warning | tee "$OUT/device_check.log"
timeout 120 python3 tools/bench_renderer.py --device cuda --out "$OUT/renderer_cuda.json" 2>&1 | tail -12 | tee "$OUT/bench_renderer.log"
timeout 120 python3 tools/bench_speed.py --device cuda --warmup 100 --repeats 30 --e2e --out "$OUT/speed_cuda.json" 2>&1 | grep -v Warning | tail -20 | tee "$OUT/bench_speed.log"
