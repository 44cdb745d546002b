#!/bin/sh
# Data-parallel training on 2 ranks (mpirun -np 2 --oversubscribe, one
# thread per rank): kd.dist's collectives; synchronised batch norm against
# one process's whole batch; a short training run (sync_bn) against one
# process with the same global batch, step by step and in its weights; a
# pseudo-label cycle writing the same files on 2 ranks as on 1; SIGKILL of
# one rank ending the job within a bounded time, and --resume on 2 ranks
# (bit-identical to an uninterrupted run) and on 1; kdseg started by a
# launcher without its MPI plugin. Prints "N passed, N failed".
set -u
SUITE=dist
. "$(dirname "$0")/../lib.sh"
# the CI runs as root, which mpirun refuses unless told
export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1
if ! command -v mpirun > /dev/null || [ ! -f "$(dirname "$kdseg")/kdseg-mpi.so" ]; then
    fail "mpirun or $(dirname "$kdseg")/kdseg-mpi.so is missing (make installs Open MPI and builds it)"
    finish; exit 1
fi
mpi="mpirun -np 2 --oversubscribe"

out=$($mpi "$kdseg" --threads 1 "$top/tests/dist/collectives.lua" 2>&1)
case "$out" in *"collectives ok"*) ok ;; *) fail "collectives: $(echo "$out" | grep -m3 'rank\|error')" ;; esac
out=$($mpi "$kdseg" --threads 1 "$top/tests/dist/sync_bn.lua" 2>&1)
case "$out" in *"sync_bn ok"*) ok; echo "$out" | grep "sync_bn ok" ;; *) fail "sync_bn: $(echo "$out" | grep -m3 'rank\|error')" ;; esac

tiny_dataset 6
cat > train.lua <<'LUA'
return {name = "one", seed = 3, threads = 1,
        data = {root = "data", batch_size = 4, workers = 1, augment = {crop = {32, 64}}},
        model = {name = "bench_student"}, optim = {lr = 0.002},
        train = {iterations = 12, log_every = 1, eval_every = 6, checkpoint_every = 6, grids = 1, sync_bn = true}}
LUA
# Direct convolutions for both: the runs then differ only in the order of
# the gradients' sums, by about 1e-7. With Winograd (the default) this
# seed's 1-process run leaves the others around step 6 (its loss at step 7
# is 9e-7 off, where the 2-rank Winograd run and both direct runs agree to
# 1e-7), and a batch norm's bias, still near 0, ends 1e-2 off relative to
# its size. Per convolution, Winograd gives the same outputs on 4 images as
# on 2 + 2 and weight gradients within 1e-6, so we read it as a value that
# falls on the other side of a ReLU by rounding, not as the ranks' doing.
export KDSEG_CONV_ALGORITHM=direct
"$kdseg" train train.lua > one.log 2>&1 || fail "one process: $(tail -2 one.log)"
$mpi -x KDSEG_CONV_ALGORITHM "$kdseg" train train.lua name=two > two.log 2>&1 || fail "2 ranks: $(grep -m3 -i 'error\|rank' two.log)"
same=$("$kdseg" "$top/tests/dist/same_run.lua" runs/one runs/two 1e-5 2>&1)
case "$same" in same*) ok; echo "2 ranks against 1 process: $same" ;; *) fail "2 ranks against 1 process: $same" ;; esac
[ -f runs/two/results.json ] && [ -f runs/two/report.html ] && ok || fail "rank 0 wrote no results.json or report"
grep -q '"ranks":2' runs/two/metrics.jsonl && grep -q '"communication":' runs/two/metrics.jsonl && ok ||
    fail "metrics.jsonl logs no ranks or communication time"
# without sync_bn each rank normalises with its own statistics: it runs, and differs
$mpi -x KDSEG_CONV_ALGORITHM "$kdseg" train train.lua name=two_own train.sync_bn=false > own.log 2>&1 || fail "2 ranks without sync_bn: $(tail -2 own.log)"
"$kdseg" "$top/tests/dist/same_run.lua" runs/one runs/two_own 1e-5 > /dev/null 2>&1 && fail "per-rank batch norm equals one process's" || ok
unset KDSEG_CONV_ALGORITHM

# a pseudo-label cycle: the same files from 2 ranks as from 1 (the teacher from a checkpoint)
"$kdseg" train train.lua name=teacher model.name=bench_teacher train.sync_bn=false train.iterations=20 > teacher.log 2>&1 ||
    fail "teacher: $(tail -2 teacher.log)"
pipeline="$kdseg --threads 1 $top/experiments/semisup_kd.lua data.root=data data.labeled=splits/1_4/labeled.txt \
data.unlabeled=splits/1_4/unlabeled.txt augment.crop=[32,64] batch_size=4 workers=1 cycles.count=1 \
teacher.checkpoint=runs/teacher/checkpoints/last.safetensors teacher.retrain_iterations=10 students.iterations=10 quiet=true"
$pipeline name=p1 > p1.log 2>&1 || fail "pipeline on 1 process: $(tail -2 p1.log)"
$mpi $pipeline name=p2 > p2.log 2>&1 || fail "pipeline on 2 ranks: $(grep -m3 -i 'error' p2.log)"
files=$(cd runs/p1/pseudo/cycle_1 && find . -name '*.png' | sort)
differ=0; count=0
for f in $files; do count=$((count + 1)); cmp -s "runs/p1/pseudo/cycle_1/$f" "runs/p2/pseudo/cycle_1/$f" || differ=$((differ + 1)); done
if [ "$count" -gt 0 ] && [ $differ = 0 ] && cmp -s runs/p1/pseudo/cycle_1/soft.safetensors runs/p2/pseudo/cycle_1/soft.safetensors
then ok; else fail "pseudo-labels of 2 ranks: $differ of $count files differ from 1 process's"; fi
same=$("$kdseg" "$top/tests/train/same_json.lua" runs/p1/pseudo/cycle_1/stats.json runs/p2/pseudo/cycle_1/stats.json 2>&1)
[ "$same" = same ] && ok || fail "pseudo-label statistics of 2 ranks: $same"
[ -f runs/p2/results.md ] && [ -f runs/p2/students/results.json ] && ok || fail "the pipeline on 2 ranks left no results"

# SIGKILL of rank 1: the job ends (no hang), naming it; --resume completes it
long="train $tmp/train.lua name=killed train.iterations=400 train.log_every=50 train.eval_every=0 train.checkpoint_every=10"
mkdir -p two && ln -s ../data two/data && cd two
$mpi "$kdseg" $long > killed.log 2>&1 &
job=$!
i=0
while [ ! -f runs/killed/checkpoints/state.safetensors ] && [ $i -lt 1500 ]; do sleep 0.02; i=$((i + 1)); done
victim=$(pgrep -f "kdseg $long" | sort -n | tail -1)
if [ -n "$victim" ] && kill -9 "$victim"; then ok; else fail "no rank to kill"; fi
waited=0
while kill -0 $job 2>/dev/null && [ $waited -lt 60 ]; do sleep 0.5; waited=$((waited + 1)); done
if kill -0 $job 2>/dev/null; then fail "the job still runs 30 s after a rank was killed"; kill -9 $job; pkill -9 -f "kdseg $long"
else ok; fi
wait $job; rc=$?
[ $rc != 0 ] && ok || fail "the job of a killed rank exited with 0"
grep -q "rank 1 .*exited on signal 9" killed.log && ok || fail "the job's end does not name the killed rank: $(tail -3 killed.log)"
echo "the job ended $((waited / 2)) s after rank 1 was killed"
mkdir -p "$tmp/one/runs" && cp -r runs/killed "$tmp/one/runs/" && ln -s "$tmp/data" "$tmp/one/data"
$mpi "$kdseg" $long --resume > resumed.log 2>&1 || fail "resume on 2 ranks: $(tail -3 resumed.log)"
grep -q "resumed from iteration" resumed.log && ok || fail "the 2-rank run did not resume"
$mpi "$kdseg" $long name=straight > straight.log 2>&1 || fail "uninterrupted 2-rank run"
same=$("$kdseg" "$top/tests/train/same_weights.lua" runs/straight/checkpoints runs/killed/checkpoints 2>&1)
case "$same" in identical*) ok ;; *) fail "2 ranks killed and resumed against uninterrupted: $same" ;; esac
(cd "$tmp/one" && "$kdseg" $long --resume > one_resumed.log 2>&1) && grep -q "resumed from iteration" "$tmp/one/one_resumed.log" &&
    [ -f "$tmp/one/runs/killed/results.json" ] && ok || fail "a 2-rank run resumed on 1 process: $(tail -3 "$tmp/one/one_resumed.log")"
cd "$tmp"

# --emit-slurm: a job script that bash reads, running the command with --resume through srun
"$kdseg" train train.lua name=big --emit-slurm --nodes 2 --tasks-per-node 4 --threads-per-task 8 --time 2:00:00 > job.sh 2>&1
if bash -n job.sh && grep -q '^#SBATCH --nodes=2$' job.sh && grep -q '^#SBATCH --ntasks-per-node=4$' job.sh &&
   grep -q '^#SBATCH --cpus-per-task=8$' job.sh && grep -q "^srun .*kdseg --threads \"\$SLURM_CPUS_PER_TASK\" train train.lua name=big --resume$" job.sh &&
   grep -q "^cd $tmp" job.sh; then ok; else fail "--emit-slurm: $(cat job.sh)"; fi
out=$("$kdseg" train train.lua --overwrite --emit-slurm 2>&1)
case "$out" in *"--overwrite would wipe the run"*) ok ;; *) fail "--emit-slurm with --overwrite: $out" ;; esac
out=$("$kdseg" train train.lua --emit-slurm --nodes 0 2>&1)
case "$out" in *"--nodes must be a positive integer, got 0"*) ok ;; *) fail "--emit-slurm --nodes 0: $out" ;; esac
out=$("$kdseg" train train.lua --emit-slurm --tasks-per-node 2>&1)
case "$out" in *"--tasks-per-node needs a value"*) ok ;; *) fail "--emit-slurm --tasks-per-node: $out" ;; esac

# started by a launcher, without the plugin next to the binary
mkdir -p bare/bin && cp "$kdseg" bare/bin/kdseg && ln -s "$top/scripts" bare/scripts
out=$(OMPI_COMM_WORLD_SIZE=2 bare/bin/kdseg -e 'print("ran")' 2>&1)
case "$out" in *"cannot load the MPI plugin"*kdseg-mpi.so*) ok ;; *) fail "a launcher of 2 without the plugin: $out" ;; esac
out=$(OMPI_COMM_WORLD_SIZE=1 bare/bin/kdseg -e 'print(kd.dist.size())' 2>&1)
[ "$out" = 1 ] && ok || fail "one process without the plugin: $out"
finish
