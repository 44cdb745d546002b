-- bench_winograd: the undilated 3x3 stride-1 layers of the benchmark
-- networks (../shared/bench/NETS.md: 32 and 64 channels at 32 x 64, 64 and
-- 128 at 16 x 32, and the teacher's 128-channel layers of dilation 2 and 4
-- as their sub-images run them: 32 x 8 x 16 and 128 x 4 x 8), direct
-- against Winograd, alternated in one run. Winograd runs on oneDNN's
-- kernels where it has them (AVX-512) and on kdseg's own elsewhere
-- (core/ops/conv_winograd.c; KDSEG_OWN_WINOGRAD=always takes kdseg's
-- anywhere, and ONEDNN_MAX_CPU_ISA=AVX2 emulates an AVX2 CPU): "kernels"
-- says whose. Per layer and thread count: inference (no gradient, the
-- input blocked, as between two layers) and a training forward + backward
-- (both gradients), medians of 11 after 3 warm-ups. Prints JSON lines.
--   kdseg tests/bench/bench_winograd.lua [threads...]
local cjson = require("cjson")
local C = kd._C

local function median_ms(f)
  for _ = 1, 3 do f() end
  local t = {}
  for i = 1, 11 do
    local t0 = C.clock()
    f()
    t[i] = C.clock() - t0
  end
  table.sort(t)
  return 1e3 * t[6]
end

local threads = {}
for _, a in ipairs(arg) do threads[#threads + 1] = tonumber(a) end
if #threads == 0 then threads = {1, 2} end
local algorithm, available, kernels = kd.conv_algorithm()
if not available then
  print(cjson.encode({bench = "winograd", skipped = "no Winograd kernels run here (oneDNN off)"}))
  return
end
local layout = kd.set_layout("blocked")
local layers = {{8, 32, 32, 64}, {8, 64, 32, 64}, {8, 64, 16, 32}, {8, 128, 16, 32}, {32, 128, 8, 16}, {128, 128, 4, 8}}
for _, n in ipairs(threads) do
  kd.set_threads(n)
  for _, l in ipairs(layers) do
    kd.manual_seed(0)
    local N, c, H, W = l[1], l[2], l[3], l[4]
    local w, g = kd.randn({c, c, 3, 3}) * 0.05, kd.randn({N, c, H, W})
    -- the blocked input a 1x1 convolution leaves
    local x = kd.no_grad(kd.conv2d, kd.randn({N, c, H, W}), kd.randn({c, c, 1, 1}) * 0.1)
    local options = {padding = 1}
    local times = {direct = {}, winograd = {}}
    for _, which in ipairs({"direct", "winograd", "direct", "winograd"}) do
      kd.set_conv_algorithm(which)
      local inference = median_ms(function() return kd.no_grad(kd.conv2d, x, w, nil, options) end)
      x.requires_grad, w.requires_grad = true, true
      local step = median_ms(function()
        local y = kd.conv2d(x, w, nil, options)
        ;(y * g):sum():backward()
      end)
      x.requires_grad, w.requires_grad = false, false
      x.grad, w.grad = nil, nil
      local t = times[which]
      t.inference = math.min(t.inference or math.huge, inference)
      t.step = math.min(t.step or math.huge, step)
    end
    print(cjson.encode({bench = "winograd", kernels = kernels, threads = n, images = N, channels = c, height = H,
                        width = W, direct_inference_ms = times.direct.inference,
                        winograd_inference_ms = times.winograd.inference,
                        inference_ratio = times.winograd.inference / times.direct.inference,
                        direct_step_ms = times.direct.step, winograd_step_ms = times.winograd.step,
                        step_ratio = times.winograd.step / times.direct.step}))
    io.stdout:flush()
  end
end
kd.set_conv_algorithm(algorithm)
kd.set_layout(layout)
