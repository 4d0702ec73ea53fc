#!/usr/bin/env bash
# One GPU session of about nine minutes (issue: models v2, item 5). Run from the repository root:
#   scripts/gpu_session.sh OUT BRATS_DIR [TRAIN_SECONDS] [TOTAL_SECONDS] [tiny]
# 1. trains side by side (diffuse_core.train.session): the FLAIR DDPM from the shipped one (RUNS=flair_a,flair_b,...
#    adds a candidate with scanner augmentation), a CT DDPM and the CT ACAT models, the DDPMs time-boxed to
#    TRAIN_SECONDS;
# 2. compares the FLAIR candidates with the shipped model on the same slices (diffuse_core.evaluation.candidates);
# 3. runs the README's full evaluation of the better candidate, with --write-cards, until TOTAL_SECONDS are spent
#    (TOTAL_SECONDS 0: no evaluation; run it in a later call once the candidates are looked at).
# Everything lands in OUT as at most 6 files (tar archives of float16 weights, logs, docs), each under 16 MiB.
set -u
OUT=${1:?OUT folder}; BRATS=${2:?BraTS folder}; BOX=${3:-230}; TOTAL=${4:-570}; TINY=${5:-}
START=$(date +%s); RUN=${RUN:-/tmp/diffuse_session}; EVAL=/tmp/diffuse_eval
export PYTHONUNBUFFERED=1 DIFFUSE_CACHE=${DIFFUSE_CACHE:-/tmp/diffuse_cache}
mkdir -p "$OUT" "$RUN/logs"; rm -rf "$EVAL"
logs() { cp "$RUN"/session.log "$RUN"/session.json "$RUN"/logs/ 2>/dev/null; tar -C "$RUN" -cf "$OUT/logs.tar" logs; }
(nvidia-smi --query-gpu=name,memory.total --format=csv; lscpu | grep -E "Model name|^CPU\(s\)") > "$RUN/logs/machine.txt" 2>&1
python3 -m diffuse_core.train.session --out "$RUN" --seconds "$BOX" ${RUNS:+--runs $RUNS} ${TINY:+--tiny --workers 2} > "$RUN/logs/session.txt" 2>&1
echo "session done at $(( $(date +%s) - START )) s" >> "$RUN/logs/times.txt"
for r in flair_a flair_b; do [ -d "$RUN/$r" ] && tar -C "$RUN" --exclude=checkpoint.pt -cf "$OUT/$r.tar" "$r"; done
[ -d "$RUN/ct_ddpm" ] && tar -C "$RUN" --exclude=checkpoint.pt -cf "$OUT/ct.tar" ct_ddpm ct_saliency; logs
TINYC=${TINY:+--n-val 4 --n-healthy 2 --per-case 1 --steps 3}
python3 -m diffuse_core.evaluation.candidates --brats "$BRATS" --out "$RUN/logs/pick.json" $TINYC --samples "$RUN/logs/samples" \
  shipped=assets/ddpm flair_a="$RUN/flair_a" flair_b="$RUN/flair_b" > "$RUN/logs/pick.txt" 2>&1
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
