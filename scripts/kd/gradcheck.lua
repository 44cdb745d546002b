-- gradcheck: compares the gradients backward computes for a function of
-- tensors with central finite differences, so that a researcher's own loss
-- or module can be checked the way the core's ops are.
--   local ok, report = kd.gradcheck(function(a, b) return kd.losses.mse(a, b) end,
--                                   {kd.randn({2, 3}), kd.randn({2, 3})}, {step = 1e-2, tolerance = 1e-2})
-- f returns a tensor; the check is on sum(f(...) * R) for a fixed random R.
-- Returns ok and a report line naming the worst element.
local kd = require("kd")

return function(f, inputs, options)
  options = options or {}
  local step, tolerance, samples = options.step or 1e-2, options.tolerance or 1e-2, options.samples or 20
  for _, x in ipairs(inputs) do
    if x.dtype == "float32" and options.differentiable ~= false then x.requires_grad = true end
  end
  local out = f(unpack(inputs))
  local r = kd.randn(out.shape)
  local function objective()
    local y = kd.no_grad(f, unpack(inputs))
    local total = 0
    local a, b = y:flat(), r:flat()
    for i = 1, #a do total = total + a[i] * b[i] end
    return total
  end
  for _, x in ipairs(inputs) do x.grad = nil end
  out:backward(r)
  local worst, where = 0, "none"
  for index, x in ipairs(inputs) do
    if x.requires_grad then
      if not x.grad then return false, "input " .. index .. " got no gradient" end
      local n = x:numel()
      for k = 1, math.min(samples, n) do
        local at = n <= samples and k or (math.floor(kd.rand({1}):item() * n) + 1)
        local saved = x:get(at)
        x:set(at, saved + step)
        local plus = objective()
        x:set(at, saved - step)
        local minus = objective()
        x:set(at, saved)
        local numeric, analytic = (plus - minus) / (2 * step), x.grad:get(at)
        local err = math.abs(numeric - analytic) / math.max(math.abs(numeric), math.abs(analytic), 1e-2)
        if err > worst then worst, where = err, string.format("input %d element %d: analytic %g, numeric %g", index, at, analytic, numeric) end
      end
    end
  end
  return worst <= tolerance, string.format("worst relative error %.3g at %s", worst, where)
end
