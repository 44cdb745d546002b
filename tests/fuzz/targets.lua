-- targets: what each fuzzing harness built from fuzz_lua.c does with its
-- input's bytes (the parsers written in Lua or reached through it). Each
-- target feeds the bytes where a user's file would go, as a file in a
-- folder of its own where the API takes a path; a clear error is fine.
local C = require("kd._C")
local dir = (os.getenv("TMPDIR") or "/tmp") .. "/kdseg-fuzz-" .. C.getpid()
kd.data.files.mkdir_p(dir)
-- a real image and label for the split lists to point at
kd.image.write(dir .. "/a.png", kd.zeros({3, 4, 6}, "uint8"))
kd.image.write(dir .. "/l.png", kd.zeros({1, 4, 6}, "uint8"))

local function file(name, bytes)
  local path = dir .. "/" .. name
  local f = assert(io.open(path, "wb"))
  f:write(bytes)
  f:close()
  return path
end

local targets = {}

-- safetensors (checkpoints, state files): kd.load, then every tensor read
function targets.safetensors(bytes)
  local tensors = kd.load(file("input.safetensors", bytes))
  for _, t in pairs(tensors) do
    if t:numel() > 0 then t:get(1); t:get(t:numel()) end
  end
end

-- YAML text as configs, class tables and sweep specs are read
function targets.yaml(bytes) kd.yaml.load(bytes, "input.yaml") end

-- a training config, as YAML and as JSON, merged and checked
function targets.config(bytes)
  for _, name in ipairs({"input.yaml", "input.json"}) do
    local ok, cfg = pcall(kd.config.load, file(name, bytes))
    if ok then kd.train.Trainer.resolve(cfg, name) end
  end
end

-- key=value overrides, one per line, on the training defaults
function targets.override(bytes)
  local cfg = kd.config.copy(kd.train.Trainer.defaults)
  for line in bytes:gmatch("[^\n]+") do kd.config.override(cfg, line) end
  kd.train.Trainer.resolve(cfg, "overrides")
end

-- a split list: "image [label]" per line, relative to the dataset root
function targets.split(bytes)
  local ds = kd.data.Dataset({root = dir, list = file("list.txt", bytes)})
  ds:label_map()
end

-- a class table (YAML)
function targets.classes(bytes) kd.data.classes.load(file("classes.yaml", bytes)) end

-- a sweep spec (YAML) and the trials it makes
function targets.sweep(bytes)
  local spec = require("kd.sweep.spec")
  local s = spec.load(file("sweep.yaml", bytes))
  spec.trials(s)
end

-- a sweep's ledger (JSON lines)
function targets.ledger(bytes) require("kd.sweep.runner").read_ledger(file("ledger.jsonl", bytes)) end

return targets
