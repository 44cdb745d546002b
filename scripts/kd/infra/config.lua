-- config: experiment configs as Lua tables, YAML or JSON files, merged over
-- defaults and changed from the command line by `key=value` (dotted paths
-- for nested fields). A key that the defaults do not have is an error naming
-- it, so a typo never silently does nothing, and a value must have the
-- kind of its default (below), so `batch_size: two` or `crop: 64` is an
-- error naming the key, not a failure somewhere inside training.
local yaml = require("kd.infra.yaml")

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

local function describe(value)
  if type(value) == "string" then return "'" .. value .. "'" end
  if type(value) == "table" then return is_section(value) and "a section" or "a list" end
  return tostring(value)
end

-- What a value may be, by its default: a number is a finite number (or,
-- from a Lua config, a function of the iteration: a schedule); a string a
-- string; true a boolean; a list a list (its items are checked by the code
-- that uses them: a list of models holds names or tables); a section a
-- section. A default of false means "off": any value turns it on, and the
-- code that uses it checks that value.
local function check_kind(default, value, full, where)
  local expected
  if type(default) == "number" then
    if type(value) == "number" then
      if value ~= value or value == math.huge or value == -math.huge then
        error(string.format("%s: '%s' must be a finite number, got %s", where, full, tostring(value)), 0)
      end
      return
    end
    if type(value) ~= "function" then expected = "a number" end
  elseif type(default) == "string" then
    if type(value) ~= "string" then expected = "a string" end
  elseif default == true then
    if type(value) ~= "boolean" then expected = "true or false" end
  elseif type(default) == "table" then
    if type(value) ~= "table" then expected = is_section(default) and "a section" or "a list" end
    if not expected and is_section(default) and next(value) ~= nil and not is_section(value) then expected = "a section" end
  end
  if expected then
    error(string.format("%s: '%s' must be %s, got %s", where, full, expected, describe(value)), 0)
  end
end

-- defaults <- user, checking every user key against the defaults.
function config.merge(defaults, user, where, path)
  path = path or ""
  where = where or "config"
  local out = config.copy(defaults)
  if type(user) ~= "table" then error(string.format("%s: expected a table of settings, got %s", where, describe(user)), 0) end
  for key, value in pairs(user) do
    local full = path .. tostring(key)
    if defaults[key] == nil then
      error(string.format("%s: unknown config key '%s'", where, full), 0)
    end
    check_kind(defaults[key], value, full, where)
    if is_section(defaults[key]) and type(value) == "table" then -- ({} changes nothing)
      out[key] = config.merge(defaults[key], value, where, full .. ".")
    else
      out[key] = config.copy(value)
    end
  end
  return out
end

-- Checks numeric settings of a merged config against lower bounds: each
-- rule is {dotted path, minimum[, "integer"]}; an error names the key.
function config.check_bounds(cfg, rules, where)
  for _, rule in ipairs(rules) do
    local path, minimum, integer = rule[1], rule[2], rule[3] == "integer"
    local value = cfg
    for key in path:gmatch("[^%.]+") do value = type(value) == "table" and value[key] or nil end
    if type(value) == "number" and (value < minimum or (integer and value % 1 ~= 0)) then
      error(string.format("%s: '%s' must be %s >= %s, got %s", where, path, integer and "an integer" or "a number",
                          tostring(minimum), tostring(value)), 0)
    end
  end
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

-- An experiment script's arguments: key=value overrides of cfg, and the
-- flags it takes (names without "--", e.g. {"resume", "overwrite", "check"}).
-- Returns the set of flags given; anything else is an error naming it.
--   local flags = kd.config.arguments(arg, cfg, {"resume", "overwrite"})
function config.arguments(argv, cfg, flags, where)
  where = where or (argv and argv[0]) or "script"
  local known, given = {}, {}
  for _, f in ipairs(flags or {}) do known[f] = true end
  for _, a in ipairs(argv or {}) do
    local flag = a:match("^%-%-([%w%-_]+)$")
    if flag then
      if not known[flag] then
        local list = {}
        for _, f in ipairs(flags or {}) do list[#list + 1] = "--" .. f end
        error(string.format("%s: unknown option '%s'%s", where, a,
                            #list > 0 and (" (it takes " .. table.concat(list, ", ") .. " and key=value)") or ""), 0)
      end
      given[flag] = true
    else
      config.override(cfg, a)
    end
  end
  if given.resume and given.overwrite then error(where .. ": --resume and --overwrite exclude each other", 0) end
  return given
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
  check_kind(t[keys[#keys]], value, path, "override")
  t[keys[#keys]] = value
  return cfg
end

return config
