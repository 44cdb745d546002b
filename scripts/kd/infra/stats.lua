-- stats: the mean and the sample standard deviation (n - 1; 0 for a single
-- value) of a list of numbers, as every table over seeds reports them
-- (sweep reports, the ablation, the accuracy benchmark).
local stats = {}

function stats.mean_sd(values)
  local mean, var = 0, 0
  for _, x in ipairs(values) do mean = mean + x / #values end
  for _, x in ipairs(values) do var = var + (x - mean) ^ 2 / math.max(1, #values - 1) end
  return mean, math.sqrt(var)
end

return stats
