#!/bin/sh
# The GPU half of "Speed on every device", as one run on the lent machine (the `device` tool's `run`, in the
# repository root): the packages the backend needs that the machine lacks, from carried wheels (.whl/), then the
# device check and the bench on the GPU, their JSON into $OUT. Preparing the tree and the wheels: docs/speed.md,
# "Running it on a lent GPU". Dry run here: DEVICE=cpu OUT=/tmp/out ROUNDS=2 sh tools/device_run.sh
set -u
DEVICE=${DEVICE:-cuda}
OUT=${OUT:-/tmp/routescope-device}
ROUNDS=${ROUNDS:-6}
mkdir -p "$OUT"
if [ -d .whl ]; then
    python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl \
        || exit 1
    export PYTHONPATH=/tmp/site
fi
export PYTHONPATH="${PYTHONPATH:+$PYTHONPATH:}$(pwd)"
PY=${PYTHON:-python3}
"$PY" -c "import torch; print('torch', torch.__version__, 'cuda', torch.cuda.is_available())"
# agreement with the CPU, batch-1 latency and batch-256 throughput against dense, host reads and reported syncs
"$PY" -m tools.device_check --device "$DEVICE" --rounds "$ROUNDS" --save "$OUT/device_check_$DEVICE.json"
# the bundled flagships and their dense network (batch 1 and batch 256), alternately
"$PY" -m tools.bench --device "$DEVICE" --rounds "$ROUNDS" --checkpoint models/pretrained/resnet20_fmnist.pt \
    $(for n in skipnet_resnet20_fmnist_a0.75_fta6kd dsnet_resnet20_fmnist_sn12_grid4_hw6 condconv_resnet20_fmnist \
        dgconv_resnet20_fmnist_b0.6_e8 early_exit_resnet20_fmnist; do echo --checkpoint models/pretrained/$n.pt; done) \
    --save "$OUT/bench_$DEVICE.json"
# paper scale: ResNet-110 at 32 x 32 and ResNet-50 at 224 x 224, batch 1 and batch 64 forced image by image
"$PY" -m tools.bench --device "$DEVICE" --rounds "$ROUNDS" --scale paper --paper-batch 64 \
    --save "$OUT/bench_paper_$DEVICE.json"
ls -la "$OUT"
