-- state: the loop's resume file, checkpoints/state.safetensors: the weights
-- of every model that is not frozen (EMA models included), every optimizer's
-- state, the iteration, each stream's position, the best scores and the
-- random generator. Written atomically (kd.save), so a kill at any moment
-- leaves the previous state readable.
local cjson = require("cjson")
local C = require("kd._C")
local files = require("kd.data.files")

local state = {}

local function to_hex(s) return (s:gsub(".", function(c) return string.format("%02x", c:byte()) end)) end
local function from_hex(s) return (s:gsub("%x%x", function(h) return string.char(tonumber(h, 16)) end)) end

function state.save(path, loop)
  files.mkdir_p(path:match("^(.*)/[^/]+$"))
  local tensors, scalars = {}, {}
  for _, m in ipairs(loop.models) do
    if not m.frozen then
      for name, t in pairs(m.model:state_dict()) do tensors["model." .. m.name .. "." .. name] = t end
    end
    if m.trainable then
      scalars[m.name] = {}
      for i, st in pairs(m.optimizer:state_dict()) do
        scalars[m.name][tostring(i)] = {}
        for key, value in pairs(st) do
          if kd.is_tensor(value) then tensors[string.format("optim.%s.%d.%s", m.name, i, key)] = value
          else scalars[m.name][tostring(i)][key] = value end
        end
      end
    end
  end
  kd.save(path, tensors, {
    iteration = tostring(loop.iteration), best = cjson.encode(loop.best), positions = cjson.encode(loop.positions),
    rng = to_hex(C.rng_state()), optim_scalars = cjson.encode(scalars), format = "kdseg loop state",
  })
end

-- Restores the loop's models, optimizers, counters, positions and generator.
function state.load(path, loop)
  if not files.exists(path) then error("--resume: no checkpoint at " .. path, 0) end
  local tensors, meta = kd.load(path)
  if meta.format ~= "kdseg loop state" then error(path .. ": not a kdseg training state (format " .. tostring(meta.format) .. ")", 0) end
  local weights, per_param = {}, {}
  for name, t in pairs(tensors) do
    local model, key = name:match("^model%.([%w_]+)%.(.+)$")
    if model then
      weights[model] = weights[model] or {}
      weights[model][key] = t
    else
      local m, i, k = name:match("^optim%.([%w_]+)%.(%d+)%.(.+)$")
      if not m then error(path .. ": unexpected tensor '" .. name .. "'", 0) end
      per_param[m] = per_param[m] or {}
      per_param[m][tonumber(i)] = per_param[m][tonumber(i)] or {}
      per_param[m][tonumber(i)][k] = t
    end
  end
  local function decode(field)
    local ok, v = pcall(cjson.decode, meta[field] or "")
    if not ok or type(v) ~= "table" then error(path .. ": the state's " .. field .. " is unreadable", 0) end
    return v
  end
  local scalars = decode("optim_scalars")
  for _, m in ipairs(loop.models) do
    if not m.frozen then
      if not weights[m.name] then error(path .. ": no weights for model '" .. m.name .. "' (another topology's state?)", 0) end
      m.model:load_state_dict(weights[m.name])
    end
    if m.trainable then
      local saved = per_param[m.name] or {}
      for i, values in pairs(scalars[m.name] or {}) do
        saved[tonumber(i)] = saved[tonumber(i)] or {}
        for key, value in pairs(values) do saved[tonumber(i)][key] = value end
      end
      m.optimizer:load_state_dict(saved)
    end
  end
  loop.iteration = tonumber(meta.iteration) or error(path .. ": the state has no iteration", 0)
  loop.best = decode("best")
  local positions = decode("positions")
  for _, s in ipairs(loop.streams) do
    loop.positions[s.name] = positions[s.name] or error(path .. ": no position for stream '" .. s.name .. "'", 0)
  end
  C.set_rng_state(from_hex(meta.rng or ""))
end

return state
