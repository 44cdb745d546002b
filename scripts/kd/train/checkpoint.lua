-- checkpoint: what a run saves and how it resumes. In runs/<name>/checkpoints/:
--   last.safetensors, best.safetensors  the weights (state_dict names), with
--       the model's config in the metadata, so `kdseg predict` needs nothing else
--   state.safetensors  what --resume needs, in one file (kd.train.state)
-- Every file is written atomically (temporary file, fsync, rename): a run
-- killed at any moment leaves the previous good checkpoint readable.
local cjson = require("cjson")

local checkpoint = {}

function checkpoint.save_weights(path, model, model_config, extra)
  local meta = {model = cjson.encode(model_config), format = "kdseg weights"}
  for k, v in pairs(extra or {}) do meta[k] = tostring(v) end
  kd.save(path, model:state_dict(), meta)
end

-- Weights and the model config of a weights file.
function checkpoint.load_weights(path)
  local tensors, meta = kd.load(path)
  if meta.model == nil then error(path .. ": no model config in the metadata (not a kdseg weights file?)", 0) end
  local ok, model_config = pcall(cjson.decode, meta.model)
  if not ok or type(model_config) ~= "table" or type(model_config.name) ~= "string" then
    error(path .. ": the model config in the metadata is not a JSON object with a model name", 0)
  end
  return tensors, model_config, meta
end

-- A model rebuilt from a weights file, in evaluation mode, and its config
-- (name, options, classes, label_ids, palette, categories, mean, std).
function checkpoint.load_model(path)
  local tensors, model_config = checkpoint.load_weights(path)
  local ok, model = pcall(function()
    local m = kd.models.create(model_config.name, model_config.options)
    m:load_state_dict(tensors)
    return m
  end)
  if not ok then error(path .. ": " .. tostring(model):gsub("^[^:]*%.lua:%d+: ", ""), 0) end
  model:eval()
  return model, model_config
end

-- The class table a weights file was trained with.
function checkpoint.classes_of(model_config)
  local entries = {}
  for i, name in ipairs(model_config.classes or {}) do
    entries[i] = {name, (model_config.label_ids or {})[i] or (i - 1), (model_config.palette or {})[i] or {0, 0, 0},
                  (model_config.categories or {})[i]}
  end
  return require("kd.data.classes").make(entries, model_config.name)
end

return checkpoint
