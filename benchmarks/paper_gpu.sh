#!/usr/bin/env bash
# The paper-size presets on one GPU, all four at once, each under the same time budget, plus the
# GPU tests and the engine benchmark; everything but the checkpoints packed into one archive.
#
#   bash benchmarks/paper_gpu.sh DATA_DIR OUT_DIR MINUTES
#
# A run that cannot do its preset's epochs in MINUTES trains fewer (ffcore train --minutes: decided
# while the learning rate is at its peak, so it still cools down); its report.json says how many.
set -u
data=$1 out=$2 minutes=$3
export PYTHONPATH=$PWD PYTHONUNBUFFERED=1 OMP_NUM_THREADS=3
mkdir -p "$out" runs/gpu
{ date -u; nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv;
  python3 -c "import torch; print('torch', torch.__version__, torch.version.cuda)"; nproc; } > runs/gpu/machine.txt 2>&1
python3 -m pytest -q -p no:cacheprovider tests/ffcore/test_device.py > runs/gpu/gpu_tests.txt 2>&1
tail -3 runs/gpu/gpu_tests.txt
python3 benchmarks/engine.py --presets mnist-ff-4x2000 mnist-bp-4x2000 --device cuda --matmul-size 8192 \
  --out runs/gpu/engine_cuda.json > runs/gpu/engine.txt 2>&1
cat runs/gpu/engine.txt
limit=$(python3 -c "print(int($minutes * 60 + 120))")
for p in mnist-ff-4x2000 mnist-ff-unsup-4x2000 mnist-bp-4x2000 mnist-ff-recurrent; do
  timeout "$limit" python3 -m ffcore.cli train --preset "$p" --data-dir "$data" --device cuda --quiet \
    --minutes "$minutes" --out "runs/gpu/$p" > "runs/gpu/$p.log" 2>&1 &
done
wait
for p in runs/gpu/*.log; do echo "== $p"; tail -12 "$p"; done
tar czf "$out/paper_gpu.tar.gz" --exclude=checkpoint -C runs gpu
ls -la "$out"
