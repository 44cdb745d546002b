-- The two convolution paths against each other on every network of the zoo
-- (narrow widths): oneDNN's kernels (the default) and the portable im2col +
-- GEMM path, forward and every gradient, batch 1 and odd sizes included.
-- (tests/c/test_ops.c and test_gradcheck.c hold both to the naive
-- convolution and to finite differences; run-all runs the C tests on each.)
local h = require("harness")
local T = {}

local function narrow(name)
  local options = {classes = 5}
  local takes = kd.models.options(name) or {}
  if takes.width and (name:find("_resnet") or name:find("_mobilenetv2")) then options.width = 8 end
  return options
end

-- logits and gradients of every parameter after one backward of their sum
-- of squares, in evaluation mode: a training-mode batch norm over a batch of
-- 2 turns rounding differences of 1e-7 into gradient differences of 10%
-- where it divides by a tiny batch variance, which says nothing of the
-- convolutions (training mode is compared on the logits alone). The running
-- means are moved off 0: at initialisation a batch norm then passes an
-- exact 0 from its convolution (a window of zeros after a ReLU) on as an
-- exact 0 to the next ReLU.
local function evaluation_net(name)
  kd.manual_seed(3)
  local net = kd.models.create(name, narrow(name))
  net:eval()
  for _, pair in ipairs(net:named_buffers()) do
    if pair[1]:find("running_mean$") then pair[2]:copy_(kd.randn(pair[2].shape) * 0.1) end
  end
  return net
end

-- A pre-activation within rounding of 0 may fall on either side of a ReLU
-- with two kernels that round differently, and both are right; the
-- gradient of every layer below it then moves by up to 2e-2 of its largest
-- value. ResNet-101 on the 2x3x40x56 input has one under Winograd
-- (layer3.17.bn1's pre-ReLU value at -1.0e-3 with Winograd, +1.3e-3 with
-- im2col, where that layer's largest is 2.2e4: 6e-8 of it); its logits
-- agree to 2e-6. So both runs take their ReLUs' choices from the im2col
-- run: every ReLU (kd.relu, kd.relu6, kd.batch_norm's relu) runs as x times
-- a mask that passes its gradient, recorded by the im2col run and replayed
-- by the oneDNN run, and each place where the oneDNN run's own choice
-- differs must hold a value within 1e-5 of its layer's largest of 0 (or of
-- relu6's 6). The gradients then compare the convolutions alone.
local relu6 = kd.relu6 -- (kd.relu6 itself is replaced below)
local function step(x, at) -- 1 where x > at, else 0 (x times 1e30 saturates relu6 from 6e-30 on)
  return relu6(kd.affine(x:detach(), 1e30, -(at or 0) * 1e30)) * (1 / 6)
end

local function check_flips(what, x, six, own, chosen)
  if (own - chosen):sum_squares() == 0 then return end
  local largest, worst = 0, 0
  for i = 1, x:numel() do
    local v = x:get(i)
    largest = math.max(largest, math.abs(v))
    -- (relu6 also turns at 6)
    if own:get(i) ~= chosen:get(i) then worst = math.max(worst, six and math.min(math.abs(v), math.abs(v - 6)) or math.abs(v)) end
  end
  h.truthy(worst <= 1e-5 * largest, string.format(
    "%s: a ReLU falls on the other side at %g, where its layer's largest value is %g", what, worst, largest))
end

-- f() with every ReLU as a mask: the masks of `reference` (a list from an
-- earlier call, in call order) where given; returns f's results and this
-- call's masks.
local function with_relu_masks(what, f, reference)
  local masks, saved = {}, {relu = kd.relu, relu6 = kd.relu6, batch_norm = kd.batch_norm}
  local function masked(x, six)
    local own = {pass = six and step(x) - step(x, 6) or step(x), saturated = six and step(x, 6)}
    local chosen = reference and reference[#masks + 1] or own
    if reference then check_flips(what, x, six, own.pass, chosen.pass) end
    masks[#masks + 1] = chosen
    local y = x * chosen.pass
    if six then y = y + chosen.saturated * 6 end
    return y
  end
  kd.relu = function(x) return masked(x, false) end
  kd.relu6 = function(x) return masked(x, true) end
  kd.batch_norm = function(x, w, b, mean, var, options)
    if not (options and options.relu) then return saved.batch_norm(x, w, b, mean, var, options) end
    local plain = {}
    for k, v in pairs(options) do plain[k] = v end
    plain.relu = false
    return masked(saved.batch_norm(x, w, b, mean, var, plain), false)
  end
  local results = {pcall(f)}
  kd.relu, kd.relu6, kd.batch_norm = saved.relu, saved.relu6, saved.batch_norm
  if not results[1] then error(results[2], 0) end
  return results[2], results[3], masks
end

local function run(name, backend, x, reference)
  return with_relu_masks(string.format("%s, %s", name, backend), function()
    kd.set_conv_backend(backend)
    local net = evaluation_net(name)
    local y = net(x)
    local loss = (y * y):sum()
    loss:backward()
    local grads = {}
    for i, p in ipairs(net:parameters()) do grads[i] = p.grad end
    return y, grads
  end, reference)
end

local function relative(a, b)
  local d, m = 0, 0
  for i = 1, a:numel() do
    d = math.max(d, math.abs(a:get(i) - b:get(i)))
    m = math.max(m, math.abs(b:get(i)))
  end
  return d / math.max(m, 1e-6)
end

function T.onednn_and_im2col_agree_on_the_zoo()
  local previous = kd.set_conv_backend("onednn")
  for _, size in ipairs({{2, 3, 40, 56}, {1, 3, 33, 47}}) do
    local x = kd.randn(size)
    for _, name in ipairs(kd.models.names()) do
      local y2, g2, masks = run(name, "im2col", x)
      local y1, g1 = run(name, "onednn", x, masks)
      local what = string.format("%s on %s", name, table.concat(size, "x"))
      h.truthy(relative(y1, y2) < 1e-4, what .. ": logits differ by " .. relative(y1, y2))
      if size[1] > 1 then -- (a training batch norm needs 2 values per channel: ASPP's pooled branch has 1 per image)
        kd.set_conv_backend("onednn"); kd.manual_seed(3)
        local t1 = kd.no_grad(kd.models.create(name, narrow(name)), x)
        kd.set_conv_backend("im2col"); kd.manual_seed(3)
        local t2 = kd.no_grad(kd.models.create(name, narrow(name)), x)
        -- (ResNet-101 in training mode: 5e-4 after a hundred batch norms on 2 images)
        h.truthy(relative(t1, t2) < 1e-2, what .. ": training-mode logits differ by " .. relative(t1, t2))
      end
      h.eq(#g1, #g2, what .. ": gradients")
      for i = 1, #g1 do
        local r = relative(g1[i], g2[i])
        h.truthy(r < 1e-4, string.format("%s: gradient %d differs by %g (relative to its largest value)", what, i, r))
      end
    end
  end
  kd.set_conv_backend(previous)
end

-- The blocked layout (kd.set_layout, core/engine/layout.c): every network of
-- the zoo gives the same bits in evaluation mode without gradient, where
-- convolutions leave their outputs blocked for the next op, as with NCHW
-- throughout; in training mode without gradient too (batch norms on
-- batch statistics, their running estimates updated alike), and in
-- bfloat16. Where oneDNN runs, a convolution's output is blocked then.
local function same_bits(a, b)
  if a:numel() ~= b:numel() then return false end
  for i = 1, a:numel() do if a:get(i) ~= b:get(i) then return false end end
  return true
end

function T.blocked_layout_changes_no_bit()
  local previous = kd.set_layout("blocked")
  local precisions = {"float32"}
  if pcall(kd.set_conv_precision, "bf16") then precisions[2] = "bf16" end
  kd.set_conv_precision("float32")
  local x = kd.randn({2, 3, 40, 56})
  for _, precision in ipairs(precisions) do
    for _, name in ipairs(kd.models.names()) do
      for _, mode in ipairs({"eval", "train"}) do
        local out, stats = {}, {}
        for _, layout in ipairs({"nchw", "blocked"}) do
          kd.set_layout(layout)
          kd.set_conv_precision(precision)
          kd.manual_seed(3)
          local net = kd.models.create(name, narrow(name))
          if mode == "eval" then net:eval() end
          out[layout] = kd.no_grad(net, x)
          stats[layout] = 0
          for _, pair in ipairs(net:named_buffers()) do
            if pair[1]:find("running_") then stats[layout] = stats[layout] + pair[2]:sum_squares() end
          end
          kd.set_conv_precision("float32")
        end
        local what = string.format("%s in %s mode, %s", name, mode, precision)
        h.truthy(same_bits(out.nchw, out.blocked), what .. ": the logits differ between the layouts")
        h.eq(stats.blocked, stats.nchw, what .. ": running statistics")
      end
    end
  end
  if pcall(kd.set_conv_backend, "onednn") then
    local y = kd.no_grad(kd.conv2d, kd.randn({1, 16, 8, 8}), kd.randn({32, 16, 3, 3}), nil, {padding = 1})
    h.truthy(kd._C.blocked(y) > 0, "a convolution's output without gradient is blocked")
  end
  h.raises(function() kd.set_layout("nhwc") end, "'blocked' or 'nchw', got 'nhwc'")
  kd.set_layout(previous)
end

-- In training with gradients (batch norms on batch statistics), a
-- convolution's output stays blocked for the next op and its gradient comes
-- back blocked (core/engine/layout.c): every network of the zoo gives the
-- same logits, loss, parameter gradients and running statistics as with
-- NCHW throughout, value for value (a gradient written straight by oneDNN
-- may hold -0 where NCHW's adding into zeros gives +0).
function T.blocked_layout_in_training_changes_no_gradient()
  local previous = kd.set_layout("blocked")
  local x = kd.randn({2, 3, 40, 56})
  for _, name in ipairs(kd.models.names()) do
    local got = {}
    for _, layout in ipairs({"nchw", "blocked"}) do
      kd.set_layout(layout)
      kd.manual_seed(3)
      local net = kd.models.create(name, narrow(name))
      local y = net(x)
      local loss = (y * y):sum()
      loss:backward()
      local r = {y = y, loss = loss:item(), grads = {}, stats = 0}
      for i, p in ipairs(net:parameters()) do r.grads[i] = p.grad end
      for _, pair in ipairs(net:named_buffers()) do
        if pair[1]:find("running_") then r.stats = r.stats + pair[2]:sum_squares() end
      end
      got[layout] = r
    end
    local a, b = got.nchw, got.blocked
    h.truthy(same_bits(a.y, b.y), name .. ": the logits differ between the layouts in training")
    h.eq(b.loss, a.loss, name .. ": loss")
    h.eq(b.stats, a.stats, name .. ": running statistics")
    h.eq(#b.grads, #a.grads, name .. ": gradients")
    for i = 1, #a.grads do
      h.truthy(same_bits(a.grads[i], b.grads[i]), string.format("%s: gradient of parameter %d differs between the layouts", name, i))
    end
  end
  kd.set_layout(previous)
end

-- Inference's folded convolution + batch norm (+ residual) (+ ReLU)
-- (kd.conv2d_bn, Conv2d:forward_bn): a case worked by hand, then every
-- network of the zoo in evaluation mode against the ops one by one
-- (kd.nn.set_folding(false)), on oneDNN and on the portable path; it records
-- no gradient, and refuses where one is wanted.
function T.conv2d_bn_folds_the_batch_norm()
  -- 1x1 conv of one channel into two: w = {2, -1}, bias {0.5, 0};
  -- bn: gamma {1, 3}, beta {0, 1}, mean {1, 0}, var {3, 8} (eps 1: sqrt 2, 3)
  local x = kd.tensor({{{{1, -2}}}})
  local w, b = kd.tensor({{{{2}}}, {{{-1}}}}), kd.tensor({0.5, 0})
  local g, beta, m, v = kd.tensor({1, 3}), kd.tensor({0, 1}), kd.tensor({1, 0}), kd.tensor({3, 8})
  local r = kd.tensor({{{{0, 0}}, {{-2, 0}}}})
  for _, backend in ipairs({"onednn", "im2col"}) do
    if pcall(kd.set_conv_backend, backend) then
      local y = kd.no_grad(kd.conv2d_bn, x, w, b, g, beta, m, v, r, {eps = 1, relu = true})
      -- channel 0: (2x + 0.5 - 1) / 2 = {0.75, -2.25}; channel 1: 3(-x)/3 + 1 = {0, 3}, + r = {-2, 3}; ReLU
      local want = {0.75, 0, 0, 3}
      for i = 1, 4 do h.near(y:get(i), want[i], 1e-6, backend .. ": element " .. i) end
    end
  end
  kd.set_conv_backend("onednn")
  local wg = kd.tensor({{{{2}}}, {{{-1}}}})
  wg.requires_grad = true
  h.raises(function() kd.conv2d_bn(x, wg, nil, g, beta, m, v) end, "inference only")
  h.raises(function() kd.no_grad(kd.conv2d_bn, x, w, nil, g, beta, m, v, kd.zeros({1, 3, 1, 2})) end,
           "residual 1x3x1x2 does not match the output 1x2x1x2")
  h.raises(function() kd.no_grad(kd.conv2d_bn, x, w, nil, g, beta, kd.zeros({3}), v) end, "running_mean 3")
  h.raises(function() kd.no_grad(kd.conv2d_bn, x, w, nil, g, beta, nil, nil) end, "running statistics")

  local input = kd.randn({2, 3, 40, 56})
  for _, backend in ipairs({"onednn", "im2col"}) do
    if pcall(kd.set_conv_backend, backend) then
      -- (the portable path on a residual network, a factorised one and a depthwise one: the rest is slow there)
      for _, name in ipairs(backend == "onednn" and kd.models.names() or {"bench_student", "erfnet", "mobilenetv2"}) do
        local out = {}
        for _, fold in ipairs({false, true}) do
          local was = kd.nn.set_folding(fold)
          kd.manual_seed(3)
          local net = kd.models.create(name, narrow(name))
          -- running statistics off their initial 0 and 1, so the folding has something to fold
          for _, pair in ipairs(net:named_buffers()) do
            if pair[1]:find("running_mean") then pair[2]:copy_(kd.randn(pair[2].shape) * 0.1) end
            if pair[1]:find("running_var") then pair[2]:copy_(kd.rand(pair[2].shape) + 0.5) end
          end
          net:eval()
          out[fold] = kd.no_grad(net, input)
          kd.nn.set_folding(was)
        end
        local r = math.sqrt((out[true] - out[false]):sum_squares() / out[false]:sum_squares())
        h.truthy(r < 1e-5, string.format("%s on %s: folded logits differ by %g", name, backend, r))
      end
    end
  end
  kd.set_conv_backend("onednn")
end

-- bfloat16 compute (kd.set_conv_precision): the convolutions of each
-- geometry the zoo uses (3x3, strided, dilated, 1x1, depthwise, batch 1 and
-- odd sizes) against float32, output and both gradients, within bfloat16's
-- rounding (8 bits of mantissa: about 0.4% per operand) and not equal to
-- float32 (so the bfloat16 kernels did run). Where oneDNN has no bfloat16
-- kernels, asking for them is an error that says so.
-- One convolution of geometry geo ({x =, w =, o = options, bias = true or
-- not}) on inputs drawn at seed k, and its output, input gradient and
-- weight gradient after a backward of a random projection.
local function conv_and_grads(geo, k)
  kd.manual_seed(k)
  local x, w = kd.randn(geo.x), kd.randn(geo.w) * 0.2
  local b = geo.bias and kd.randn({geo.w[1]}) or nil
  x.requires_grad, w.requires_grad = true, true
  local y = kd.conv2d(x, w, b, geo.o)
  local loss = (y * kd.randn(y.shape)):sum()
  loss:backward()
  return {y, x.grad, w.grad}
end

function T.bf16_convolutions()
  local available = pcall(kd.set_conv_precision, "bf16")
  kd.set_conv_precision("float32")
  if not available then
    h.raises(function() kd.set_conv_precision("bf16") end, "no bfloat16 convolutions for this CPU")
    print("  (no bfloat16 convolutions on this CPU: only the error is checked)")
    return
  end
  local geometries = {
    {x = {2, 16, 17, 23}, w = {24, 16, 3, 3}, o = {padding = 1}},
    {x = {1, 8, 20, 21}, w = {16, 8, 3, 3}, o = {padding = 1, stride = 2}},
    {x = {2, 16, 12, 12}, w = {16, 16, 3, 3}, o = {padding = 4, dilation = 4}},
    {x = {2, 32, 9, 11}, w = {8, 32, 1, 1}, o = {}},
    {x = {2, 16, 14, 14}, w = {16, 1, 3, 3}, o = {padding = 1, groups = 16}},
  }
  for k, geo in ipairs(geometries) do
    local function run(precision)
      kd.set_conv_precision(precision)
      local result = conv_and_grads(geo, k)
      kd.set_conv_precision("float32")
      return result
    end
    local f32, bf16 = run("float32"), run("bf16")
    for i, what in ipairs({"output", "input gradient", "weight gradient"}) do
      local r = math.sqrt((bf16[i] - f32[i]):sum_squares() / f32[i]:sum_squares())
      local where = string.format("geometry %d, %s", k, what)
      h.truthy(r < 1e-2, where .. ": bfloat16 off float32 by " .. r)
      h.truthy(r > 0, where .. ": bfloat16 gave float32's result exactly (did its kernels run?)")
    end
  end
  h.raises(function() kd.set_conv_precision("fp16") end, "'bf16' or 'float32', got 'fp16'")
  h.eq(kd.conv_precision(), "float32", "the default")
end

-- Winograd F(4x4, 3x3) (kd.set_conv_algorithm, KDSEG_CONV_ALGORITHM): on
-- 3x3 stride-1 convolutions like the zoo's (odd sizes, batch 1, 3 to 128
-- channels, maps smaller than one 4x4 tile, a bias), and dilated ones with
-- the padding that keeps the size (run on sub-images, conv_subimages.c:
-- sides that are multiples of the dilation and sides that are not), the
-- output and both gradients within 1e-5 of direct convolution (relative to
-- the largest value), and other bits than direct where oneDNN has the
-- kernels (so they ran); the same bits where it has none, for strided,
-- grouped and other dilated convolutions, which always run direct, and for
-- dilated ones whose sub-images are too small for Winograd to pay (maps
-- smaller than the dilation, the accuracy benchmark's 8 x 16 at dilation 6). Every network of the zoo
-- gives logits and gradients within 1e-4 of direct (with the running means
-- off 0, see evaluation_net: where direct convolution gives an exact 0
-- before a ReLU, Winograd's transforms leave a rounding error of either
-- sign, and the ReLU's gradient flips; that moved one of bench_teacher's
-- weight gradients by 4%; and with direct's ReLU masks, see
-- with_relu_masks).
function T.winograd_convolutions()
  local previous_backend = kd.set_conv_backend("onednn")
  local previous_algorithm, available, kernels = kd.conv_algorithm()
  local geometries = {
    {x = {1, 3, 33, 47}, w = {16, 3, 3, 3}, o = {padding = 1}},
    {x = {2, 16, 20, 28}, w = {32, 16, 3, 3}, o = {padding = 1}, bias = true},
    {x = {1, 64, 9, 12}, w = {64, 64, 3, 3}, o = {padding = 1}},
    {x = {1, 128, 3, 2}, w = {128, 128, 3, 3}, o = {padding = 1}},
    {x = {2, 32, 11, 13}, w = {16, 32, 3, 3}, o = {}},
    {x = {2, 16, 20, 21}, w = {16, 16, 3, 3}, o = {padding = 1, stride = 2}, direct = true},
    {x = {2, 16, 16, 12}, w = {16, 16, 3, 3}, o = {padding = 2, dilation = 2}},
    {x = {1, 32, 15, 17}, w = {16, 32, 3, 3}, o = {padding = 2, dilation = 2}, bias = true},
    {x = {1, 16, 30, 35}, w = {32, 16, 3, 3}, o = {padding = 4, dilation = 4}},
    {x = {2, 3, 23, 22}, w = {8, 3, 3, 3}, o = {padding = 3, dilation = 3}},
    -- sub-images too small for Winograd's 4x4 tiles to pay: direct
    {x = {2, 16, 12, 12}, w = {16, 16, 3, 3}, o = {padding = 2, dilation = 2}, direct = true},
    {x = {2, 16, 13, 10}, w = {32, 16, 3, 3}, o = {padding = 4, dilation = 4}, direct = true},
    {x = {1, 16, 3, 5}, w = {16, 16, 3, 3}, o = {padding = 4, dilation = 4}, direct = true},
    {x = {2, 3, 9, 7}, w = {8, 3, 3, 3}, o = {padding = 3, dilation = 3}, direct = true},
    {x = {2, 128, 8, 16}, w = {64, 128, 3, 3}, o = {padding = 6, dilation = 6}, direct = true},
    {x = {2, 16, 12, 12}, w = {16, 16, 3, 3}, o = {padding = 1, dilation = 2}, direct = true},
    {x = {2, 16, 14, 14}, w = {16, 4, 3, 3}, o = {padding = 1, groups = 4}, direct = true},
    {x = {2, 16, 14, 14}, w = {16, 4, 3, 3}, o = {padding = 2, dilation = 2, groups = 4}, direct = true},
  }
  for k, geo in ipairs(geometries) do
    local function run(algorithm)
      kd.set_conv_algorithm(algorithm)
      local result = conv_and_grads(geo, k)
      kd.set_conv_algorithm("direct")
      return result
    end
    local direct, winograd = run("direct"), run("winograd")
    -- where oneDNN has no Winograd (kdseg's kernels), it has no direct JIT
    -- kernel for more dilated layers either: those that would run on its
    -- GEMM fallback go to sub-images however small, and so to Winograd
    local on_subimages = geo.o.dilation and geo.o.padding == geo.o.dilation and not geo.o.groups
    local either = geo.direct and kernels == "kdseg" and on_subimages
    for i, what in ipairs({"output", "input gradient", "weight gradient"}) do
      local where = string.format("geometry %d, %s", k, what)
      local r = relative(winograd[i], direct[i])
      h.truthy(r < 1e-5, where .. ": Winograd off direct by " .. r)
      if either then -- luacheck: ignore 542 (checked above: within Winograd's rounding of direct)
      elseif available and not geo.direct then
        h.truthy(r > 0, where .. ": Winograd gave direct's bits (did its kernels run?)")
      else
        h.truthy(same_bits(winograd[i], direct[i]), where .. ": not Winograd's geometry or CPU, yet not direct's bits")
      end
    end
  end
  local x = kd.randn({1, 3, 33, 47})
  for _, name in ipairs(kd.models.names()) do
    kd.set_conv_algorithm("direct")
    local y2, g2, masks = run(name, "onednn", x)
    kd.set_conv_algorithm("winograd")
    local y1, g1 = run(name, "onednn", x, masks)
    kd.set_conv_algorithm("direct")
    local r = relative(y1, y2)
    h.truthy(r < 1e-4, string.format("%s: Winograd's logits off direct's by %g", name, r))
    for i = 1, #g1 do
      r = relative(g1[i], g2[i])
      h.truthy(r < 1e-4, string.format("%s: Winograd's gradient %d off direct's by %g", name, i, r))
    end
  end
  h.raises(function() kd.set_conv_algorithm("fft") end, "'winograd' or 'direct', got 'fft'")
  kd.set_conv_algorithm(previous_algorithm)
  h.eq(kd.conv_algorithm(), os.getenv("KDSEG_CONV_ALGORITHM") == "direct" and "direct" or "winograd",
       "the default, or KDSEG_CONV_ALGORITHM's")
  kd.set_conv_backend(previous_backend)
end

-- oneDNN keeps its blocked copy of a convolution's input for the weight
-- gradient; a backward that runs on the portable path (the backend switched
-- between forward and backward) reads that copy back, in float32 exactly
-- and in bfloat16 as rounded. Each gives the weight gradients of a backward
-- on oneDNN, for a plain, a strided, a grouped and a dilated convolution;
-- and with Winograd, where the dilated one keeps its sub-images
-- (conv_subimages.c), on a side no multiple of the dilation too.
function T.kept_input_read_back_by_the_portable_path()
  local previous = kd.set_conv_backend("onednn")
  local cases = {{16, 32, 3, {padding = 1}}, {16, 16, 3, {stride = 2, padding = 1}},
                 {32, 32, 3, {padding = 2, dilation = 2, groups = 4}}, {16, 16, 3, {padding = 2, dilation = 2}},
                 {16, 16, 3, {padding = 3, dilation = 3}}}
  local settings = {"float32"} -- each with direct convolutions but "winograd" (float32)
  if pcall(kd.set_conv_precision, "bf16") then settings[2] = "bf16" end
  if select(2, kd.conv_algorithm()) then settings[#settings + 1] = "winograd" end
  for _, setting in ipairs(settings) do
    kd.set_conv_precision(setting == "bf16" and "bf16" or "float32")
    kd.set_conv_algorithm(setting == "winograd" and "winograd" or "direct")
    for k, c in ipairs(cases) do
      local function weight_grad(switch)
        kd.set_conv_backend("onednn")
        kd.manual_seed(k)
        local conv = kd.nn.Conv2d(c[1], c[2], c[3], c[4])
        local x = kd.randn({2, c[1], 12, 20})
        local y = conv(x)
        if switch then kd.set_conv_backend("im2col") end
        (y * y):sum():backward()
        return conv.weight.grad
      end
      local r = relative(weight_grad(true), weight_grad(false))
      local tolerance = setting == "bf16" and 2e-2 or 1e-4
      h.truthy(r < tolerance, string.format("%s, case %d: weight gradients differ by %g", setting, k, r))
    end
  end
  kd.set_conv_precision("float32")
  kd.set_conv_algorithm("direct")
  kd.set_conv_backend(previous)
end

function T.backend_names()
  h.raises(function() kd.set_conv_backend("cuda") end, "'onednn' or 'im2col', got 'cuda'")
end

return T
