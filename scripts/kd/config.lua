-- config: experiment configs as Lua tables, YAML or JSON files, merged over
-- defaults and changed from the command line by `key=value` (dotted paths
-- for nested fields). A key that the defaults do not have is an error naming
-- it, so a typo never silently does nothing.
local yaml = require("kd.yaml")

local config = {}

-- Copies deeply (functions and tensors are shared).
function config.copy(value)
  if type(value) ~= "table" then return value end
  local out = {}
  for k, v in pairs(value) do out[k] = config.copy(v) end
  return out
end

-- A table is a "section" (merged key by key) when it has string keys; lists
-- and empty tables are values, replaced whole.
local function is_section(t)
  if type(t) ~= "table" then return false end
  for k in pairs(t) do if type(k) == "string" then return true end end
  return false
end

-- defaults <- user, checking every user key against the defaults.
function config.merge(defaults, user, where, path)
  path = path or ""
  local out = config.copy(defaults)
  for key, value in pairs(user or {}) do
    local full = path .. tostring(key)
    if defaults[key] == nil then
      error(string.format("%s: unknown config key '%s'", where or "config", full), 0)
    end
    if is_section(defaults[key]) and type(value) == "table" and is_section(value) then
      out[key] = config.merge(defaults[key], value, where, full .. ".")
    else
      out[key] = config.copy(value)
    end
  end
  return out
end

-- Reads a config file: a Lua chunk returning a table, YAML, or JSON (the
-- resolved config.json every run writes, so a run can be run again).
function config.load(path)
  if path:match("%.json$") then
    local ok, value = pcall(require("cjson").decode, require("kd.data.files").read(path))
    if not ok then error(path .. ": " .. tostring(value), 0) end
    if type(value) ~= "table" then error(path .. ": a config must be an object", 0) end
    return value
  end
  if path:match("%.ya?ml$") then
    local value = yaml.load_file(path)
    if type(value) ~= "table" then error(path .. ": a config must be a mapping", 0) end
    return value
  end
  local chunk, err = loadfile(path)
  if not chunk then error(err, 0) end
  local value = chunk()
  if type(value) ~= "table" then error(path .. ": a Lua config must return a table", 0) end
  return value
end

-- Parses "a.b.c=value" and sets it in cfg; the path must exist.
function config.override(cfg, assignment)
  local path, text = assignment:match("^([%w_%.]+)=(.*)$")
  if not path then error("override '" .. assignment .. "' must look like key=value or a.b=value", 0) end
  local value = text == "" and "" or yaml.load(text, "override " .. path)
  if value == nil and text ~= "" and text ~= "null" and text ~= "~" then value = text end
  local t, keys = cfg, {}
  for key in path:gmatch("[^%.]+") do keys[#keys + 1] = tonumber(key) or key end
  for i = 1, #keys - 1 do
    t = t[keys[i]]
    if type(t) ~= "table" then error(string.format("override: unknown config key '%s'", path), 0) end
  end
  if t[keys[#keys]] == nil then error(string.format("override: unknown config key '%s'", path), 0) end
  t[keys[#keys]] = value
  return cfg
end

return config
