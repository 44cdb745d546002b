-- checkpoint: what a run saves and how it resumes. In runs/<name>/checkpoints/:
--   last.safetensors, best.safetensors  the weights (state_dict names), with
--       the model's config in the metadata, so `kdseg predict` needs nothing else
--   state.safetensors  weights + optimizer state + iteration, best metric,
--       random generator state: everything --resume needs, in one file
-- Every file is written atomically (temporary file, fsync, rename): a run
-- killed at any moment leaves the previous good checkpoint readable.
local cjson = require("cjson")
local C = require("kd._C")
local files = require("kd.data.files")

local checkpoint = {}

local function to_hex(s) return (s:gsub(".", function(c) return string.format("%02x", c:byte()) end)) end
local function from_hex(s) return (s:gsub("%x%x", function(h) return string.char(tonumber(h, 16)) end)) end

function checkpoint.save_weights(path, model, model_config, extra)
  local meta = {model = cjson.encode(model_config), format = "kdseg weights"}
  for k, v in pairs(extra or {}) do meta[k] = tostring(v) end
  kd.save(path, model:state_dict(), meta)
end

-- Weights and the model config of a weights file.
function checkpoint.load_weights(path)
  local tensors, meta = kd.load(path)
  local ok, model_config = pcall(cjson.decode, meta.model or "")
  if not ok or type(model_config) ~= "table" then
    error(path .. ": no model config in the metadata (not a kdseg weights file?)", 0)
  end
  return tensors, model_config, meta
end

-- A model rebuilt from a weights file, in evaluation mode, and its config
-- (name, options, classes, label_ids, palette, mean, std).
function checkpoint.load_model(path)
  local tensors, model_config = checkpoint.load_weights(path)
  local model = kd.models.create(model_config.name, model_config.options)
  model:load_state_dict(tensors)
  model:eval()
  return model, model_config
end

-- The class table a weights file was trained with.
function checkpoint.classes_of(model_config)
  local entries = {}
  for i, name in ipairs(model_config.classes or {}) do
    entries[i] = {name, (model_config.label_ids or {})[i] or (i - 1), (model_config.palette or {})[i] or {0, 0, 0}}
  end
  return require("kd.data.classes").make(entries, model_config.name)
end

function checkpoint.save_state(dir, trainer)
  files.mkdir_p(dir)
  local tensors, scalars = {}, {}
  for name, t in pairs(trainer.model:state_dict()) do tensors["model." .. name] = t end
  for i, state in pairs(trainer.optimizer:state_dict()) do
    scalars[tostring(i)] = {}
    for key, value in pairs(state) do
      if kd.is_tensor(value) then tensors[string.format("optim.%d.%s", i, key)] = value
      else scalars[tostring(i)][key] = value end
    end
  end
  kd.save(dir .. "/state.safetensors", tensors, {
    iteration = tostring(trainer.iteration), best_miou = tostring(trainer.best_miou),
    best_iteration = tostring(trainer.best_iteration), rng = to_hex(C.rng_state()),
    optim_scalars = cjson.encode(scalars), format = "kdseg training state",
  })
end

-- Restores trainer's model, optimizer, counters and generator; returns the iteration.
function checkpoint.load_state(dir, trainer)
  local path = dir .. "/state.safetensors"
  if not files.exists(path) then error("--resume: no checkpoint at " .. path, 0) end
  local tensors, meta = kd.load(path)
  local weights, per_param = {}, {}
  for name, t in pairs(tensors) do
    local model_name = name:match("^model%.(.+)$")
    if model_name then weights[model_name] = t
    else
      local i, key = name:match("^optim%.(%d+)%.(.+)$")
      if i then
        per_param[tonumber(i)] = per_param[tonumber(i)] or {}
        per_param[tonumber(i)][key] = t
      end
    end
  end
  trainer.model:load_state_dict(weights)
  for i, scalars in pairs(cjson.decode(meta.optim_scalars or "{}")) do
    per_param[tonumber(i)] = per_param[tonumber(i)] or {}
    for key, value in pairs(scalars) do per_param[tonumber(i)][key] = value end
  end
  trainer.optimizer:load_state_dict(per_param)
  trainer.iteration = tonumber(meta.iteration)
  trainer.best_miou = tonumber(meta.best_miou) or -1
  trainer.best_iteration = tonumber(meta.best_iteration) or 0
  C.set_rng_state(from_hex(meta.rng))
  return trainer.iteration
end

return checkpoint
