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
local here = arg[0]:match("^(.*)/[^/]*$") or "."
local alternate = dofile(here .. "/alternate.lua")

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
      local row = alternate(blocked, x, w, options, g, 15)
      row.bench, row.threads, row.channels, row.dilation = "dilated", n, c, d
      print(cjson.encode(row))
      io.stdout:flush()
    end
  end
end
kd.set_conv_algorithm(algorithm)
kd.set_layout(layout)
