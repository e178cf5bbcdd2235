#!/usr/bin/env bash
# Does a refactor change any number? Trains a step-capped (hence deterministic) model and evaluates the
# shipped one, at REV and at the working tree, and compares the weights' sha256 and the metrics.
#   bash bench/accuracy/same_numbers.sh 15c071c        (REV: the commit before the refactor)
set -euo pipefail
rev=${1:?usage: bench/accuracy/same_numbers.sh REV}
here=$(git rev-parse --show-toplevel)
work=$(mktemp -d)
git -C "$here" worktree add -q --detach "$work/old" "$rev"
trap 'git -C "$here" worktree remove --force "$work/old"; rm -rf "$work"' EXIT
ln -s "$here/.venv" "$work/old/.venv"

measure() {  # tree out: python -m runs from the tree's root, so it imports that tree's code
  local tree=$1 out=$2 evaluate
  (cd "$tree" && .venv/bin/python -m retrieval.train --data procedural:photos=60,sketches=2 --out "$out" \
    --run-name r --max-steps 12 --eval-every 6 --threads 1 --seed 0 --quickdraw "$here/../shared/data/quickdraw-raw" \
    --quickdraw-limit 300 --pretrain-sketches procedural:photos=30,seed=1 --no-progress >"$out.train.log" 2>&1)
  evaluate=$( (cd "$tree" && [ -d retrieval/evaluation ] && echo retrieval.evaluation) || echo retrieval.evaluate)
  (cd "$tree" && .venv/bin/python -m "$evaluate" --model "$here/assets/model" --data procedural:photos=60,sketches=2 \
    --split val --gallery all --out "$out.eval" >"$out.eval.log" 2>&1)
  sha256sum "$out/r/best/model.safetensors" | cut -c1-16
  python3 -c "import json,sys; m=json.load(open(sys.argv[1])); print({k: m[k] for k in ('A@1','A@5','A@10','m@A','m@B')})" "$out.eval/metrics.json"
}
old=$(measure "$work/old" "$work/out_old")
new=$(measure "$here" "$work/out_new")
printf 'at %s:\n%s\nworking tree:\n%s\n' "$rev" "$old" "$new"
[ "$old" = "$new" ] && echo "same numbers" || { echo "NUMBERS DIFFER"; exit 1; }
