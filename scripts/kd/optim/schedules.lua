-- Learning-rate schedules: functions of the iteration (0-based) that return a
-- learning rate; apply one with optimizer:set_lr(schedule(iter)).
local schedules = {}

local function need(fn, options, keys)
  for _, k in ipairs(keys) do
    if type(options[k]) ~= "number" then error(string.format("schedules.%s: '%s' must be a number", fn, k), 3) end
  end
end

-- poly: base * (1 - iter / total) ^ power (power 0.9, the usual for segmentation)
function schedules.poly(options)
  need("poly", options, {"base", "total"})
  local power = options.power or 0.9
  return function(iter)
    return options.base * math.max(0, 1 - iter / options.total) ^ power
  end
end

-- cosine: from base down to min (0) over total iterations
function schedules.cosine(options)
  need("cosine", options, {"base", "total"})
  local min = options.min or 0
  return function(iter)
    local t = math.min(iter / options.total, 1)
    return min + (options.base - min) * 0.5 * (1 + math.cos(math.pi * t))
  end
end

-- step: base * gamma ^ floor(iter / every)
function schedules.step(options)
  need("step", options, {"base", "every"})
  local gamma = options.gamma or 0.1
  return function(iter) return options.base * gamma ^ math.floor(iter / options.every) end
end

-- warmup: linear from base * start_factor to the inner schedule's value over
-- the first `iterations`, then the inner schedule.
function schedules.warmup(inner, options)
  need("warmup", options, {"iterations"})
  local start = options.start_factor or 0.001
  return function(iter)
    local lr = inner(iter)
    if iter >= options.iterations then return lr end
    return lr * (start + (1 - start) * iter / options.iterations)
  end
end

return schedules
