#!/bin/sh
# A tiny end-to-end run (a few iterations, 32 x 64 images) of every
# experiment script and config in experiments/, and of the method, the
# baselines, the students of a run, the compose example and evaluation on a
# dataset with a class table of its own. Prints "N passed, N failed".
set -u
SUITE=experiment
. "$(dirname "$0")/../lib.sh"
run() { # run NAME command...
    name=$1; shift
    if "$@" > out.log 2>&1; then ok; else fail "$name"; tail -15 out.log; fi
}
"$kdseg" synthcity --out data --train 16 --coarse 16 --val 4 --size 32x64 --seed 2 > /dev/null
"$kdseg" splits --root data --fractions 1/4,1/8 --seed 0 > /dev/null
tiny="data.root=data augment.crop=[32,64] batch_size=4 workers=1 teacher.iterations=4 teacher.retrain_iterations=2 students.iterations=3 quiet=true"
# shellcheck disable=SC2086
run semisup_kd "$kdseg" "$top/experiments/semisup_kd.lua" name=tiny_kd $tiny students.models=[bench_student,erfnet] students.weights.strong=1 \
    teacher.with_coarse=true teacher.average_weights=true teacher.bn_batches=2
run "semisup_kd results" grep -q "distilled student 2 (erfnet)" runs/tiny_kd/results.md
run "semisup_kd pseudo-labels" test -f runs/tiny_kd/pseudo/cycle_2/stats.json
run "semisup_kd pseudo class weights recorded" grep -q '"road":' runs/tiny_kd/students/pseudo_class_weights.json
# a resume may change the loaders' cache (it changes no batch), not the batch size
tiny_kd="$kdseg $top/experiments/semisup_kd.lua name=tiny_kd $tiny students.models=[bench_student,erfnet] students.weights.strong=1 \
teacher.with_coarse=true teacher.average_weights=true teacher.bn_batches=2"
# shellcheck disable=SC2086
run "semisup_kd --resume with another cache" $tiny_kd cache_mb=0 --resume
run "semisup_kd --resume with another batch size refused" sh -c "! $tiny_kd batch_size=2 --resume > bad.log 2>&1 \
    && grep -q 'semisup: --resume with other settings than runs/tiny_kd/config.json' bad.log"
teacher=runs/tiny_kd/teacher/checkpoints/last.safetensors
# shellcheck disable=SC2086
run "semisup_kd from a trained teacher" "$kdseg" "$top/experiments/semisup_kd.lua" name=tiny_kd_ckpt $tiny cycles.count=1 \
    teacher.checkpoint=$teacher
run "semisup_kd from a trained teacher: results" grep -q "distilled student 2" runs/tiny_kd_ckpt/results.md
run "semisup_kd teacher checkpoint of another model" sh -c "! \"$kdseg\" \"$top/experiments/semisup_kd.lua\" name=bad $tiny \
    teacher.model=deeplabv3plus teacher.checkpoint=$teacher > bad.log 2>&1 && grep -q 'holds a bench_teacher, teacher.model is deeplabv3plus' bad.log"
run students_from_run "$kdseg" "$top/experiments/students_from_run.lua" run=runs/tiny_kd name=again cycle=1 \
    students.iterations=2 students.kd_respect_labels=true students.kd_balance=0.5 seed=3
run "students_from_run results" grep -q "students' ensemble" runs/tiny_kd/again/results.md
run "students_from_run kd class weights recorded" grep -q '"road":' runs/tiny_kd/again/kd_class_weights.json
run "baselines: a bad probe_images" sh -c "! \"$kdseg\" \"$top/experiments/baselines_semisup.lua\" data.root=data \
    data.labeled=splits/1_4/labeled.txt data.unlabeled=splits/1_4/unlabeled.txt name=bad_probe probe_images=-1 \
    > bad.log 2>&1 && grep -q 'probe_images must be a whole number >= 0, got -1' bad.log"
run "ablation: teachers_from without {seed}" sh -c "! \"$kdseg\" \"$top/experiments/ablation.lua\" name=bad_abl \
    teachers_from=runs/tiny_kd > bad.log 2>&1 && grep -q 'teachers_from must be a folder naming the seed as {seed}' bad.log"
run "students_from_run: a cycle the run does not have" sh -c "! \"$kdseg\" \"$top/experiments/students_from_run.lua\" run=runs/tiny_kd \
    name=c5 cycle=5 > bad.log 2>&1 && grep -q 'has cycles 0 to 2, not 5' bad.log"
run "students_from_run without a run" sh -c "! \"$kdseg\" \"$top/experiments/students_from_run.lua\" run=nowhere > bad.log 2>&1 \
    && grep -q 'nowhere/config.json is missing' bad.log"
# the method's sweep as its spec runs it: teacher-only runs per seed (students.models=[]), then students per trial
for s in 1 2; do
    # shellcheck disable=SC2086
    run "teacher-only run, seed $s" "$kdseg" "$top/experiments/semisup_kd.lua" name=kd_teachers/seed$s seed=$s $tiny \
        students.models=[] baselines.fine_only=false baselines.all_labels=false
done
run "teacher-only run has no students" test ! -e runs/kd_teachers/seed1/students
run "students.models=[] with baselines refused" sh -c "! \"$kdseg\" \"$top/experiments/semisup_kd.lua\" name=bad $tiny \
    students.models=[] > bad.log 2>&1 && grep -q 'baselines.fine_only=false' bad.log"
sed -e 's/^max_trials: 12$/max_trials: 2/' -e 's/^  students.iterations: 1000$/  students.iterations: 2/' \
    "$top/experiments/sweeps/kd_weights.yaml" > sweep_kd.yaml
run "sweep of the method's weights" "$kdseg" sweep sweep_kd.yaml --quiet
run "sweep of the method's weights: 4 trials finished" test "$(grep -c '"state":"finished"' runs/sweep_kd/ledger.jsonl)" = 4
run "each seed's trial learns from its seed's teacher" grep -q 'students of runs/kd_teachers/seed2 ' runs/sweep_kd/trial_0001/results.md
run "students_from_run: {seed} without a seed" sh -c "! \"$kdseg\" \"$top/experiments/students_from_run.lua\" \
    'run=runs/kd_teachers/seed{seed}' > bad.log 2>&1 && grep -q 'give seed=N' bad.log"
# shellcheck disable=SC2086
run ablation "$kdseg" "$top/experiments/ablation.lua" seeds=[1] $tiny
run "ablation table" grep -q "^| + mutual learning (weight 1) | - | [0-9.]* |$" runs/ablation/ablation.md
run "ablation: holistic KD at the paper's weight when the method leaves it off" grep -q "^| + holistic KD (weight 0.1) |" runs/ablation/ablation.md
run "ablation: a term it adds at weight 0 refused" sh -c "! \"$kdseg\" \"$top/experiments/ablation.lua\" name=bad_abl_w \
    students.weights.pairwise=0 > bad.log 2>&1 && grep -q 'the ablation adds pairwise; give it a weight above 0' bad.log"
run "ablation: one teacher run for every variant" test -f runs/ablation/seed1/teacher/pseudo/cycle_2/stats.json
run baselines_semisup "$kdseg" "$top/experiments/baselines_semisup.lua" data.root=data data.labeled=splits/1_4/labeled.txt \
    data.unlabeled=splits/1_4/unlabeled.txt iterations=3 crop=[32,64] batch_size=4 workers=1 quiet=true
run "baselines table" grep -q "UniMatch-style" runs/baselines_semisup/results.md
run "a baseline's setting checked" sh -c "! \"$kdseg\" \"$top/experiments/baselines_semisup.lua\" data.root=data \
    data.labeled=splits/1_4/labeled.txt data.unlabeled=splits/1_4/unlabeled.txt iterations=2 crop=[32,64] batch_size=4 \
    workers=1 quiet=true name=bad_cps methods=[cps] cps.on=sideways > bad.log 2>&1 && grep -q \"on must be 'both' or 'unlabeled', got sideways\" bad.log"
run "UniMatch's strong views checked" sh -c "! \"$kdseg\" \"$top/experiments/baselines_semisup.lua\" data.root=data \
    data.labeled=splits/1_4/labeled.txt data.unlabeled=splits/1_4/unlabeled.txt iterations=2 crop=[32,64] batch_size=4 \
    workers=1 quiet=true name=bad_um methods=[unimatch] unimatch.strong=sharp > bad.log 2>&1 && grep -q \"strong must be 'photometric' or 'affine', got sharp\" bad.log"
run "accuracy benchmark without seeds" sh -c "! \"$kdseg\" \"$top/experiments/accuracy_benchmark.lua\" seeds=[] name=no_seeds \
    > bad.log 2>&1 && grep -q 'seeds must be a non-empty list' bad.log"
# each baseline's sweep spec, tiny: its own parameters run end to end
for m in mean_teacher cps unimatch; do
    sed -e 's/^max_trials: 12$/max_trials: 2/' -e 's/^seeds: \[1, 2\]$/seeds: [1]/' \
        -e 's|^  iterations: 1000$|  iterations: 2|' -e 's|^  crop: \[64, 128\]$|  crop: [32, 64]|' -e 's|^  batch_size: 8$|  batch_size: 4\n  workers: 1|' \
        -e 's|^  data.root: data/accuracy_benchmark$|  data.root: data\n  data.labeled: splits/1_4/labeled.txt\n  data.unlabeled: splits/1_4/unlabeled.txt|' \
        "$top/experiments/sweeps/baseline_$m.yaml" > "sweep_$m.yaml"
    run "sweep of $m" "$kdseg" sweep "sweep_$m.yaml" --quiet
    run "sweep of $m: 2 trials finished" test "$(grep -c '"state":"finished"' "runs/sweep_$m/ledger.jsonl")" = 2
    case $m in mean_teacher) source=teacher;; cps) source=b;; *) source=weak;; esac
    run "sweep of $m: its pseudo-labels in the report" grep -q "^| .* | $source | [0-9.]* | [0-9.]* | [0-9.]* |$" "runs/sweep_$m/report.md"
done
run accuracy_benchmark "$kdseg" "$top/experiments/accuracy_benchmark.lua" root=bench_data iterations=4 teacher_iterations=4 crop=[32,64] \
    batch_size=4 workers=1 teacher=bench_teacher quiet=true size.train=16 size.coarse=8 size.val=4 size.test=4 size.height=32 size.width=64 seeds=[1,2] \
    mean_teacher.weight=7 students.weights.mutual=0.25
run "accuracy benchmark: a baseline's setting reaches it" grep -q '"weight":7[,}]' runs/accuracy_benchmark/seed2/baselines/mean_teacher/config.json
run "accuracy benchmark: a students' setting reaches them" grep -q '"mutual":0.25[,}]' runs/accuracy_benchmark/seed2/method/students/config.json
# the method's rows only (baselines=false), on the same data
run "accuracy benchmark, the method's rows only" "$kdseg" "$top/experiments/accuracy_benchmark.lua" name=accuracy_method \
    root=bench_data iterations=4 teacher_iterations=4 crop=[32,64] batch_size=4 workers=1 teacher=bench_teacher quiet=true \
    size.train=16 size.coarse=8 size.val=4 size.test=4 size.height=32 size.width=64 seeds=[1] baselines=false
run "method's rows only: no baseline trained" test ! -e runs/accuracy_method/seed1/baselines
run "method's rows only: the students' ensemble" grep -q "^| the method: students' ensemble | [0-9.]* | [0-9.]* |$" runs/accuracy_method/results.md
run "method's rows only: the cycle's pseudo-labels" grep -q "^| the method: refined pseudo-labels, cycle 2 | - | - | [0-9.]* |" runs/accuracy_method/results.md
run "method's rows only: no baseline's row" sh -c "! grep -q 'Mean Teacher\|CPS\|UniMatch' runs/accuracy_method/results.md"
run "accuracy benchmark: baselines not a boolean refused" sh -c "! \"$kdseg\" \"$top/experiments/accuracy_benchmark.lua\" \
    name=bad_baselines baselines=maybe > bad.log 2>&1 && grep -q \"'baselines' must be true or false, got 'maybe'\" bad.log"
run "method's rows only, with baselines to reuse, refused" sh -c "! \"$kdseg\" \"$top/experiments/accuracy_benchmark.lua\" \
    name=bad_method_only baselines=false baselines_from=runs/accuracy_benchmark > bad.log 2>&1 \
    && grep -q 'baselines=false runs no baselines; baselines_from has none to reuse' bad.log"
# the ablation from the benchmark's teachers (teachers_from), read on its test split
bench_teachers="data.root=bench_data augment.crop=[32,64] teacher.model=bench_teacher teacher.lr=0.02 teacher.retrain_iterations=2 \
    teacher.retrain_lr=0.01 batch_size=4 workers=1 students.iterations=3 quiet=true"
# shellcheck disable=SC2086
run "ablation from the benchmark's teachers" "$kdseg" "$top/experiments/ablation.lua" name=ablation_bench seeds=[1,2] \
    'teachers_from=runs/accuracy_benchmark/seed{seed}/method' teacher.iterations=4 $bench_teachers \
    students.weights.pixel_kd=2 students.weights.mutual=0.5
run "ablation on the test split" grep -q "^| + mutual learning (weight 0.5) | [0-9.]* ± [0-9.]* | [0-9.]* ± [0-9.]* |$" runs/ablation_bench/ablation.md
run "ablation: the given weights in the students' runs" grep -q '"pixel_kd":2' runs/ablation_bench/seed1/v7/config.json
run "ablation reused the teachers" test ! -e runs/ablation_bench/seed1/teacher
# shellcheck disable=SC2086
run "ablation from teachers of other settings refused" sh -c "! \"$kdseg\" \"$top/experiments/ablation.lua\" name=ablation_bad seeds=[1] \
    'teachers_from=runs/accuracy_benchmark/seed{seed}/method' teacher.iterations=5 $bench_teachers > bad.log 2>&1 \
    && grep -q 'made with other settings' bad.log"
run "accuracy table" grep -q "share of the gap" runs/accuracy_benchmark/results.md
run "accuracy table on the test split, 2 seeds" grep -q "^| Mean Teacher | [0-9.]* ± [0-9.]* | [0-9.]* ± [0-9.]* |$" runs/accuracy_benchmark/results.md
for row in "Mean Teacher: EMA teacher" "CPS: network a" "UniMatch-style: weak view"; do
    run "pseudo-label table: $row" grep -q "^| $row[^|]* | [0-9.]* | [0-9.]* | [0-9.]* | [0-9.]* | [0-9.]* |$" runs/accuracy_benchmark/results.md
done
run "pseudo-label table: the method's cycle 2" grep -q "^| the method: refined pseudo-labels, cycle 2 | - | - | [0-9.]* | [0-9.]* | - |$" runs/accuracy_benchmark/results.md
run compose_two_teachers "$kdseg" "$top/experiments/compose_two_teachers.lua" root=data iterations=3 crop=[32,64]
run toy_segmentation "$kdseg" "$top/experiments/toy_segmentation.lua" 5
for config in "$top"/experiments/baselines/*.yaml "$top"/experiments/*.yaml; do
    name=$(basename "$config" .yaml)
    run "$name" "$kdseg" train "$config" name="$name" data.root=data data.augment.crop=[32,64] data.batch_size=2 \
        data.workers=1 train.iterations=3 train.log_every=1 schedule.warmup=0 train.eval_every=0 train.checkpoint_every=0
done
# A class table that is not Cityscapes' (six classes, other label ids, 200
# ignored), given once as data.classes: the method, the baselines, the
# students of a run, the compose example and evaluation all take it
mkdir own && (cd own && "$kdseg" synthcity --out data --train 16 --coarse 16 --val 4 --size 32x64 --seed 2 > /dev/null \
    && "$kdseg" "$top/tests/experiments/own_classes.lua" data > /dev/null \
    && "$kdseg" splits --root data --fractions 1/4 --seed 0 > /dev/null) || fail "a dataset with its own class table"
own_classes='"classes":["ground","built","plant","air","body","vehicle"]'
own="data.root=data data.classes=data/classes.yaml data.labeled=splits/1_4/labeled.txt data.unlabeled=splits/1_4/unlabeled.txt"
cd own
# shellcheck disable=SC2086
run "own classes: the method" "$kdseg" "$top/experiments/semisup_kd.lua" name=own $own augment.crop=[32,64] batch_size=4 \
    workers=1 teacher.iterations=4 teacher.retrain_iterations=2 students.iterations=3 quiet=true
run "own classes: the students' table" grep -qF "$own_classes" runs/own/students/results.json
run "own classes: the teacher's table" grep -qF "$own_classes" runs/own/teacher/results.json
# shellcheck disable=SC2086
run "own classes: the baselines" "$kdseg" "$top/experiments/baselines_semisup.lua" $own iterations=3 crop=[32,64] \
    batch_size=4 workers=1 quiet=true
for method in fine_only fine_coarse mean_teacher cps unimatch; do
    run "own classes: baseline $method's table" grep -qF "$own_classes" runs/baselines_semisup/$method/results.json
done
run "own classes: students of the run" "$kdseg" "$top/experiments/students_from_run.lua" run=runs/own name=again \
    students.iterations=2
run "own classes: their table" grep -qF "$own_classes" runs/own/again/results.json
run "own classes: compose" "$kdseg" "$top/experiments/compose_two_teachers.lua" root=data classes=data/classes.yaml \
    iterations=3 crop=[32,64]
run "own classes: compose's table" grep -qF "$own_classes" runs/compose/results.json
run "own classes: eval" "$kdseg" eval --checkpoint runs/own/students/checkpoints/student1/best.safetensors --root data \
    --split val --out eval.json
run "own classes: eval's classes" grep -qF '"vehicle":' eval.json
run "own classes: predict writes own label ids" "$kdseg" predict --checkpoint \
    runs/own/students/checkpoints/student1/best.safetensors --input data/leftImg8bit/val --out pred --ids label
run "own classes: predicted ids are the table's" "$kdseg" -e "local t = kd.image.read('pred/' .. kd._C.listdir('pred')[1])
  for i = 1, t:numel() do local v = t:get(i); assert(v == 3 or v == 9 or v == 14 or v == 21 or v == 40 or v == 60, v) end"
cd ..
# the real sweep spec: checked whole (its program's overrides included) by emitting its Slurm script
run "sweep spec kd_weights" "$kdseg" sweep "$top/experiments/sweeps/kd_weights.yaml" --emit-slurm slurm
finish
