-- Run by tests/dist/test_dist.sh on 2 ranks: synchronised batch norm on each
-- rank's half of a batch gives what one process gives on the whole batch:
-- the output (each rank's half), the running statistics, the input gradient
-- (each half) and, averaged over the ranks, the weights' gradients. Without
-- sync the statistics are each rank's own, and differ. Rank 0 prints
-- "sync_bn ok" and the largest differences.
local rank = kd.dist.rank()
local function check(cond, what) if not cond then error(string.format("rank %d: %s", rank, what), 0) end end
kd.manual_seed(9)
local x = kd.randn({4, 3, 5, 6}) * 2 + 1 -- the global batch, the same on both ranks
local g = kd.randn({4, 4, 5, 6})          -- the gradient reaching the output
local function net()
  kd.manual_seed(3)
  local n = kd.nn.Sequential(kd.nn.Conv2d(3, 4, 3, {padding = 1}), kd.nn.BatchNorm2d(4))
  n:train()
  return n
end
-- one process's answer, computed on each rank alone (plain batch norm)
local whole = net()
local xw = x:clone(); xw.requires_grad = true
local yw = whole(xw);
(yw * g):sum():backward()

local half = net()
kd.dist.sync_batch_norm(half, true)
local averager = kd.dist.GradAverager(half:parameters())
local from = 2 * rank + 1
local xh = x:narrow(from, 2):clone(); xh.requires_grad = true
local yh = half(xh)
-- the loop's objective is the mean of the ranks' losses: with each rank's
-- loss twice its half's, the mean is the whole batch's loss, and the
-- averaged weights' gradients are its gradients. The input's gradient is
-- that of the sum of the ranks' losses (the synchronised sums take every
-- rank's): twice the whole loss's.
averager:backward((yh * g:narrow(from, 2)):sum() * 2)

-- relative to the reference's size, or absolute where that is under 1 (the
-- convolution's bias: a batch norm after it takes out any shift)
local function worst(a, b) return math.sqrt((a - b):sum_squares() / math.max(b:sum_squares(), 1)) end
local d = {
  output = worst(yh, yw:narrow(from, 2)),
  running_mean = worst(half["1"].running_mean, whole["1"].running_mean),
  running_var = worst(half["1"].running_var, whole["1"].running_var),
  input_grad = worst(xh.grad, xw.grad:narrow(from, 2) * 2),
}
for k, p in ipairs(half:parameters()) do d["param_grad_" .. k] = worst(p.grad, whole:parameters()[k].grad) end
for what, v in pairs(d) do check(v < 1e-5, string.format("%s differs from one process's by %g (relative)", what, v)) end
kd.dist.sync_batch_norm(half, false)

-- per-rank statistics differ from the whole batch's (the halves differ)
local own = net()
own(x:narrow(from, 2))
check(worst(own["1"].running_mean, whole["1"].running_mean) > 1e-3, "without sync, a rank's statistics are its own")
if rank == 0 then
  local parts = {}
  for what, v in pairs(d) do parts[#parts + 1] = string.format("%s %.1e", what, v) end
  table.sort(parts)
  print("sync_bn ok: " .. table.concat(parts, ", "))
end
