#!/usr/bin/env bash
# One prepared GPU session, sized for a short lease (about 8 minutes of GPU time): the CUDA tests, the `best`
# recipe trained twice side by side on one GPU (grown 4->12 layers and from scratch), test evaluation of both,
# the throughput table, and the better model packaged (float16) to bring back.
#
#   bash benchmarks/gpu_session.sh [TRAIN_MINUTES]        # default 4; needs data/dasher and a CUDA torch
#
# A CPU smoke run of the same steps (to check the script before spending a lease on it):
#   DEVICE=cpu PRESET=quick GROW=2@0.3 POSITIONS=20 THROUGHPUT=0 bash benchmarks/gpu_session.sh 0.2
#
# Results land in $OUT (default gpu-out/): session.log (everything printed), results.tar.gz (run folders without
# checkpoints, eval tables, throughput table, pytest log) and model.tar.part-* (cat them together, untar).
set -u
OUT=${OUT:-gpu-out}
MIN=${1:-4}
W=${GPU_WORK:-/tmp/nextchar-gpu}
DATA=${DATA:-data/dasher}
DEVICE=${DEVICE:-cuda}
PRESET=${PRESET:-best}
GROW=${GROW:-4@0.3}
POSITIONS=${POSITIONS:-2000}
mkdir -p "$OUT" "$W"
export PYTHONPATH=$PWD/src${PYTHONPATH:+:$PYTHONPATH} PYTHONUNBUFFERED=1
exec > >(tee -a "$OUT/session.log") 2>&1
py=${PYTHON:-python3}
t0=$SECONDS
stamp() { echo "== [$((SECONDS - t0))s] $*"; }

stamp "environment"
command -v nvidia-smi >/dev/null && nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader
$py -c "import torch, numpy, safetensors, typer; print('torch', torch.__version__, 'cuda', torch.version.cuda, \
torch.cuda.get_device_name() if torch.cuda.is_available() else 'no GPU', '| numpy', numpy.__version__)" || exit 1
nproc

stamp "CUDA tests (in the background)"
timeout 240 $py -m pytest -q -p no:cacheprovider tests/test_gpu.py >"$W/pytest-gpu.log" 2>&1 &
tests_pid=$!

# train NAME ARGS...: one training run; if it fails within its first 2 minutes (a compile problem on this
# torch, say), it is run again without torch.compile, so the lease still yields a model.
train() {
    local name=$1; shift
    local start=$SECONDS
    if ! $py -m nextchar train --data "$DATA" --out "$W/$name" --preset "$PRESET" --max-minutes "$MIN" --device "$DEVICE" \
        --threads 4 "$@" >"$W/$name.log" 2>&1; then
        tail -5 "$W/$name.log"
        if ((SECONDS - start < 120)); then
            echo "$name failed early: again without torch.compile"
            mv "$W/$name.log" "$W/$name.failed.log"
            rm -rf "${W:?}/$name"
            $py -m nextchar train --data "$DATA" --out "$W/$name" --preset "$PRESET" --max-minutes "$MIN" --device "$DEVICE" \
                --threads 4 --no-compile "$@" >"$W/$name.log" 2>&1 || tail -5 "$W/$name.log"
        fi
    fi
}

stamp "training $PRESET (grown from $GROW) and $PRESET (from scratch), $MIN minutes each, side by side"
train best-grow --grow "$GROW" &
grow_pid=$!
train best-scratch &
scratch_pid=$!
wait $grow_pid $scratch_pid
tail -n 3 "$W/best-grow.log" "$W/best-scratch.log"

stamp "test evaluation ($POSITIONS positions per language)"
eval_pids=()
for name in best-grow best-scratch; do
    if [ -f "$W/$name/result.json" ]; then
        $py -m nextchar eval --run "$W/$name" --split test --device "$DEVICE" --positions "$POSITIONS" \
            >"$W/$name.test.txt" 2>&1 &
        eval_pids+=($!)
    fi
done
wait "${eval_pids[@]}"
for name in best-grow best-scratch; do
    echo "-- $name"; tail -n 3 "$W/$name.test.txt" 2>/dev/null
done

pack() {
    # run folders without checkpoints, logs, tables: one archive (the lease returns at most 8 files)
    tar czf "$OUT/results.tar.gz" -C "$W" --exclude=checkpoints --exclude='*.safetensors' . 2>/dev/null
}

stamp "packaging the better model (lower best dev loss) as float16"
winner=$($py - "$W" <<'EOF'
import json, pathlib, sys
runs = [(json.loads(p.read_text())["best_dev_loss"], p.parent.name) for p in pathlib.Path(sys.argv[1]).glob("*/result.json")]
print(min(runs)[1] if runs else "")
EOF
)
if [ -n "$winner" ] && [ -f "$W/$winner/eval_test.json" ]; then
    $py -m nextchar package --run "$W/$winner" --out "$W/pkg/$winner" --half \
        --command "nextchar train --preset $PRESET --max-minutes $MIN $( [ "$winner" = best-grow ] && echo "--grow $GROW")" &&
    tar cf - -C "$W/pkg" "$winner" | split -b 15m - "$OUT/model.tar.part-"
fi
wait $tests_pid
tail -n 5 "$W/pytest-gpu.log"
pack

[ "${THROUGHPUT:-1}" = 0 ] && { stamp "done (no throughput table)"; exit 0; }
stamp "throughput table"
timeout 200 $py benchmarks/train_throughput.py --presets modern-12l,best --batch 128 --context 256 --seconds 3 \
    --ckpt-preset best --ckpt-context 512 --ckpt-batch 32 --ckpt-eager >"$W/throughput.txt" 2>&1
cat "$W/throughput.txt"
pack
stamp "done"
