-- median.lua: the middle value of a list of timings, the mean of the two
-- middle ones for an even count, nil for an empty list; sorts it in place.
-- Every benchmark here reports medians, from this one definition.
--   local median = dofile(here .. "/median.lua")
return function(t)
  table.sort(t)
  local n = #t
  if n == 0 then return nil end
  return n % 2 == 1 and t[(n + 1) / 2] or (t[n / 2] + t[n / 2 + 1]) / 2
end
