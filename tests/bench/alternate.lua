-- alternate.lua: one convolution timed with direct convolution and with
-- Winograd, alternated (direct, Winograd, direct, Winograd) so that the
-- machine's drift hits both alike; each figure the better of its two
-- medians (`runs` timings after 3 warm-ups). Inference: no gradient, on
-- `inference_x` (blocked, as between two layers of a network at
-- inference); step: a training forward and backward on `step_x`, both
-- gradients, against the output gradient g. Leaves the algorithm as it
-- found it. Returns the figures as the benchmarks print them (ms, and
-- Winograd's time over direct's), for the caller to add its own keys to.
--   local alternate = dofile(here .. "/alternate.lua")
--   local row = alternate(inference_x, step_x, w, options, g, runs)
--   -- row.direct_inference_ms, winograd_inference_ms, inference_ratio,
--   -- direct_step_ms, winograd_step_ms, step_ratio
local C = kd._C
local here = debug.getinfo(1, "S").source:match("^@(.*)/[^/]*$") or "."
local median = dofile(here .. "/median.lua")

local function median_ms(f, runs)
  for _ = 1, 3 do f() end
  local t = {}
  for i = 1, runs do
    local t0 = C.clock()
    f()
    t[i] = C.clock() - t0
  end
  return 1e3 * median(t)
end

return function(inference_x, step_x, w, options, g, runs)
  local algorithm = kd.conv_algorithm()
  local times = {direct = {}, winograd = {}}
  for _, which in ipairs({"direct", "winograd", "direct", "winograd"}) do
    kd.set_conv_algorithm(which)
    local inference = median_ms(function() return kd.no_grad(kd.conv2d, inference_x, w, nil, options) end, runs)
    step_x.requires_grad, w.requires_grad = true, true
    local step = median_ms(function()
      local y = kd.conv2d(step_x, w, nil, options)
      ;(y * g):sum():backward()
    end, runs)
    step_x.requires_grad, w.requires_grad = false, false
    step_x.grad, w.grad = nil, nil
    local t = times[which]
    t.inference = math.min(t.inference or math.huge, inference)
    t.step = math.min(t.step or math.huge, step)
  end
  kd.set_conv_algorithm(algorithm)
  return {direct_inference_ms = times.direct.inference, winograd_inference_ms = times.winograd.inference,
          inference_ratio = times.winograd.inference / times.direct.inference,
          direct_step_ms = times.direct.step, winograd_step_ms = times.winograd.step,
          step_ratio = times.winograd.step / times.direct.step}
end
