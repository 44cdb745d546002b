-- bench_nets: the training-step and inference benchmarks of
-- ../shared/bench/NETS.md for bench_student and bench_teacher (batch 8,
-- 3 x 128 x 256, 19 classes): training step = forward, cross-entropy,
-- backward, SGD (momentum 0.9, weight decay 1e-4), median of 20 after 3
-- warm-ups; inference = forward in evaluation mode, median of 10 (and of 10
-- alternated with them with the ops one by one in NCHW: inference_unfused_ms).
-- Each beside the lower
-- bound: the step's FLOPs (3 x forward) over the sgemm peak measured in the
-- same run. The machine is shared and its speed drifts, so the sgemm peak is
-- also measured right after the timed steps: step_over_bound divides the median
-- step by the bound at the median of those peaks; step_over_best_bound uses
-- the best sgemm rate seen (the stricter figure).
-- Prints JSON lines. Usage: kdseg tests/bench/bench_nets.lua [threads...] [bench_student|bench_teacher...]
local cjson = require("cjson")
local C = kd._C
local here = arg[0]:match("^(.*)/[^/]*$") or "."
local fixture = dofile(here .. "/nets_fixture.lua")
local median = dofile(here .. "/median.lua")

local threads, nets = {}, {}
for _, a in ipairs(arg) do
  if tonumber(a) then threads[#threads + 1] = tonumber(a) else nets[#nets + 1] = a end
end
if #threads == 0 then threads = {1, 2} end
if #nets == 0 then nets = {"bench_student", "bench_teacher"} end

-- "winograd" where it is asked for and kernels for it run here (oneDNN's on
-- AVX-512, kdseg's own elsewhere: winograd_kernels says whose), else "direct"
local function algorithm_ran()
  local asked, available = kd.conv_algorithm()
  return asked == "winograd" and available and "winograd" or "direct"
end

for _, n in ipairs(threads) do
  kd.set_threads(n)
  local peak = C.gemm_gflops(2048, 2048, 2048, 3)
  for _, name in ipairs(nets) do
    local net, opt, x, y = fixture(name)
    local forward_flops = kd.models.flops(net, {8, 3, 128, 256})
    C.reset_peak_memory()
    -- the process's peak resident memory over the steps, as torch_ref.py
    -- reports it (ru_maxrss there), but without the GEMM probes between
    -- steps (their 32 MiB of matrices on top of the tensor cache): the
    -- peak is lowered to the resident memory after each probe and read
    -- after each step. Where the kernel does not allow lowering it, the
    -- probes count.
    C.reset_rss_peak() -- (and without the first probe's, before the steps)
    local rss = C.rss_peak()
    local times, peaks = {}, {peak}
    for it = 1, 23 do
      local t0 = C.clock()
      local loss = kd.losses.cross_entropy(net(x), y)
      opt:zero_grad()
      loss:backward()
      opt:step()
      rss = math.max(rss, C.rss_peak())
      if it > 3 then times[#times + 1] = C.clock() - t0 end
      C.reset_rss_peak()
    end
    -- The GEMM probes come after the steps, not between them: each probe
    -- maps and unmaps 32 MiB, and on a 2-core Zen 5 guest whose page faults
    -- are slow (2026-12-02) the step after such a probe took 98 ms instead
    -- of 64 at 1 thread (41.7 against 40.3 at 2), so the interleaved probes
    -- measured the probe's cost rather than the step's.
    for _ = 1, #times do peaks[#peaks + 1] = C.gemm_gflops(2048, 2048, 1024, 1) end
    local step = median(times)
    local best_peak = math.max(unpack(peaks))
    local step_peak = median(peaks)
    net:eval()
    -- inference as it runs by default (outputs left in the blocked layout,
    -- batch norms folded into the convolutions), alternated with the ops one
    -- by one in NCHW (kd.set_layout("nchw"), kd.nn.set_folding(false))
    local infer, infer_unfused = {}, {}
    local layout, folding = kd.set_layout("blocked"), kd.nn.set_folding(true)
    for it = 1, 26 do
      local unfused = it % 2 == 0
      kd.set_layout(unfused and "nchw" or "blocked")
      kd.nn.set_folding(not unfused)
      local t0 = C.clock()
      kd.no_grad(function() return net(x) end)
      if it > 6 then table.insert(unfused and infer_unfused or infer, C.clock() - t0) end
    end
    kd.set_layout(layout)
    kd.nn.set_folding(folding)
    local bound = 3 * forward_flops / (step_peak * 1e9)
    print(cjson.encode({bench = name, threads = n, train_step_ms = 1e3 * step, inference_ms = 1e3 * median(infer),
                        inference_unfused_ms = 1e3 * median(infer_unfused),
                        train_step_gflop = 3 * forward_flops / 1e9, sgemm_peak_gflops = step_peak,
                        sgemm_best_gflops = best_peak, bound_ms = 1e3 * bound, step_over_bound = step / bound,
                        step_over_best_bound = step * best_peak * 1e9 / (3 * forward_flops),
                        peak_tensor_mib = C.memory().peak_bytes / 2 ^ 20, peak_rss_mib = rss / 2 ^ 20,
                        conv_precision = kd.conv_precision(), conv_algorithm = algorithm_ran(),
                        winograd_kernels = select(3, kd.conv_algorithm())}))
    io.stdout:flush()
  end
end
