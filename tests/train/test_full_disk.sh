#!/bin/sh
# A full disk in the middle of a run: a training run and the pipeline (in a
# pseudo-label cycle) write their run folders on a small file system made
# for the test, which is filled up once they have written their first
# checkpoint or label. Each must stop with an error naming the file and
# "No space left on device", keep its last checkpoint readable, leave no
# temporary file, and, once space is freed, go on with --resume to weights
# and results identical to an uninterrupted run (one thread).
# The file system is a tmpfs (mounting needs root); where mounting is not
# allowed (or with FULL_DISK=ulimit), the size limit on written files
# (ulimit -f) stands in for it: the error is "File too large" and comes at
# the first checkpoint, so there is none to keep. Prints "N passed, N failed".
set -u
SUITE=full-disk
. "$(dirname "$0")/../lib.sh"

fs=$tmp/fs
mkdir -p "$fs"
if [ "${FULL_DISK:-tmpfs}" = tmpfs ] && mount -t tmpfs -o size=256m tmpfs "$fs" 2>/dev/null; then
    kind=tmpfs; full_error="No space left on device"
    trap 'umount "$fs" 2>/dev/null; rm -rf "$tmp"' EXIT
else
    kind=ulimit; full_error="File too large"
fi
echo "full disk by $kind"
# fill: the file system full (tmpfs), or the written-file size capped (ulimit)
fill() { if [ $kind = tmpfs ]; then dd if=/dev/zero of="$fs/filler" bs=64k > /dev/null 2>&1; sync; fi; }
free_space() { rm -f "$fs/filler"; }
# run_limited COMMAND...: under ulimit, files past 64 KiB cannot be written
run_limited() { if [ $kind = ulimit ]; then (ulimit -f 128; trap '' XFSZ; exec "$@"); else "$@"; fi; }

tiny_dataset 40

# ---- a training run ---------------------------------------------------------
cat > train.lua <<'LUA'
return {name = "t", seed = 3, threads = 1, data = {root = "data", batch_size = 4, workers = 1, augment = {crop = {32, 64}}},
        train = {iterations = 400, log_every = 20, eval_every = 100, checkpoint_every = 20, grids = 1}}
LUA
"$kdseg" train train.lua runs_dir=ref > ref_train.log 2>&1 || fail "train, uninterrupted"
if [ $kind = tmpfs ]; then
    "$kdseg" train train.lua runs_dir="$fs/runs" > full_train.log 2>&1 &
    pid=$!
    i=0
    while [ ! -f "$fs/runs/t/checkpoints/state.safetensors" ] && [ $i -lt 600 ]; do sleep 0.02; i=$((i + 1)); done
    fill
    wait $pid; rc=$?
else
    run_limited "$kdseg" train train.lua runs_dir="$fs/runs" > full_train.log 2>&1; rc=$?
fi
[ $rc != 0 ] && ok || fail "training on a full disk exited 0"
grep -q "$full_error" full_train.log && grep -q "$fs/runs/t/" full_train.log && ok || \
    { fail "the error names the file and '$full_error'"; tail -3 full_train.log; }
grep -q "stack traceback\|Segmentation\|Aborted" full_train.log && fail "a crash, not an error: $(tail -2 full_train.log)" || ok
if [ $kind = tmpfs ]; then
    at=$("$kdseg" -e "local _, m = kd.load('$fs/runs/t/checkpoints/state.safetensors'); print(m.iteration)" 2>&1)
    [ "$at" -ge 20 ] 2>/dev/null && [ "$at" -lt 400 ] && ok || fail "the last checkpoint is not readable: $at"
else
    at=0
    [ ! -f "$fs/runs/t/checkpoints/state.safetensors" ] && ok || fail "a checkpoint past the file size limit exists"
fi
leftover=$(find "$fs/runs" -name '*.tmp.*' | head -3)
[ -z "$leftover" ] && ok || fail "temporary files left: $leftover"
free_space
"$kdseg" train train.lua runs_dir="$fs/runs" --resume > resumed_train.log 2>&1 || { fail "resume after freeing space"; tail -3 resumed_train.log; }
same=$("$kdseg" "$top/tests/train/same_weights.lua" ref/t/checkpoints "$fs/runs/t/checkpoints" 2>&1)
case "$same" in identical*) ok ;; *) fail "train after a full disk (checkpoint at $at): $same" ;; esac
same=$("$kdseg" "$top/tests/train/same_metrics.lua" ref/t/metrics.jsonl "$fs/runs/t/metrics.jsonl" 2>&1)
[ "$same" = same ] && ok || fail "train metrics after a full disk: $same"
echo "training: the disk filled after iteration $at"

# ---- the pipeline, in a pseudo-label cycle -----------------------------------
pipeline="$kdseg --threads 1 $top/experiments/semisup_kd.lua name=p data.root=data data.labeled=splits/1_4/labeled.txt \
data.unlabeled=splits/1_4/unlabeled.txt augment.crop=[32,64] batch_size=4 workers=1 teacher.iterations=40 \
teacher.retrain_iterations=20 students.iterations=40 checkpoint_every=5 quiet=true"
$pipeline runs_dir=ref > ref_pipeline.log 2>&1 || { fail "pipeline, uninterrupted"; tail -3 ref_pipeline.log; }
if [ $kind = tmpfs ]; then
    # the teacher done, the pipeline is held while the disk fills: its first
    # pseudo-label cycle meets a full disk
    $pipeline runs_dir="$fs/runs" > full_pipeline.log 2>&1 &
    pid=$!
    i=0
    while [ ! -f "$fs/runs/p/teacher/results.json" ] && [ $i -lt 3000 ]; do sleep 0.01; i=$((i + 1)); done
    kill -STOP $pid
    fill
    kill -CONT $pid
    wait $pid; rc=$?
else
    run_limited $pipeline runs_dir="$fs/runs" > full_pipeline.log 2>&1; rc=$?
fi
[ $rc != 0 ] && ok || fail "the pipeline on a full disk exited 0"
# (under ulimit the first checkpoint of the teacher is already too large)
where=$fs/runs/p/pseudo/cycle_1/; [ $kind = ulimit ] && where=$fs/runs/p/
grep -q "$full_error" full_pipeline.log && grep -q "$where" full_pipeline.log && ok || \
    { fail "the pipeline's error names a file in $where and says '$full_error'"; tail -3 full_pipeline.log; }
[ ! -f "$fs/runs/p/pseudo/cycle_1/stats.json" ] && ok || fail "a cycle cut short by the full disk is marked finished"
free_space
$pipeline runs_dir="$fs/runs" --resume > resumed_pipeline.log 2>&1 || { fail "pipeline resume after freeing space"; tail -3 resumed_pipeline.log; }
same=$("$kdseg" "$top/tests/train/same_weights.lua" ref/p "$fs/runs/p" 2>&1)
case "$same" in identical*) ok ;; *) fail "pipeline after a full disk: $same" ;; esac
for f in pseudo/cycle_1/stats.json pseudo/cycle_2/stats.json results.json; do
    same=$("$kdseg" "$top/tests/train/same_json.lua" "ref/p/$f" "$fs/runs/p/$f" 2>&1)
    [ "$same" = same ] && ok || fail "pipeline $f after a full disk: $same"
done
finish
