#!/usr/bin/env bash
# Issue 12, lever 2: the finegrained stage with each --loss, several seeds, at EQUAL step counts, all
# processes at once on one machine (one CPU thread each for data, the network on DEVICE). Every run
# starts from the same pre-trained checkpoint INIT and keeps the val carve of seed 0 (--split-seed 0).
# A 30-step probe first measures seconds per step; the step count is the largest multiple of 100
# (at most STEPS) that fits BUDGET seconds with all runs at once, so every run gets the same steps and
# the same step-driven cosine schedule (minutes set out of reach). Results: OUTDIR/*.tgz + logs.
#   bash device_run.sh CODE DATA INIT OUTDIR [DEVICE=cuda] [STEPS=2500] [BUDGET=360]
#   env: PY=python3 SEEDS="0 1 2" LOSSES="infonce recall infonce+recall" SLOWDOWN=1.8 (all runs vs the probe alone)
set -u
PY=${PY:-python3}
CODE=$1 DATA=$2 INIT=$3 OUTDIR=$4 DEV=${5:-cuda} STEPS=${6:-2500} BUDGET=${7:-360}
SEEDS=${SEEDS:-0 1 2} LOSSES=${LOSSES:-infonce recall infonce+recall} SLOWDOWN=${SLOWDOWN:-1.8}
cd "$CODE" || exit 1
export PYTHONUNBUFFERED=1 OMP_NUM_THREADS=1 MKL_NUM_THREADS=1
RUNS=$OUTDIR/runs
mkdir -p "$RUNS"
{ date -u; uname -a; nproc --all; grep -m1 "model name" /proc/cpuinfo; nvidia-smi -L 2>&1;
  "$PY" -c "import torch, numpy; print('torch', torch.__version__, 'cuda', torch.cuda.is_available(), 'numpy', numpy.__version__)"; } > "$OUTDIR/machine.txt" 2>&1
common=(--data "$DATA" --init-from "$INIT" --stages finegrained --minutes-finegrained 1000 --threads 1
        --no-progress --split-seed 0 --out "$RUNS")
probe() {  # seconds per step of one process alone on $1
  rm -rf "$RUNS/probe"
  timeout 120 "$PY" -m retrieval.train "${common[@]}" --device "$1" --run-name probe --max-steps 30 \
    --eval-every 1000 --save-every 1000 > "$OUTDIR/probe_$1.log" 2>&1 || return 1
  "$PY" -c "import pandas as p; l=p.read_csv('$RUNS/probe/log.csv').dropna(subset=['loss']); print((l.elapsed_s.iloc[-1]-l.elapsed_s.iloc[9])/(len(l)-10))"
}
if ! SPS=$(probe "$DEV"); then
  echo "probe on $DEV failed:"; tail -25 "$OUTDIR/probe_$DEV.log"; DEV=cpu; SPS=$(probe cpu) || exit 1
fi
N=$(( $(wc -w <<< "$SEEDS") * $(wc -w <<< "$LOSSES") ))
N_STEPS=$("$PY" -c "print(min($STEPS, max(100, int($BUDGET / ($SPS * $SLOWDOWN)) // 100 * 100)))")
echo "device $DEV: ${SPS} s/step alone; $N runs x $N_STEPS steps" | tee "$OUTDIR/plan.txt"
start=$(date +%s)
pids=()
for seed in $SEEDS; do
  for loss in $LOSSES; do
    name="${loss/+/_}__s$seed"
    timeout $((BUDGET + 90)) "$PY" -m retrieval.train "${common[@]}" --device "$DEV" --seed "$seed" \
      --loss "$loss" --max-steps "$N_STEPS" --run-name "$name" > "$RUNS/$name.log" 2>&1 &
    pids+=($!)
  done
done
(sleep 90; { nvidia-smi; uptime; } > "$OUTDIR/nvidia-smi_90s.txt" 2>&1) &
wait "${pids[@]}"
echo "all runs ended after $(( $(date +%s) - start )) s" | tee -a "$OUTDIR/plan.txt"
cd "$RUNS" || exit 1
rm -rf probe
tar czf "$OUTDIR/logs.tgz" ./*.log ./*/log.csv ./*/config.json ./*/best/model.json ./*/curve.png
i=0
for d in */; do  # best weights, three runs per archive (each file back must stay under 16 MiB)
  echo "${d%/}/best/model.safetensors" >> "$OUTDIR/w$((i / 3)).lst"; i=$((i + 1))
done
for l in "$OUTDIR"/w*.lst; do tar cf "${l%.lst}.tar" -T "$l"; rm "$l"; done
rm -rf "$RUNS"
ls -la "$OUTDIR"
