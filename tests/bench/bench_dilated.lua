-- bench_dilated: the dilated 3x3 convolutions of the benchmark networks
-- (../shared/bench/NETS.md: bench_student's ResBlock(64, 2) and (64, 4),
-- bench_teacher's 128-channel ones and ASPP branches; batch 8, 16 x 32) on
-- oneDNN's direct kernels and with Winograd, where they run undilated on
-- sub-images (core/ops/conv_subimages.c), alternated in one run. Per layer
-- and thread count: inference (no gradient, the input and output in the
-- blocked layout, as between two layers of a network at inference) and a
-- training forward + backward (NCHW, both gradients), medians of 15 after 3
-- warm-ups, and the ratio Winograd / direct. Prints JSON lines.
--   kdseg tests/bench/bench_dilated.lua [threads...]
local cjson = require("cjson")
local C = kd._C

local function median_ms(f)
  for _ = 1, 3 do f() end
  local t = {}
  for i = 1, 15 do
    local t0 = C.clock()
    f()
    t[i] = C.clock() - t0
  end
  table.sort(t)
  return 1e3 * t[8]
end

local threads = {}
for _, a in ipairs(arg) do threads[#threads + 1] = tonumber(a) end
if #threads == 0 then threads = {1, 2} end
local _, available = kd.conv_algorithm()
if not available then
  print(cjson.encode({bench = "dilated", skipped = "no Winograd kernels on this CPU"}))
  return
end
local algorithm, layout = kd.conv_algorithm(), kd.set_layout("blocked")
for _, n in ipairs(threads) do
  kd.set_threads(n)
  for _, c in ipairs({64, 128}) do
    for _, d in ipairs({2, 4}) do
      kd.manual_seed(0)
      local w = kd.randn({c, c, 3, 3}) * 0.05
      local x, g = kd.randn({8, c, 16, 32}), kd.randn({8, c, 16, 32})
      local options = {padding = d, dilation = d}
      -- the blocked input inference reads: what a 1x1 convolution leaves
      local blocked = kd.no_grad(kd.conv2d, x, kd.randn({c, c, 1, 1}) * 0.1)
      local times = {direct = {}, winograd = {}}
      for _, which in ipairs({"direct", "winograd", "direct", "winograd"}) do
        kd.set_conv_algorithm(which)
        local inference = median_ms(function() return kd.no_grad(kd.conv2d, blocked, w, nil, options) end)
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
      print(cjson.encode({bench = "dilated", threads = n, channels = c, dilation = d,
                          direct_inference_ms = times.direct.inference, winograd_inference_ms = times.winograd.inference,
                          inference_ratio = times.winograd.inference / times.direct.inference,
                          direct_step_ms = times.direct.step, winograd_step_ms = times.winograd.step,
                          step_ratio = times.winograd.step / times.direct.step}))
      io.stdout:flush()
    end
  end
end
kd.set_conv_algorithm(algorithm)
kd.set_layout(layout)
