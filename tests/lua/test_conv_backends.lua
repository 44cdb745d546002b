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
-- convolutions (training mode is compared on the logits alone).
local function run(name, backend, x)
  kd.set_conv_backend(backend)
  kd.manual_seed(3)
  local net = kd.models.create(name, narrow(name))
  net:eval()
  local y = net(x)
  local loss = (y * y):sum()
  loss:backward()
  local grads = {}
  for i, p in ipairs(net:parameters()) do grads[i] = p.grad end
  return y, grads
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
      local y1, g1 = run(name, "onednn", x)
      local y2, g2 = run(name, "im2col", x)
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

function T.backend_names()
  h.raises(function() kd.set_conv_backend("cuda") end, "'onednn' or 'im2col', got 'cuda'")
end

return T
