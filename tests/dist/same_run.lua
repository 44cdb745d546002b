-- kdseg same_run.lua RUN_A RUN_B TOLERANCE: the logged training losses of
-- two runs step by step, and their last weights, agree within TOLERANCE
-- (relative); prints "same" and the largest differences, or what differs.
local cjson = require("cjson")
local a, b, tol = arg[1], arg[2], tonumber(arg[3])
local function losses(run)
  local list = {}
  for line in io.lines(run .. "/metrics.jsonl") do
    local e = cjson.decode(line)
    if e.type == "train" then list[#list + 1] = e.loss end
  end
  return list
end
local la, lb = losses(a), losses(b)
if #la == 0 or #la ~= #lb then print(string.format("%d and %d logged steps", #la, #lb)) os.exit(1) end
local worst_loss = 0
for i = 1, #la do worst_loss = math.max(worst_loss, math.abs(la[i] - lb[i]) / math.abs(la[i])) end
local wa, wb = kd.load(a .. "/checkpoints/last.safetensors"), kd.load(b .. "/checkpoints/last.safetensors")
local worst_weight, where, count = 0, "", 0
for name, t in pairs(wa) do
  if not wb[name] then print("missing " .. name) os.exit(1) end
  if t.dtype == "float32" then
    count = count + 1
    local d = math.sqrt((t - wb[name]):sum_squares() / math.max(t:sum_squares(), 1e-12))
    if d > worst_weight then worst_weight, where = d, name end
  end
end
local text = string.format("losses of %d steps within %.1e, %d weights within %.1e (%s)", #la, worst_loss, count,
                           worst_weight, where)
if count > 0 and worst_loss <= tol and worst_weight <= tol then print("same: " .. text) else print("differ: " .. text) os.exit(1) end
