#!/usr/bin/env bash
# The paper-size presets on one GPU, each under a time budget, plus the GPU tests and the engine
# benchmark; everything but the checkpoints packed into one archive.
#
#   bash benchmarks/paper_gpu.sh DATA_DIR OUT_DIR SOLO_MINUTES SHARED_MINUTES
#
# First, one after the other, alone on the GPU (SOLO_MINUTES each): mnist-ff-4x2000 and its
# backprop twin (about 3 minutes and 30 s on an H200). Then mnist-ff-unsup-4x2000 and
# mnist-ff-recurrent at once (SHARED_MINUTES each: sharing the GPU, each runs at a fraction of its
# solo speed; measured 2026-11-30, four at once: the supervised net did 45 epochs in 6 minutes
# that it does in 2.2 alone). A run that cannot do its preset's epochs in its minutes trains
# fewer (ffcore train --minutes: decided while the learning rate is at its peak, so it still
# cools down); its report.json says how many. DEVICE (default cuda) and EXTRA (more `ffcore train`
# options, e.g. "--widths 32,32 --epochs 1" for a dry run on a CPU) come from the environment.
set -u
data=$1 out=$2 solo=$3 shared=$4
device=${DEVICE:-cuda} extra=${EXTRA:-}
export PYTHONPATH=$PWD PYTHONUNBUFFERED=1 OMP_NUM_THREADS=${OMP_NUM_THREADS:-3}
mkdir -p "$out" runs/gpu
{ date -u; nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv 2>&1;
  python3 -c "import torch; print('torch', torch.__version__, torch.version.cuda)"; nproc; } > runs/gpu/machine.txt 2>&1
if [ "$device" = cuda ]; then
  python3 -m pytest -q -p no:cacheprovider tests/ffcore/test_device.py > runs/gpu/gpu_tests.txt 2>&1
  tail -3 runs/gpu/gpu_tests.txt
  python3 benchmarks/engine.py --presets mnist-ff-4x2000 mnist-bp-4x2000 --device cuda --matmul-size 8192 \
    --three-passes --out runs/gpu/engine_cuda.json > runs/gpu/engine.txt 2>&1
  cat runs/gpu/engine.txt
fi
train() {  # preset minutes
  timeout "$(python3 -c "print(int($2 * 60 + 120))")" python3 -m ffcore.cli train --preset "$1" --data-dir "$data" \
    --device "$device" --quiet --minutes "$2" --out "runs/gpu/$1" $extra > "runs/gpu/$1.log" 2>&1
}
for p in mnist-ff-4x2000 mnist-bp-4x2000; do train "$p" "$solo"; done
for p in mnist-ff-unsup-4x2000 mnist-ff-recurrent; do train "$p" "$shared" & done
wait
for p in runs/gpu/*.log; do echo "== $p"; tail -12 "$p"; done
tar czf "$out/paper_gpu.tar.gz" --exclude=checkpoint --exclude=resume -C runs gpu
ls -la "$out"
