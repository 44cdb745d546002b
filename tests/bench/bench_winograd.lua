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
local here = arg[0]:match("^(.*)/[^/]*$") or "."
local alternate = dofile(here .. "/alternate.lua")

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
    local row = alternate(x, x, w, options, g, 11)
    row.bench, row.kernels, row.threads, row.images, row.channels, row.height, row.width =
      "winograd", kernels, n, N, c, H, W
    print(cjson.encode(row))
    io.stdout:flush()
  end
end
kd.set_conv_algorithm(algorithm)
kd.set_layout(layout)
