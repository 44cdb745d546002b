#!/bin/sh
# kdseg sweep: a sweep over a tiny experiment with 2 workers and 2 seeds; a
# runner killed with SIGKILL twenty times and resumed runs every trial exactly
# once, with the metric of an uninterrupted sweep, and leaves no orphan; a
# failing trial is recorded while the others finish; median stopping stops a
# trial worse than the median; malformed specs are errors naming their line;
# the Slurm script. Prints "N passed, N failed".
set -u
SUITE=sweep
. "$(dirname "$0")/../lib.sh"
expect_error() { # expect_error NAME TEXT spec-content
    printf '%s\n' "$3" > bad.yaml
    out=$("$kdseg" sweep bad.yaml 2>&1); rc=$?
    if [ $rc != 0 ] && printf '%s' "$out" | grep -qF -- "$2"; then ok; else fail "$1: exit $rc, '$out' lacks '$2'"; fi
}

"$kdseg" synthcity --out data --train 8 --coarse 0 --val 2 --size 32x64 --seed 4 > /dev/null
cat > tiny.lua <<'LUA'
return {data = {root = "data", batch_size = 2, workers = 1, augment = {crop = {32, 64}}},
        train = {iterations = 4, log_every = 2, eval_every = 2, checkpoint_every = 0, grids = 0}}
LUA
cat > grid.yaml <<'YAML'
config: tiny.lua
method: grid
seeds: [1, 2]
parameters:
  optim.lr: {values: [0.01, 0.02]}
  model.name: {values: [bench_student, erfnet]}
metric: {name: final_miou, goal: maximize}
YAML
"$kdseg" sweep grid.yaml --workers 2 --quiet > grid.log 2>&1 || { fail "grid sweep ran"; tail -5 grid.log; }
n=$(grep -c '"state":"finished"' runs/grid/ledger.jsonl)
[ "$n" = 8 ] && ok || fail "grid sweep: $n of 8 trials finished"
grep -q "## Best configuration" runs/grid/report.md && ok || fail "report has the best configuration"
grep -q "kdseg train tiny.lua model.name=.* optim.lr=" runs/grid/report.md && ok || fail "best configuration as a command"
rm runs/grid/report.md
"$kdseg" sweep --report runs/grid > /dev/null 2>&1 && grep -q "kdseg train tiny.lua model.name=.* optim.lr=" runs/grid/report.md && ok \
    || fail "--report alone gives the best configuration as a command"
[ -f runs/grid/param_optim.lr.svg ] && [ -f runs/grid/report.html ] && ok || fail "plots and report.html"
grep -q "| 2 |" runs/grid/report.md && ok || fail "mean over 2 seeds per configuration"

# a failing trial (an unknown model) is recorded; the others finish; the
# sweep exits non-zero naming it
cat > fails.yaml <<'YAML'
config: tiny.lua
parameters:
  model.name: {values: [bench_student, no_such_model, erfnet]}
YAML
"$kdseg" sweep fails.yaml --workers 2 --quiet > fails.log 2>&1 && fail "a sweep with a failed trial exits 0" || ok
grep -q "sweep: 1 of 3 trials failed: .*no_such_model" fails.log && ok || { fail "the failure is named"; tail -3 fails.log; }
cat > allfail.yaml <<'YAML'
config: tiny.lua
parameters:
  model.name: {values: [nothing_a, nothing_b]}
YAML
"$kdseg" sweep allfail.yaml --quiet > allfail.log 2>&1 && fail "a sweep whose every trial failed exits 0" || ok
grep -q "2 of 2 trials failed" allfail.log && ok || { fail "every failure is counted"; tail -3 allfail.log; }
grep '"state":"failed"' runs/fails/ledger.jsonl | grep -q "unknown model 'no_such_model'" && ok || fail "failed trial recorded with its error"
[ "$(grep -c '"state":"finished"' runs/fails/ledger.jsonl)" = 2 ] && ok || fail "the other trials finished"
# a trial that failed for a cause since fixed (its data were missing) runs
# again with --resume --retry-failed, and only then
sed 's|root = "data"|root = "later_data"|' tiny.lua > later.lua
cat > later.yaml <<'YAML'
config: later.lua
method: grid
parameters:
  optim.lr: {values: [0.01]}
metric: {name: final_miou, goal: maximize}
YAML
"$kdseg" sweep later.yaml --quiet > later.log 2>&1 && fail "a sweep without its data exits 0" || ok
ln -s data later_data
"$kdseg" sweep later.yaml --resume --quiet > later.log 2>&1 && fail "--resume alone runs a failed trial again" || ok
"$kdseg" sweep later.yaml --resume --retry-failed --quiet > later.log 2>&1 && ok || { fail "--retry-failed"; tail -3 later.log; }
[ "$(tail -1 runs/later/ledger.jsonl | grep -c '"state":"finished"')" = 1 ] && ok || fail "the retried trial finished"
"$kdseg" sweep later.yaml --retry-failed --quiet > later.log 2>&1 && fail "--retry-failed without --resume" || ok
grep -q "goes with --resume" later.log && ok || fail "--retry-failed without --resume is named"

# oversubscribed (workers x threads over the cores, --oversubscribe), trials
# run with OMP_WAIT_POLICY=passive, so that spinning OpenMP threads do not
# hold the cores the other trials need; not otherwise, and a user's setting stays
cat > policy.lua <<'LUA'
local cfg = {x = 0, runs_dir = "runs", name = "t"}
if kd.config.arguments(arg, cfg, {"check"}).check then return end
local f = assert(io.open(cfg.runs_dir .. "/" .. cfg.name .. ".policy", "w"))
f:write(os.getenv("OMP_WAIT_POLICY") or "unset", "\n")
f:close()
LUA
printf 'program: policy.lua\nthreads: %s\nparameters:\n  x: {values: [1, 2]}\n' "$(nproc)" > policy.yaml
policies() { cat "$1"/policy/*.policy 2>/dev/null | sort -u | tr '\n' ' '; }
"$kdseg" sweep policy.yaml --workers 2 --oversubscribe --quiet --runs-dir over > policy.log 2>&1
[ "$(policies over)" = "passive " ] && ok || { fail "oversubscribed trials run passive: got '$(policies over)'"; tail -3 policy.log; }
"$kdseg" sweep policy.yaml --workers 2 --quiet --runs-dir fit > policy.log 2>&1
[ "$(policies fit)" = "unset " ] && ok || fail "trials that fit the cores keep libgomp's default: got '$(policies fit)'"
OMP_WAIT_POLICY=active "$kdseg" sweep policy.yaml --workers 2 --oversubscribe --quiet --runs-dir own > policy.log 2>&1
[ "$(policies own)" = "active " ] && ok || fail "a user's OMP_WAIT_POLICY stays: got '$(policies own)'"

# SIGKILL of the runner twenty times at random moments, each time resumed:
# every trial finishes exactly once, with the uninterrupted sweep's metric,
# and no trial of a killed runner runs on as an orphan
cat > long.yaml <<'YAML'
config: tiny.lua
base: {train.iterations: 150, threads: 1}
parameters:
  optim.lr: {values: [0.01, 0.02, 0.03, 0.04, 0.05, 0.06, 0.07, 0.08]}
YAML
"$kdseg" sweep long.yaml --workers 1 --quiet --runs-dir ref > long_ref.log 2>&1 || { fail "uninterrupted sweep"; tail -5 long_ref.log; }
seed=${KILL_SEED:-$(date +%s)}
echo "sweep kill seed $seed"
k=0; resume=""; orphans=0; killed=0
while [ $k -lt 20 ]; do
    delay=$(awk -v s="$seed" -v k="$k" 'BEGIN { srand(s + 31 * k); printf "%.2f", 0.3 + 1.2 * rand() }')
    "$kdseg" sweep long.yaml --workers 1 --quiet $resume > "long$k.log" 2>&1 &
    pid=$!
    sleep "$delay"
    running $pid && kill -9 $pid 2>/dev/null && killed=$((killed + 1))
    wait $pid 2>/dev/null
    i=0
    while pgrep -f "runs_dir=runs/long" > /dev/null && [ $i -lt 50 ]; do sleep 0.1; i=$((i + 1)); done
    pgrep -f "runs_dir=runs/long" > /dev/null && orphans=$((orphans + 1))
    k=$((k + 1)); resume="--resume"
done
echo "sweep: the runner was killed $killed times of 20 (it had ended the others)"
[ $orphans = 0 ] && ok || fail "a trial of a killed runner ran on as an orphan ($orphans times)"
"$kdseg" sweep long.yaml --resume --quiet > resume.log 2>&1 || { fail "resume"; tail -5 resume.log; }
dup=$(grep '"state":"finished"' runs/long/ledger.jsonl | sed 's/.*"trial":"\([^"]*\)".*/\1/' | sort | uniq -d)
all=$(grep '"state":"finished"' runs/long/ledger.jsonl | sed 's/.*"trial":"\([^"]*\)".*/\1/' | sort -u | wc -l)
[ -z "$dup" ] && [ "$all" = 8 ] && ok || fail "after 20 kills and resume: $all distinct finished trials, duplicates: '$dup'"
metrics() { "$kdseg" "$top/tests/sweep/finished_metrics.lua" "$1"; }
ref_metrics=$(metrics ref/long/ledger.jsonl) && [ "$(echo "$ref_metrics" | wc -l)" = 8 ] && \
    [ "$ref_metrics" = "$(metrics runs/long/ledger.jsonl)" ] && ok || \
    { fail "the killed sweep's metrics differ from the uninterrupted one's"; metrics ref/long/ledger.jsonl; metrics runs/long/ledger.jsonl; }
"$kdseg" sweep long.yaml --quiet > again.log 2>&1 && fail "a second run without --resume must refuse" || \
    grep -q "add --resume" again.log && ok || fail "refusal names --resume"

# median stopping: a trial that cannot learn (lr 0) is stopped
cat > early.yaml <<'YAML'
config: tiny.lua
base: {train.iterations: 40, train.eval_every: 4, data.val.limit: 1}
parameters:
  optim.lr: {values: [0.05, 0.05, 0.0]}
early_terminate: {type: median, min_evals: 2}
YAML
"$kdseg" sweep early.yaml --workers 1 --quiet > early.log 2>&1
grep '"state":"stopped"' runs/early/ledger.jsonl | grep -q '"optim.lr":0' && ok || { fail "the lr 0 trial was not stopped"; cat runs/early/ledger.jsonl | cut -c1-160; }

# the Slurm job array
"$kdseg" sweep grid.yaml --emit-slurm slurm > slurm.log 2>&1
grep -q "^#SBATCH --array=0-7$" slurm/grid.slurm && ok || fail "array range"
grep -q 'sweep grid.yaml --trial "$SLURM_ARRAY_TASK_ID"' slurm/grid.slurm && ok || fail "command of one task"

# malformed specs, each naming its line
expect_error "YAML syntax" "bad.yaml:3" "config: tiny.lua
parameters:
  optim.lr: {values: [0.1, 0.2}"
expect_error "a name leaving the runs folder" "bad.yaml:2: name must be a plain file name" "config: tiny.lua
name: ..
parameters: {optim.lr: {values: [1]}}"
expect_error "unknown key" "bad.yaml:2: unknown key 'workers'" "config: tiny.lua
workers: 3
parameters: {optim.lr: {values: [1]}}"
expect_error "wrong type" "bad.yaml:2: max_trials must be a positive integer" "config: tiny.lua
max_trials: many
parameters: {optim.lr: {values: [1]}}"
expect_error "empty range" "bad.yaml:5: parameter 'optim.lr': empty range" "config: tiny.lua
method: random
max_trials: 2
parameters:
  optim.lr: {distribution: uniform, min: 1,
             max: 0.5}"
expect_error "path not in the config" "bad.yaml:3: override: unknown config key 'optim.learning_rate'" "config: tiny.lua
parameters:
  optim.learning_rate: {values: [0.1]}"
expect_error "base path not in the config" "bad.yaml:2: override: unknown config key 'train.iters'" "config: tiny.lua
base: {train.iters: 3}
parameters: {optim.lr: {values: [1]}}"
expect_error "a program's parameter path" "bad.yaml:3: kdseg: override: unknown config key 'students.weights.pixl_kd'" "program: experiments/semisup_kd.lua
parameters:
  students.weights.pixl_kd: {values: [1]}"
finish
