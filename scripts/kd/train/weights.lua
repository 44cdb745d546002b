-- weights: a loss term's weight, a number or a schedule of the iteration
-- (counted from 1), as the loop reads it at each step; a config writes a
-- schedule as a list, {"sigmoid_rampup", 1.0, 500}.
--   weights.at(0.5, it); weights.at(weights.schedules.linear(0, 1, 1000), it)
local weights = {}

-- Schedules: functions of the iteration (from 1).
weights.schedules = {}

-- The sigmoid ramp-up of Laine & Aila: w * exp(-5 (1 - t)^2), t = iter / length.
function weights.schedules.sigmoid_rampup(weight, length)
  return function(iter)
    local t = math.min(1, math.max(0, iter / length))
    return weight * math.exp(-5 * (1 - t) ^ 2)
  end
end

function weights.schedules.linear(from, to, length)
  return function(iter) return from + (to - from) * math.min(1, iter / length) end
end

function weights.schedules.step(values, every)
  return function(iter) return values[math.min(#values, math.floor((iter - 1) / every) + 1)] end
end

function weights.schedules.cosine(from, to, length)
  return function(iter)
    local t = math.min(1, iter / length)
    return to + (from - to) * 0.5 * (1 + math.cos(math.pi * t))
  end
end

-- The value of a weight (a number or a schedule) at an iteration.
function weights.at(w, iteration)
  if type(w) == "function" then return w(iteration) end
  if type(w) == "table" then -- a schedule described in a config: {"sigmoid_rampup", 1.0, 500}
    local fn = weights.schedules[w[1]]
    if not fn then error("weight: unknown schedule '" .. tostring(w[1]) .. "'", 0) end
    return fn(unpack(w, 2))(iteration)
  end
  return w or 0
end

return weights
