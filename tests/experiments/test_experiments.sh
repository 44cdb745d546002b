#!/bin/sh
# A tiny end-to-end run (a few iterations, 32 x 64 images) of every
# experiment script and config in experiments/. Prints "N passed, N failed".
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
run "students_from_run without a run" sh -c "! \"$kdseg\" \"$top/experiments/students_from_run.lua\" run=nowhere > bad.log 2>&1 \
    && grep -q 'nowhere/config.json is missing' bad.log"
# shellcheck disable=SC2086
run ablation "$kdseg" "$top/experiments/ablation.lua" seeds=[1] $tiny
run "ablation table" grep -q "+ mutual learning" runs/ablation/ablation.md
run baselines_semisup "$kdseg" "$top/experiments/baselines_semisup.lua" data.root=data data.labeled=splits/1_4/labeled.txt \
    data.unlabeled=splits/1_4/unlabeled.txt iterations=3 crop=[32,64] batch_size=4 workers=1 quiet=true
run "baselines table" grep -q "UniMatch-style" runs/baselines_semisup/results.md
run accuracy_benchmark "$kdseg" "$top/experiments/accuracy_benchmark.lua" root=bench_data iterations=4 teacher_iterations=4 crop=[32,64] \
    batch_size=4 workers=1 teacher=bench_teacher quiet=true size.train=16 size.coarse=8 size.val=4 size.height=32 size.width=64
run "accuracy table" grep -q "share of the gap" runs/accuracy_benchmark/results.md
run compose_two_teachers "$kdseg" "$top/experiments/compose_two_teachers.lua" root=data iterations=3 crop=[32,64]
run toy_segmentation "$kdseg" "$top/experiments/toy_segmentation.lua" 5
for config in "$top"/experiments/baselines/*.yaml "$top"/experiments/*.yaml; do
    name=$(basename "$config" .yaml)
    run "$name" "$kdseg" train "$config" name="$name" data.root=data data.augment.crop=[32,64] data.batch_size=2 \
        data.workers=1 train.iterations=3 train.log_every=1 schedule.warmup=0 train.eval_every=0 train.checkpoint_every=0
done
# the real sweep spec: checked whole (its program's overrides included) by emitting its Slurm script
run "sweep spec kd_weights" "$kdseg" sweep "$top/experiments/sweeps/kd_weights.yaml" --emit-slurm slurm
finish
