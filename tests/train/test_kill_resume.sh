#!/bin/sh
# The one loop's resume, end to end: `kdseg train` and the whole method's
# pipeline (teacher, cycles, students, baselines) are killed with SIGKILL at
# random moments twenty times each, the compose example (two teachers, three
# students, an EMA of their mean) five times, and resumed with --resume; each
# then ends with weights bit-identical to an uninterrupted run (one thread)
# and the same logged metrics. The pipeline's students learn with a holistic
# critic too, whose weights, power-iteration vector and Adam state resume.
# The kill times come from a printed seed (KILL_SEED=... to repeat a run).
# Each uninterrupted run (one thread) goes alongside its killed twin, so the
# two cores both work (123 s one after the other on a 2-core Zen 5).
# Prints "N passed, N failed".
set -u
SUITE=kill-resume
. "$(dirname "$0")/../lib.sh"
seed=${KILL_SEED:-$(date +%s)}
echo "kill seed $seed"
tiny_dataset 8

# kdseg train, killed twenty times
cat > train.lua <<'LUA'
return {name = "t", seed = 3, threads = 1, data = {root = "data", batch_size = 4, workers = 1, augment = {crop = {32, 64}}},
        train = {iterations = 1500, log_every = 50, eval_every = 300, checkpoint_every = 10, grids = 1}}
LUA
train="$kdseg train ../train.lua"
killed_beside_reference train 20 1.0 $train
same=$("$kdseg" "$top/tests/train/same_weights.lua" train_ref/runs/t/checkpoints train_killed/runs/t/checkpoints 2>&1)
case "$same" in identical*) ok ;; *) fail "train after 20 kills: $same" ;; esac
same=$("$kdseg" "$top/tests/train/same_json.lua" train_ref/runs/t/results.json train_killed/runs/t/results.json 2>&1)
[ "$same" = same ] && ok || fail "train results.json after 20 kills: $same"
# every logged step once, with the uninterrupted run's values
same=$("$kdseg" "$top/tests/train/same_metrics.lua" train_ref/runs/t/metrics.jsonl train_killed/runs/t/metrics.jsonl 2>&1)
[ "$same" = same ] && ok || fail "train metrics.jsonl after 20 kills: $same"

compose="$kdseg --threads 1 $top/experiments/compose_two_teachers.lua root=data iterations=30 crop=[32,64]"
killed_beside_reference compose 5 2.5 $compose
for run in compose compose_bench_teacher compose_deeplabv3plus; do
    same=$("$kdseg" "$top/tests/train/same_weights.lua" "compose_ref/runs/$run/checkpoints" "compose_killed/runs/$run/checkpoints" 2>&1)
    case "$same" in identical*) ok ;; *) fail "compose $run after kills: $same" ;; esac
done
if grep -q '"type":"eval"' compose_killed/runs/compose/metrics.jsonl && \
   [ "$(grep -c '"type":"train"' compose_killed/runs/compose/metrics.jsonl)" = 3 ]; then ok
else fail "compose metrics.jsonl after kills: $(grep -c '"type":"train"' compose_killed/runs/compose/metrics.jsonl) train lines, expected 3"; fi

pipeline="$kdseg --threads 1 $top/experiments/semisup_kd.lua name=p data.root=data data.labeled=splits/1_4/labeled.txt \
data.unlabeled=splits/1_4/unlabeled.txt augment.crop=[32,64] batch_size=4 workers=1 teacher.iterations=150 \
teacher.retrain_iterations=60 students.iterations=150 students.weights.strong=1 students.weights.holistic=0.1 \
students.critic_width=8 checkpoint_every=5 quiet=true"
killed_beside_reference pipeline 20 1.5 $pipeline
same=$("$kdseg" "$top/tests/train/same_weights.lua" pipeline_ref/runs/p pipeline_killed/runs/p 2>&1)
case "$same" in identical*) ok ;; *) fail "pipeline after kills: $same" ;; esac
if cmp -s pipeline_ref/runs/p/results.md pipeline_killed/runs/p/results.md; then ok
else fail "pipeline results.md after kills differs"; diff pipeline_ref/runs/p/results.md pipeline_killed/runs/p/results.md; fi
for f in pseudo/cycle_2/stats.json students/results.json results.json; do
    same=$("$kdseg" "$top/tests/train/same_json.lua" "pipeline_ref/runs/p/$f" "pipeline_killed/runs/p/$f" 2>&1)
    if [ "$same" = same ]; then ok; else fail "pipeline $f after kills: $same"; fi
done
finish
