#!/usr/bin/env bash
# The finegrained stage of several runs at once, at EQUAL step counts, on one machine (the GPU machine
# of issue 12's checks): one process per run, one CPU thread each for data, the network on DEVICE.
# Equal steps (minutes set out of reach, the cosine schedule then follows the steps) make machine load
# change nothing but wall time. SPEC has one run per line: NAME INIT SEED [more retrieval.train args],
# INIT a checkpoint folder (pre-trained stages) relative to CODE; every run keeps the val carve of seed 0.
# A 30-step probe of the first run measures seconds per step; the step count is the largest multiple
# of 100, at most STEPS, that fits BUDGET seconds with all runs at once (SLOWDOWN: all runs vs the probe).
# Leaves OUTDIR/{machine.txt,plan.txt,nvidia-smi_90s.txt,logs.tgz,w*.tar (best weights, 3 runs each)}.
#   bash bench/accuracy/device_finegrained.sh CODE DATA SPEC OUTDIR [DEVICE=cuda] [STEPS=2500] [BUDGET=360]
#   env: PY=python3 SLOWDOWN=1.0
set -u
PY=${PY:-python3}
CODE=$1 DATA=$2 SPEC=$3 OUTDIR=$4 DEV=${5:-cuda} STEPS=${6:-2500} BUDGET=${7:-360} SLOWDOWN=${SLOWDOWN:-1.0}
cd "$CODE" || exit 1
export PYTHONUNBUFFERED=1 OMP_NUM_THREADS=1 MKL_NUM_THREADS=1
RUNS=$OUTDIR/runs
mkdir -p "$RUNS"
{ date -u; uname -a; nproc --all; grep -m1 "model name" /proc/cpuinfo; nvidia-smi -L 2>&1;
  "$PY" -c "import torch, numpy; print('torch', torch.__version__, 'cuda', torch.cuda.is_available(), 'numpy', numpy.__version__)"; } > "$OUTDIR/machine.txt" 2>&1
common=(--data "$DATA" --stages finegrained --minutes-finegrained 1000 --threads 1 --no-progress --split-seed 0 --out "$RUNS")
read -r _ probe_init _ < "$SPEC"
rm -rf "$RUNS/probe"
if ! timeout 150 "$PY" -m retrieval.train "${common[@]}" --init-from "$probe_init" --device "$DEV" --run-name probe \
    --max-steps 30 --eval-every 1000 --save-every 1000 > "$OUTDIR/probe.log" 2>&1; then
  echo "probe on $DEV failed:"; tail -25 "$OUTDIR/probe.log"; exit 1
fi
SPS=$("$PY" -c "import pandas as p; l=p.read_csv('$RUNS/probe/log.csv').dropna(subset=['loss']); print((l.elapsed_s.iloc[-1]-l.elapsed_s.iloc[9])/(len(l)-10))")
N_STEPS=$("$PY" -c "print(min($STEPS, max(100, int($BUDGET / ($SPS * $SLOWDOWN)) // 100 * 100)))")
echo "device $DEV: ${SPS} s/step alone; $(grep -c . "$SPEC") runs x $N_STEPS steps" | tee "$OUTDIR/plan.txt"
rm -rf "$RUNS/probe"
start=$(date +%s)
pids=()
while read -r name init seed extra; do
  [ -n "$name" ] || continue
  # shellcheck disable=SC2086  # extra holds several arguments
  timeout $((BUDGET + 120)) "$PY" -m retrieval.train "${common[@]}" --device "$DEV" --init-from "$init" \
    --seed "$seed" --max-steps "$N_STEPS" --run-name "$name" $extra > "$RUNS/$name.log" 2>&1 &
  pids+=($!)
done < "$SPEC"
(sleep 90; { nvidia-smi; uptime; } > "$OUTDIR/nvidia-smi_90s.txt" 2>&1) &
wait "${pids[@]}"
echo "all runs ended after $(( $(date +%s) - start )) s" | tee -a "$OUTDIR/plan.txt"
cd "$RUNS" || exit 1
tar czf "$OUTDIR/logs.tgz" ./*.log ./*/log.csv ./*/config.json ./*/best/model.json ./*/curve.png
i=0
for d in */; do  # best weights, three runs per archive (each file back must stay under 16 MiB)
  echo "${d%/}/best/model.safetensors" >> "$OUTDIR/w$((i / 3)).lst"; i=$((i + 1))
done
for l in "$OUTDIR"/w*.lst; do tar cf "${l%.lst}.tar" -T "$l"; rm "$l"; done
rm -rf "$RUNS"
ls -la "$OUTDIR"
