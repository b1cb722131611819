#!/usr/bin/env bash
# The Slurm test (issue 11), on a real one-node Slurm (test/slurm/cluster.sh):
#  1. `grid --study study1 --protocol paper --profile smoke --emit slurm --submit`: a 9-task job
#     array plus the job that renders notebook 02 (afterok on the array);
#  2. waits; checks every array task COMPLETED, `grid --json` reports all 9 runs finished, each
#     run's metrics.json equals the metrics recomputed from its predictions.csv, and the notebook
#     rendered by the last job reused all 9 runs (trained nothing);
#  3. interrupts one task mid-run twice — `scontrol requeue` (what preemption does) and `scancel`
#     followed by `sbatch --array=<i>` (how a user reruns one cancelled task) — and checks that it
#     resumed from its checkpoint each time and ended with predictions and metrics identical to an
#     uninterrupted run of the same task.
# Usage: npm run test:slurm [-- --keep]   (--keep leaves the cluster running; otherwise the daemons
# this test started are stopped). Run as root. Results: .cache/slurm-test/ (scripts, logs, notebook).
# Run directories of step 1 are the notebook's (runs/study1/paper/smoke/); runs already there
# are moved aside to runs/study1/paper/smoke.before-slurm-test-<time>, never deleted.
set -euo pipefail
cd "$(dirname "$0")/../.."
ROOT="$PWD"
KEEP=0
for a in "$@"; do case "$a" in --keep) KEEP=1 ;; *) echo "unknown argument '$a' (use --keep)" >&2; exit 2 ;; esac; done
T="$ROOT/.cache/slurm-test"
CLI=(node "$ROOT/dist/lib/cli.js")
export SLURM_CONF="$ROOT/.cache/slurm/slurm.conf"
export COVIDCT_DEBUG=""
log() { echo "[slurm-test $(date -u +%T)] $*"; }
fail() { echo "[slurm-test] FAIL: $*" >&2; exit 1; }
t_start=$(date +%s)

[ -f "$ROOT/dist/lib/cli.js" ] || fail "dist/ is not built: run npm run build first."
test/slurm/cluster.sh start
cleanup() { if [ "$KEEP" = 0 ]; then test/slurm/cluster.sh stop || true; else log "cluster left running (SLURM_CONF=$SLURM_CONF; stop it with test/slurm/cluster.sh stop)"; fi; }
trap cleanup EXIT

# Wait until none of the given job ids is in the queue (timeout in seconds).
wait_jobs() {
  local timeout="$1"; shift
  local t0; t0=$(date +%s)
  while squeue -h -j "$(IFS=,; echo "$*")" 2>/dev/null | grep -q .; do
    [ $(( $(date +%s) - t0 )) -lt "$timeout" ] || { squeue; fail "jobs $* still queued after $timeout s"; }
    sleep 2
  done
}
# Job states of a job id (one line per array task).
states() { scontrol show job "$1" | sed -n 's/.*JobState=\([A-Z_]*\).*/\1/p'; }
epochs() { node -e 'try{console.log(JSON.parse(require("fs").readFileSync(process.argv[1]+"/history.json","utf8")).length)}catch{console.log(0)}' "$1"; }

rm -rf "$T" && mkdir -p "$T"
SMOKE="$ROOT/runs/study1/paper/smoke"
if [ -d "$SMOKE" ] && [ -n "$(ls -A "$SMOKE")" ]; then
  aside="$SMOKE.before-slurm-test-$(date -u +%Y%m%dT%H%M%SZ)"
  mv "$SMOKE" "$aside"
  log "moved the existing smoke runs aside to $aside (nothing deleted)"
fi

# ---- 1. the smoke grid of Study I, submitted by covid-ct itself -----------------------------
t1=$(date +%s)
"${CLI[@]}" grid --study study1 --protocol paper --profile smoke --emit slurm --out "$T/grid" --submit | tee "$T/submit.txt"
ARRAY=$(sed -n 's/^submitted study1.sbatch: job \([0-9]*\)$/\1/p' "$T/submit.txt")
RENDER=$(sed -n 's/^submitted study1-render.sbatch: job \([0-9]*\)$/\1/p' "$T/submit.txt")
[ -n "$ARRAY" ] && [ -n "$RENDER" ] || fail "grid --submit did not print both job ids"
scontrol show job "$RENDER" | grep -q "Dependency=afterok:${ARRAY}" || fail "render job $RENDER does not depend afterok on array $ARRAY"
wait_jobs 1800 "$ARRAY" "$RENDER"
log "grid + render finished in $(( $(date +%s) - t1 )) s"

# ---- 2. every task completed, every run finished and consistent, the notebook reused them all ---
[ "$(states "$ARRAY" | sort -u)" = "COMPLETED" ] || { states "$ARRAY"; fail "not every array task COMPLETED (logs: $T/grid/logs)"; }
[ "$(states "$ARRAY" | wc -l)" = 9 ] || fail "expected 9 array tasks"
[ "$(states "$RENDER")" = "COMPLETED" ] || fail "render job $RENDER: $(states "$RENDER") (log: $(ls "$T"/grid/logs/study1-render-*.out))"
"${CLI[@]}" grid --study study1 --protocol paper --profile smoke --json > "$T/grid.json"
node -e '
  const runs = JSON.parse(require("fs").readFileSync(process.argv[1], "utf8"));
  const { evaluateRun, readRunMetrics } = require(process.argv[2] + "/dist/lib/diagnosis");
  if (runs.length !== 9) throw new Error(`grid --json lists ${runs.length} runs, expected 9`);
  for (const r of runs) {
    if (r.state !== "finished") throw new Error(`${r.runDir} is ${r.state}`);
    const m = readRunMetrics(r.runDir), e = evaluateRun(r.runDir);
    for (const k of ["auc", "accuracy", "f1", "precision", "recall"]) if (Math.abs(m.test[k] - e.test[k]) > 1e-9) throw new Error(`${r.runDir}: metrics.json test.${k} ${m.test[k]} ≠ ${e.test[k]} from predictions.csv`);
    console.log(`finished, metrics agree with predictions: ${r.runDir} (test AUC ${m.test.auc.toFixed(3)})`);
  }' "$T/grid.json" "$ROOT"
grep -q '9 runs (9 reused)' "$T/grid/notebooks/02-study1.ipynb" || fail "the rendered notebook did not report '9 runs (9 reused)': it trained (see $T/grid/notebooks/02-study1.ipynb)"
log "notebook 02 rendered from the finished runs: 9 runs (9 reused), nothing trained"

# ---- 3. a task interrupted mid-run resumes from its checkpoint to the same result -------------
# 40 epochs instead of 3 so there is a middle to interrupt; task 0 (tiny DenseNet, covid-seg).
t3=$(date +%s)
for v in ref cut; do
  "${CLI[@]}" grid --study study1 --protocol paper --profile smoke --epochs 40 --runs "$T/$v-runs" --emit slurm --out "$T/$v" >/dev/null
done
RUN_REF="$T/ref-runs/study1/paper/smoke/tiny-densenet-covid-seg-seed1"
RUN_CUT="$T/cut-runs/study1/paper/smoke/tiny-densenet-covid-seg-seed1"
REF=$(sbatch --parsable --array=0 "$T/ref/study1.sbatch")
CUT=$(sbatch --parsable --array=0 "$T/cut/study1.sbatch")
wait_epochs() {  # wait_epochs <run dir> <n>: until history.json has ≥ n epochs
  local t0; t0=$(date +%s)
  until [ "$(epochs "$1")" -ge "$2" ]; do
    [ -f "$1/metrics.json" ] && fail "$1 finished before epoch $2: nothing left to interrupt"
    [ $(( $(date +%s) - t0 )) -lt 600 ] || fail "$1 did not reach epoch $2 in 600 s"
    sleep 0.5
  done
}
wait_epochs "$RUN_CUT" 5
e1=$(epochs "$RUN_CUT")
scontrol requeue "${CUT}_0"
log "requeued task ${CUT}_0 after $e1 epochs (as a preemption would)"
sleep 1
# A requeued job is held ~2 min (Slurm's requeue delay); let it start now.
scontrol update jobid="${CUT}_0" StartTime=now
wait_epochs "$RUN_CUT" $(( e1 + 5 ))
e2=$(epochs "$RUN_CUT")
scancel "${CUT}_0"
wait_jobs 120 "$CUT"
log "cancelled task ${CUT}_0 after $e2 epochs: $(states "$CUT")"
[ -f "$RUN_CUT/metrics.json" ] && fail "$RUN_CUT finished before it could be cancelled"
[ -f "$RUN_CUT/.lock" ] && fail "the cancelled task left its lock behind"
"${CLI[@]}" grid --study study1 --protocol paper --profile smoke --epochs 40 --runs "$T/cut-runs" | grep -q "^partial .*tiny-densenet-covid-seg-seed1" || fail "the cancelled run is not listed as partial"
AGAIN=$(sbatch --parsable --array=0 "$T/cut/study1.sbatch")
log "resubmitted it alone: sbatch --array=0 $T/cut/study1.sbatch → job $AGAIN"
wait_jobs 900 "$REF" "$AGAIN"
[ "$(states "$REF")" = COMPLETED ] && [ "$(states "$AGAIN")" = COMPLETED ] || fail "reference $(states "$REF"), resumed $(states "$AGAIN")"
LOGS="$T/cut/logs"
grep -q "restart 1: .* --resume$" "$LOGS/study1-${CUT}_0.out" || fail "the requeued attempt did not run with --resume (see $LOGS)"
grep -q "task ${AGAIN}_0 .* --resume$" "$LOGS/study1-${AGAIN}_0.out" || fail "the resubmitted task did not run with --resume"
# The resumed attempts trained only the epochs after their checkpoint.
first_epoch() { sed -n "/$1/,\$p" "$2" | sed -n 's/^epoch \([0-9]*\):.*/\1/p' | head -1; }
f2=$(first_epoch "restart 1:" "$LOGS/study1-${CUT}_0.out"); f3=$(first_epoch "task ${AGAIN}_0" "$LOGS/study1-${AGAIN}_0.out")
[ "$f2" -gt 1 ] && [ "$f3" -gt "$f2" ] || fail "resumed attempts started at epochs $f2 and $f3: not from their checkpoints"
log "attempt 2 started at epoch $f2, attempt 3 at epoch $f3 (of 40)"
cmp "$RUN_REF/predictions.csv" "$RUN_CUT/predictions.csv" || fail "predictions of the interrupted run differ from the uninterrupted one"
cmp <(node -e 'const m=require(process.argv[1]);delete m.bestEpoch;console.log(JSON.stringify(m))' "$RUN_REF/metrics.json") \
    <(node -e 'const m=require(process.argv[1]);delete m.bestEpoch;console.log(JSON.stringify(m))' "$RUN_CUT/metrics.json") || fail "metrics differ"
cmp "$RUN_REF/metrics.json" "$RUN_CUT/metrics.json" || fail "metrics.json differ"
log "interrupted twice, resumed twice: predictions.csv and metrics.json identical to the uninterrupted run ($(( $(date +%s) - t3 )) s)"
log "PASS in $(( $(date +%s) - t_start )) s"
