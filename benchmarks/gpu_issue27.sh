#!/usr/bin/env bash
# The GPU evidence of issue 27 in one run on a lent GPU machine (the `device` tool; docs/speed.rst):
# the GPU tests (graph-captured step against eager, the non-finite stop, resident data), then the throughput
# table at batch 64, at batch 256 and on a second pair. The device's image has torch (2.11 when last seen),
# pytorch-lightning and torchmetrics of versions not recorded (the package needs Lightning 2.6 and torchmetrics 1.7,
# setup.cfg) and not jsonargparse or torchdistill: fetch their wheels here first, into .whl/ (kept out of git and
# carried; torchdistill 1.1.4, the last that accepts a torch before 2.12; the whole suite passes on torch 2.11 with
# these, README "Development"):
#   echo /.whl/ >> .git/info/exclude
#   python3 -m pip download --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
#       --platform manylinux2014_x86_64 -d .whl jsonargparse==4.53.0 docstring-parser==0.18.0 \
#       typeshed-client==2.15.0 torchdistill==1.1.4 pytorch-lightning==2.6.6 torchmetrics==1.9.0 \
#       lightning-utilities==0.15.3
# then, with the `device` tool: run(command="bash benchmarks/gpu_issue27.sh", carry=[".whl"], timeout_s=600).
set -uo pipefail
OUT=${OUT:-/tmp/issue27}
mkdir -p "$OUT"
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl || exit 1
export PYTHONPATH=/tmp/site:$PWD PYTHONUNBUFFERED=1 WANDB_MODE=offline
nvidia-smi --query-gpu=name,driver_version --format=csv,noheader | tee "$OUT/gpu.txt"
python3 -c "import torch, pytorch_lightning; print('torch', torch.__version__, 'lightning', pytorch_lightning.__version__)" \
    | tee -a "$OUT/gpu.txt"
timeout 150 python3 -m pytest -q -n 0 -p no:cacheprovider -o addopts="" -k "on_a_gpu or needs_a_gpu or device" \
    tests/test_compiled_step.py tests/test_resident_data.py 2>&1 | tail -30 | tee "$OUT/gpu_tests.txt"
cd benchmarks
table() {  # seconds allowed, then the benchmark's arguments; each table is copied out as soon as it is written
    timeout "$1" python3 cache_throughput.py --rounds 1 --threads 8 --device cuda --compile "${@:2}" \
        2>&1 | grep -v -i "warn" | tail -22
    cp results/cache_throughput_gpu*.json "$OUT/" 2>/dev/null
}
FEW=("(b)" "(d)" "(e)" "(f)" "(g)" "(c2)" "(h)")
table 200 --images 5120 --skip "(f)" "(g)" "(c2)"
table 110 --images 10240 --batch-size 256 --skip "${FEW[@]}"
table 110 --images 5120 --pair wrn_40_2-wrn_16_2 --skip "${FEW[@]}"
