#!/usr/bin/env bash
# One GPU session of about nine minutes (issue: models v2, item 5). Run from the repository root:
#   scripts/gpu_session.sh OUT BRATS_DIR [TRAIN_SECONDS] [TOTAL_SECONDS] [tiny]
# 1. trains side by side (diffuse_core.train.session), each DDPM time-boxed to TRAIN_SECONDS; RUNS picks them
#    (default flair_v,flair_vb,ct_v: the shipped FLAIR and CT DDPMs turned into v-prediction models, one FLAIR run with
#    scanner augmentation; see DDPM_RUNS there). FLAIR shards made beforehand in .gpu_pool/ (if any) are used first;
# 2. compares the FLAIR candidates with the shipped model on the same slices (diffuse_core.evaluation.candidates);
# 3. runs the README's full evaluation of the better candidate, with --write-cards, until TOTAL_SECONDS are spent
#    (TOTAL_SECONDS 0: neither 2 nor 3, e.g. where the BraTS cases are not on the GPU machine: compare on the CPU).
# Everything lands in OUT as at most 8 files (tar archives of float16 weights, logs, docs), each under 16 MiB.
set -u
OUT=${1:?OUT folder}; BRATS=${2:?BraTS folder}; BOX=${3:-230}; TOTAL=${4:-570}; TINY=${5:-}
START=$(date +%s); RUN=${RUN:-/tmp/diffuse_session}; EVAL=/tmp/diffuse_eval
export PYTHONUNBUFFERED=1 DIFFUSE_CACHE=${DIFFUSE_CACHE:-/tmp/diffuse_cache}
mkdir -p "$OUT" "$RUN/logs"; rm -rf "$EVAL"
logs() { cp "$RUN"/session.log "$RUN"/session.json "$RUN"/logs/ 2>/dev/null; tar -C "$RUN" -cf "$OUT/logs.tar" logs; }
(nvidia-smi --query-gpu=name,memory.total --format=csv; lscpu | grep -E "Model name|^CPU\(s\)") > "$RUN/logs/machine.txt" 2>&1
(sleep $(( BOX / 2 + 30 )); nvidia-smi > "$RUN/logs/smi_mid.txt" 2>&1; uptime >> "$RUN/logs/smi_mid.txt") &
CARRIED=; [ -d .gpu_pool ] && CARRIED="--carried .gpu_pool"
timeout $(( BOX + 120 )) python3 -m diffuse_core.train.session --out "$RUN" --seconds "$BOX" ${RUNS:+--runs $RUNS} \
  ${WORKERS:+--workers $WORKERS} $CARRIED ${TINY:+--tiny --workers 2} > "$RUN/logs/session.txt" 2>&1
echo "session exit $? at $(( $(date +%s) - START )) s" >> "$RUN/logs/times.txt"
python3 -c "import sys; from pathlib import Path; from diffuse_core.train.session import to_float16
[to_float16(p.parent) for p in Path(sys.argv[1]).glob('*/model.safetensors')]" "$RUN"   # also where the box overran
for r in flair_a flair_b flair_v flair_vb ct_ddpm ct_v; do
  [ -d "$RUN/$r" ] && tar -C "$RUN" --exclude=checkpoint.pt -cf "$OUT/$r.tar" "$r"; done
[ -d "$RUN/ct_saliency" ] && tar -C "$RUN" --exclude=checkpoint.pt -cf "$OUT/ct_saliency.tar" ct_saliency; logs
[ "$TOTAL" -eq 0 ] && exit 0
TINYC=${TINY:+--n-val 4 --n-healthy 2 --per-case 1 --steps 3}
python3 -m diffuse_core.evaluation.candidates --brats "$BRATS" --out "$RUN/logs/pick.json" $TINYC --samples "$RUN/logs/samples" \
  shipped=assets/ddpm $(for r in flair_a flair_b flair_v flair_vb; do [ -d "$RUN/$r" ] && echo "$r=$RUN/$r"; done) \
  > "$RUN/logs/pick.txt" 2>&1
echo "pick done at $(( $(date +%s) - START )) s" >> "$RUN/logs/times.txt"; logs
WIN=$(python3 -c "import json,sys; c=json.load(open(sys.argv[1]))['candidates']; \
print(max((k for k in c if k != 'shipped'), key=lambda k: c[k]['brats_dice']))" "$RUN/logs/pick.json") || WIN=flair_a
echo "$WIN" > "$RUN/logs/winner.txt"
mkdir -p "$EVAL/models"; cp -r "$RUN/$WIN" "$EVAL/models/ddpm"; rm -f "$EVAL/models/ddpm/log.csv"
LEFT=$(( START + TOTAL - $(date +%s) - 10 ))
if [ -n "$TINY" ]; then EARGS="--quick"; else EARGS="--n-val 16 --n-test 24 --seeds 0,1,2 --write-cards"; fi
[ "$LEFT" -gt 30 ] && timeout "$LEFT" python3 -m diffuse_core.cli evaluate $EARGS --brats "$BRATS" --model "$EVAL/models/ddpm" \
  --docs "$EVAL/docs" --batch-size 64 > "$RUN/logs/eval.txt" 2>&1
echo "eval exit (1 = skipped) $? at $(( $(date +%s) - START )) s" >> "$RUN/logs/times.txt"
[ -d "$EVAL/docs" ] && tar -C "$EVAL" -cf "$OUT/eval.tar" docs models; logs
