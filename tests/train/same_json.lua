-- same_json.lua A B: the two JSON files hold the same values (key order and
-- the "elapsed" timings aside). Prints "same" or the first path that differs.
local cjson = require("cjson")
local function read(p) return cjson.decode(kd.data.files.read(p)) end
local function diff(x, y, path)
  if type(x) ~= type(y) then return path end
  if type(x) ~= "table" then return x ~= y and path or nil end
  for k, v in pairs(x) do
    if k ~= "elapsed" then local d = diff(v, y[k], path .. "." .. tostring(k)) if d then return d end end
  end
  for k in pairs(y) do if x[k] == nil and k ~= "elapsed" then return path .. "." .. tostring(k) end end
end
local d = diff(read(arg[1]), read(arg[2]), "")
print(d and ("differ at " .. d) or "same")
if d then os.exit(1) end
