#!/usr/bin/env bash
# The checks that need a CUDA GPU, in one short run (a lent GPU machine has about 10 minutes):
#   bash bench/gpu_checks.sh OUT_DIR [SCALE]
# 1. tests/test_cuda.py (GPU == CPU outputs and tokens; exact resume of training on the GPU);
# 2. the long-range study at d = 1024 (attention, LSTM, GRU; 2 seeds; the same wall-clock seconds each);
# 3. the scoring-function study on Multi30k de->en (every RNN attention and the Transformer, the same
#    wall-clock seconds each, all 1,000 test_2016_flickr sentences);
# 4. the attention benchmark's GPU column.
# SCALE (default 1) multiplies every training budget; 0.02 makes a CPU dry run of the whole script.
# Multi30k is read from ../shared/data as everywhere else. Python: the machine's python3 with torch; attnkit
# from src/ (no install needed).
set -u
out=${1:?usage: bench/gpu_checks.sh OUT_DIR [SCALE]}
scale=${2:-1}
device=${DEVICE:-cuda}
py=${PYTHON:-python3}
mkdir -p "$out"
export PYTHONPATH=$PWD/src${PYTHONPATH:+:$PYTHONPATH} PYTHONUNBUFFERED=1
s() { $py -c "print(max(1, round($1 * $scale)))"; }
step() { echo "=== $1 ($(date -u +%T))"; }

step "environment"
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv 2>&1 | tail -1
$py -c "import torch, transformers, tokenizers, sacrebleu; print('torch', torch.__version__, 'cuda', torch.cuda.is_available())"

step "tests/test_cuda.py"
timeout 120 $py -m pytest -q -p no:cacheprovider tests/test_cuda.py 2>&1 | tail -15

step "long-range study, d=1024, $device"
timeout $(( $(s 150) + 60 )) $py bench/long_range.py --device "$device" --out "$out/long-range-gpu" \
    --distances 1024 --models attention,lstm,gru --long 0 --long-seeds 2 --long-seconds "$(s 20)" \
    --long-batch 32 --test 512 2>&1 | tail -8

step "scoring study, Multi30k, $device"
timeout $(( $(s 180) + 90 )) $py bench/scoring_study.py --device "$device" --tasks multi30k \
    --mt-seconds "$(s 25)" --mt-max-tokens 4000 --warmup 300 --test 1000 \
    --out "$out/scoring-study-gpu.json" 2>&1 | tail -9

step "attention benchmark, $device"
timeout 90 $py bench/attention.py --device "$device" --repeats 5 ${ATT_ARGS:-} 2>&1 | tee "$out/attention-gpu.txt" | tail -12
step "done"
