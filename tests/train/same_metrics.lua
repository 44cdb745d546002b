-- same_metrics.lua A B: two metrics.jsonl files log the same entries in the
-- same order with the same values, timings (elapsed, images_per_second)
-- aside. Prints "same" or the first entry that differs.
local cjson = require("cjson")
local function entries(path)
  local list = {}
  for line in io.lines(path) do
    local e = cjson.decode(line)
    e.elapsed, e.images_per_second = nil, nil
    list[#list + 1] = e
  end
  return list
end
local function same(x, y)
  if type(x) ~= type(y) then return false end
  if type(x) ~= "table" then return x == y end
  for k, v in pairs(x) do if not same(v, y[k]) then return false end end
  for k in pairs(y) do if x[k] == nil then return false end end
  return true
end
local a, b = entries(arg[1]), entries(arg[2])
for i = 1, math.max(#a, #b) do
  if not (a[i] and b[i] and same(a[i], b[i])) then
    print(string.format("entry %d differs (%d and %d entries): %s | %s", i, #a, #b,
                        a[i] and cjson.encode(a[i]):sub(1, 120) or "none", b[i] and cjson.encode(b[i]):sub(1, 120) or "none"))
    os.exit(1)
  end
end
print("same")
