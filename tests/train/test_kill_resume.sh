#!/bin/sh
# The one loop's resume, end to end: the compose example (two teachers, three
# students, an EMA of their mean) and the whole method's pipeline (teacher,
# cycles, students, baselines) are killed with SIGKILL at random moments
# several times and resumed with --resume; each then ends with weights
# bit-identical to an uninterrupted run (one thread). The kill times come
# from a printed seed (KILL_SEED=... to repeat a run). Prints "N passed, N failed".
set -u
SUITE=kill-resume
. "$(dirname "$0")/../lib.sh"
seed=${KILL_SEED:-$(date +%s)}
echo "kill seed $seed"
"$kdseg" synthcity --out data --train 12 --coarse 8 --val 2 --size 32x64 --seed 4 > /dev/null || fail "synthcity"
"$kdseg" splits --root data --fractions 1/4 --seed 0 > /dev/null || fail "splits"

# kill_and_resume NAME KILLS LONGEST COMMAND...: in folder NAME, COMMAND is
# started (with --resume after the first time) and killed KILLS times after a
# random 0.2 s to LONGEST s, then run with --resume to its end.
kill_and_resume() {
    name=$1; kills=$2; longest=$3; shift 3
    mkdir -p "$name"; (cd "$name" && ln -sf ../data data)
    k=0; resume=""
    while [ $k -lt "$kills" ]; do
        delay=$(awk -v s="$seed" -v k="$k" -v n="$name" -v l="$longest" 'BEGIN { srand(s + 17 * k + length(n)); printf "%.2f", 0.2 + (l - 0.2) * rand() }')
        (cd "$name" && exec "$@" $resume > "run$k.log" 2>&1) &
        pid=$!
        sleep "$delay"
        if kill -9 $pid 2>/dev/null; then echo "$name: killed after ${delay}s"; else echo "$name: ended before ${delay}s"; fi
        wait $pid 2>/dev/null
        k=$((k + 1)); resume="--resume"
    done
    (cd "$name" && "$@" --resume > final.log 2>&1) || { fail "$name: the resumed run failed"; tail -5 "$name/final.log"; }
}

compose="$kdseg --threads 1 $top/experiments/compose_two_teachers.lua root=data iterations=30 crop=[32,64]"
mkdir -p compose_ref && (cd compose_ref && ln -sf ../data data && $compose > run.log 2>&1) || fail "compose, uninterrupted"
kill_and_resume compose_killed 5 2.5 $compose
for run in compose compose_bench_teacher compose_deeplabv3plus; do
    same=$("$kdseg" "$top/tests/train/same_weights.lua" "compose_ref/runs/$run/checkpoints" "compose_killed/runs/$run/checkpoints" 2>&1)
    case "$same" in identical*) ok ;; *) fail "compose $run after kills: $same" ;; esac
done
if grep -q '"type":"eval"' compose_killed/runs/compose/metrics.jsonl && \
   [ "$(grep -c '"type":"train"' compose_killed/runs/compose/metrics.jsonl)" = 3 ]; then ok
else fail "compose metrics.jsonl after kills: $(grep -c '"type":"train"' compose_killed/runs/compose/metrics.jsonl) train lines, expected 3"; fi

pipeline="$kdseg --threads 1 $top/experiments/semisup_kd.lua name=p data.root=data data.labeled=splits/1_4/labeled.txt \
data.unlabeled=splits/1_4/unlabeled.txt augment.crop=[32,64] batch_size=4 workers=1 teacher.iterations=40 \
teacher.retrain_iterations=20 students.iterations=40 students.weights.strong=1 checkpoint_every=5 quiet=true"
mkdir -p pipeline_ref && (cd pipeline_ref && ln -sf ../data data && $pipeline > run.log 2>&1) || { fail "pipeline, uninterrupted"; tail -5 pipeline_ref/run.log; }
kill_and_resume pipeline_killed 6 1.5 $pipeline
same=$("$kdseg" "$top/tests/train/same_weights.lua" pipeline_ref/runs/p pipeline_killed/runs/p 2>&1)
case "$same" in identical*) ok ;; *) fail "pipeline after kills: $same" ;; esac
if cmp -s pipeline_ref/runs/p/results.md pipeline_killed/runs/p/results.md; then ok
else fail "pipeline results.md after kills differs"; diff pipeline_ref/runs/p/results.md pipeline_killed/runs/p/results.md; fi
for f in pseudo/cycle_2/stats.json students/results.json results.json; do
    same=$("$kdseg" "$top/tests/train/same_json.lua" "pipeline_ref/runs/p/$f" "pipeline_killed/runs/p/$f" 2>&1)
    if [ "$same" = same ]; then ok; else fail "pipeline $f after kills: $same"; fi
done
finish
