-- Ops through the Lua API: each loss term and a few layers pass a
-- finite-difference gradient check from Lua (kd.gradcheck), and forward
-- values agree with the core's naive twin.
local h = require("harness")
local T = {}

local function check(name, f, inputs, tolerance)
  local ok, report = kd.gradcheck(f, inputs, {tolerance = tolerance or 1e-2})
  if not ok then error(name .. ": " .. report, 2) end
end

local function labels(n, hh, w, classes)
  local t = kd.zeros({n, hh, w}, "int32")
  for i = 1, t:numel() do t:set(i, i % 7 == 0 and 255 or (i * 5) % classes) end
  return t
end

function T.loss_terms_gradcheck()
  local y = labels(2, 3, 4, 5)
  check("cross_entropy", function(x) return kd.losses.cross_entropy(x, y) end, {kd.randn({2, 5, 3, 4})})
  local w = kd.rand({2, 3, 4})
  check("cross_entropy pixel weights", function(x)
    return kd.losses.cross_entropy(x, y, {pixel_weight = w, reduction = "sum"}) end, {kd.randn({2, 5, 3, 4})})
  local teacher = kd.randn({2, 5, 3, 4})
  check("kl_div T=4", function(s) return kd.losses.kl_div(s, teacher, {temperature = 4}) end, {kd.randn({2, 5, 3, 4})})
  check("kl_div both", function(s, t) return kd.losses.kl_div(s, t, {temperature = 2, detach_target = false}) end,
        {kd.randn({2, 5, 3, 4}), kd.randn({2, 5, 3, 4})})
  check("pairwise", function(s, t) return kd.losses.pairwise_distill(s, t, {grid = {2, 2}}) end,
        {kd.randn({2, 4, 6, 6}), kd.randn({2, 3, 6, 6})}, 2e-2)
  check("mse", function(a, b) return kd.losses.mse(a, b) end, {kd.randn({3, 4}), kd.randn({3, 4})})
end

function T.layers_gradcheck()
  local conv = kd.nn.Conv2d(3, 4, 3, {padding = 2, dilation = 2, stride = 2})
  check("nn.Conv2d", function(x) return conv(x) end, {kd.randn({2, 3, 7, 6})})
  local bn = kd.nn.BatchNorm2d(3)
  check("nn.BatchNorm2d", function(x) return bn(x) end, {kd.randn({2, 3, 4, 5})}, 2e-2)
  check("softmax T", function(x) return kd.softmax(x, 3) end, {kd.randn({1, 4, 2, 3})})
  check("upsample x8", function(x) return kd.resize_bilinear(x, 16, 24) end, {kd.randn({1, 2, 2, 3})})
  check("concat + slice", function(a, b) return kd.slice_channels(kd.concat({a, b}), 2, 3) end,
        {kd.randn({1, 2, 3, 3}), kd.randn({1, 2, 3, 3})})
end

function T.fast_conv_matches_reference()
  local x, w, b = kd.randn({2, 6, 9, 10}), kd.randn({4, 3, 3, 3}), kd.randn({4})
  local options = {stride = {2, 1}, padding = {1, 2}, dilation = {1, 2}, groups = 2}
  local fast, slow = kd.conv2d(x, w, b, options), kd.conv2d_reference(x, w, b, options)
  h.truthy((fast - slow):sum_squares() < 1e-8, "conv2d equals the naive convolution")
end

function T.predictions()
  local logits = kd.tensor({{{{0.1, 2}}, {{3, -1}}}}) -- 1 x 2 x 1 x 2
  local values, classes = kd.max(logits)
  h.eq(classes:get(1), 1, "argmax pixel 1")
  h.eq(classes:get(2), 0, "argmax pixel 2")
  h.eq(values:get(1), 3, "max value")
  h.eq(logits:argmax().dtype, "int32", "argmax dtype")
  local nearest = kd.resize_nearest(kd.tensor({{{1, 2}, {3, 4}}}, "uint8"), 4, 4)
  h.eq(nearest:get(16), 4, "nearest resize of labels")
end

return T
