#!/bin/sh
# kdseg sweep: a sweep over a tiny experiment with 2 workers and 2 seeds; a
# runner killed with SIGKILL and resumed runs every trial exactly once; a
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

# SIGKILL of the runner, then --resume: every trial finished exactly once
cat > long.yaml <<'YAML'
config: tiny.lua
base: {train.iterations: 30}
parameters:
  optim.lr: {values: [0.01, 0.02, 0.03, 0.04, 0.05, 0.06]}
YAML
"$kdseg" sweep long.yaml --workers 1 --quiet > long.log 2>&1 &
pid=$!
i=0
finished_count() { n=$(grep -c '"state":"finished"' runs/long/ledger.jsonl 2>/dev/null); echo "${n:-0}"; }
while [ "$(finished_count)" -lt 1 ] && [ $i -lt 600 ]; do sleep 0.05; i=$((i + 1)); done
kill -9 $pid 2>/dev/null && ok || fail "the runner ended before it could be killed"
wait $pid 2>/dev/null
# its trial is stopped with it (no orphan writes on into the sweep's folder)
i=0
while pgrep -f "runs_dir=runs/long" > /dev/null && [ $i -lt 50 ]; do sleep 0.1; i=$((i + 1)); done
pgrep -f "runs_dir=runs/long" > /dev/null && fail "a trial of the killed runner runs on as an orphan" || ok
"$kdseg" sweep long.yaml --resume --quiet > resume.log 2>&1 || { fail "resume"; tail -5 resume.log; }
dup=$(grep '"state":"finished"' runs/long/ledger.jsonl | sed 's/.*"trial":"\([^"]*\)".*/\1/' | sort | uniq -d)
all=$(grep '"state":"finished"' runs/long/ledger.jsonl | sed 's/.*"trial":"\([^"]*\)".*/\1/' | sort -u | wc -l)
[ -z "$dup" ] && [ "$all" = 6 ] && ok || fail "after resume: $all distinct finished trials, duplicates: '$dup'"
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
