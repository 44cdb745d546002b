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

-- A broken promise of the library (not a bad input): a finding.
local function finding(message) error({finding = message}) end

-- A resolved config has every section of the defaults as a section, every
-- number as a number and every string as a string: what the training code
-- relies on.
local function check_resolved(defaults, cfg, path)
  for key, default in pairs(defaults) do
    local value, where = cfg[key], path .. tostring(key)
    if type(default) == "table" and next(default) and type(next(default)) == "string" then
      if type(value) ~= "table" then finding(where .. " is no longer a section") end
      check_resolved(default, value, where .. ".")
    elseif type(default) == "number" and type(value) ~= "number" and type(value) ~= "function" then
      finding(where .. " is a " .. type(value) .. ", not a number")
    elseif type(default) == "string" and type(value) ~= "string" then
      finding(where .. " is a " .. type(value) .. ", not a string")
    end
  end
end

-- a training config, as YAML and as JSON, merged and checked
function targets.config(bytes)
  for _, name in ipairs({"input.yaml", "input.json"}) do
    local ok, cfg = pcall(kd.config.load, file(name, bytes))
    if ok then check_resolved(kd.train.Trainer.defaults, kd.train.Trainer.resolve(cfg, name), "") end
  end
end

-- key=value overrides, one per line, on the training defaults
function targets.override(bytes)
  local cfg = kd.config.copy(kd.train.Trainer.defaults)
  for line in bytes:gmatch("[^\n]+") do kd.config.override(cfg, line) end
  check_resolved(kd.train.Trainer.defaults, kd.train.Trainer.resolve(cfg, "overrides"), "")
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

-- Which function raised an error decides whether it is clear: error() and
-- the kd core's functions (kd._C, the tensor methods) raise the library's
-- own messages; anything else (the Lua VM indexing nil or doing arithmetic
-- on a string, a standard function such as ipairs given a string, cjson
-- reporting a JSON error no kd code caught) means the library tripped on
-- input it did not check. Deciding by the raiser, not by the words of the
-- message, keeps inputs quoted in clear messages from looking like findings.
local clear_raisers = {[error] = true, [assert] = true}
local function add_functions(t, seen)
  if type(t) ~= "table" or seen[t] then return end
  seen[t] = true
  for _, v in pairs(t) do
    if type(v) == "function" then clear_raisers[v] = true else add_functions(v, seen) end
  end
end
add_functions(C, {})
add_functions(getmetatable(kd.zeros({1})), {})

-- run(name, bytes) -> true, or false and the message and whether it is a
-- finding (an unclear error)
function targets.run(name, bytes)
  local unclear = false
  local ok, message = xpcall(targets[name], function(m)
    if type(m) == "table" and m.finding then
      unclear = true
      return "the library broke a promise: " .. m.finding
    end
    local raiser = debug.getinfo(2, "fS")
    unclear = not (raiser and clear_raisers[raiser.func])
    return tostring(m)
  end, bytes)
  if ok then return true end
  return false, message, unclear
end

return targets
