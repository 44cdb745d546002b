#!/bin/sh
# A training run killed with SIGKILL after a checkpoint, then resumed with
# --resume, ends with exactly the weights of an uninterrupted run of the same
# config (same seed, one thread). Prints "N passed, N failed".
set -u
SUITE=resume
. "$(dirname "$0")/../lib.sh"

"$kdseg" synthcity --out data --train 8 --coarse 0 --val 2 --size 32x64 --seed 5 > /dev/null || fail "synthcity"
cat > config.lua <<'LUA'
return {name = "a", seed = 3, threads = 1,
        data = {root = "data", batch_size = 4, workers = 2, augment = {crop = {32, 64}}},
        model = {name = "bench_student"},
        train = {iterations = 300, log_every = 50, eval_every = 0, checkpoint_every = 20, grids = 1}}
LUA
"$kdseg" train config.lua > a.log 2>&1 || { fail "uninterrupted run"; cat a.log; }

"$kdseg" train config.lua name=b > b.log 2>&1 &
pid=$!
i=0
while [ ! -f runs/b/checkpoints/state.safetensors ] && [ $i -lt 600 ]; do sleep 0.02; i=$((i + 1)); done
if kill -9 $pid 2>/dev/null; then ok; else fail "the run ended before it could be killed"; fi
wait $pid 2>/dev/null
killed_at=$("$kdseg" -e 'local _, m = kd.load("runs/b/checkpoints/state.safetensors"); print(m.iteration)')
if [ "$killed_at" -lt 300 ] 2>/dev/null; then ok; else fail "checkpoint at iteration '$killed_at', expected < 300"; fi
"$kdseg" train config.lua name=b --resume > b2.log 2>&1 || { fail "resumed run"; tail -5 b2.log; }
if grep -q "resumed from iteration $killed_at of 300" b2.log; then ok; else fail "the run did not resume from $killed_at"; head -3 b2.log; fi
same=$("$kdseg" -e '
local a, b = kd.load("runs/a/checkpoints/last.safetensors"), kd.load("runs/b/checkpoints/last.safetensors")
local n, worst = 0, 0
for name, t in pairs(a) do
  n = n + 1
  if not b[name] then print("missing " .. name) os.exit(1) end
  local d = (t:to("float32") - b[name]:to("float32")):sum_squares()
  if d > worst then worst = d end
end
print(n > 0 and worst == 0 and "identical" or ("differ " .. worst))')
if [ "$same" = "identical" ]; then ok; else fail "weights after resume (killed at $killed_at): $same"; fi
lines=$(grep -c '"type":"train"' runs/b/metrics.jsonl)
if [ "$lines" = 6 ]; then ok; else fail "metrics.jsonl of the resumed run has $lines train lines, expected 6"; fi
# engine.json keeps how the run began; a resume under another convolution
# algorithm goes on and says so (its bits differ from an uninterrupted run's)
if ! grep -q "warning" b2.log && grep -q '"conv_algorithm"' runs/b/engine.json; then ok; else fail "engine.json, and no warning on a resume as begun"; fi
began=$(sed 's/.*"conv_algorithm":"\([a-z]*\)".*/\1/' runs/b/engine.json)
other=$([ "$began" = direct ] && echo winograd || echo direct)
KDSEG_CONV_ALGORITHM=$other "$kdseg" train config.lua name=b --resume > b3.log 2>&1 || { fail "resumed again"; tail -3 b3.log; }
if grep -q "warning: runs/b: resumed with conv_algorithm $other, where it began with $began" b3.log; then ok
else fail "a resume under another algorithm is named"; tail -3 b3.log; fi
echo "killed at iteration $killed_at"
finish
