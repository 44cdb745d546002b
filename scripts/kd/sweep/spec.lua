-- spec: a sweep's YAML spec, checked before any trial starts; every error
-- names the file and line. Shaped like a W&B sweep:
--   config: experiments/baselines/student_1_8.yaml   # a `kdseg train` config, or
--   program: experiments/semisup_kd.lua              # a script taking key=value
--   base: {train.iterations: 500}                    # overrides of every trial
--   method: grid                                     # or random (seeded)
--   max_trials: 20                                   # configurations at most
--   seed: 0
--   seeds: [1, 2]                                    # replicates of each configuration
--   parameters:
--     optim.lr: {values: [0.01, 0.02]}
--     students.temperature: {distribution: uniform, min: 1, max: 4}   # also log_uniform, int_uniform
--   metric: {name: final_miou, goal: maximize}       # a dotted path into the trial's results.json
--   early_terminate: {type: median, min_evals: 2}    # on the trial's eval lines (metric "miou")
--   threads: 1                                       # per trial
local yaml = require("kd.infra.yaml")

local spec = {}

local KNOWN = {config = true, program = true, base = true, method = true, max_trials = true, seed = true, seeds = true,
               parameters = true, metric = true, early_terminate = true, threads = true, name = true}

local function fail(path, lines, tbl, key, what)
  local line = lines and lines[tbl] and lines[tbl][key]
  error(string.format("%s%s: %s", path, line and (":" .. line) or "", what), 0)
end

local function is_number(v) return type(v) == "number" end

function spec.load(path)
  local ok, doc, lines = pcall(yaml.load_file, path)
  if not ok then error(doc, 0) end
  if type(doc) ~= "table" then error(path .. ": a sweep spec must be a mapping", 0) end
  for key in pairs(doc) do
    if not KNOWN[key] then fail(path, lines, doc, key, "unknown key '" .. tostring(key) .. "'") end
  end
  local s = {path = path, lines = lines, doc = doc}
  if (doc.config == nil) == (doc.program == nil) then
    error(path .. ": give exactly one of 'config' (a kdseg train config) and 'program' (a script)", 0)
  end
  for _, key in ipairs({"config", "program"}) do
    if doc[key] ~= nil and type(doc[key]) ~= "string" then fail(path, lines, doc, key, key .. " must be a path") end
  end
  -- a path as given (from the working folder), else next to the spec, else
  -- in the kdseg checkout (experiments/... of the project)
  local function resolve(p)
    if not p then return nil end
    local f = io.open(p, "r")
    if f then f:close() return p end
    local candidates = {require("kd._C").scripts_dir .. "/../" .. p}
    local dir = path:match("^(.*)/[^/]*$")
    if dir then table.insert(candidates, 1, dir .. "/" .. p) end
    for _, candidate in ipairs(candidates) do
      f = io.open(candidate, "r")
      if f then f:close() return candidate end
    end
    return p
  end
  s.config, s.program = resolve(doc.config), resolve(doc.program)
  s.name = doc.name or path:match("([^/]+)%.ya?ml$") or "sweep"
  if type(s.name) ~= "string" or not s.name:match("^[%w_%-%.]+$") or s.name:match("^%.+$") then
    fail(path, lines, doc, "name", "name must be a plain file name (letters, digits, _ - .), not '.' or '..'")
  end
  s.method = doc.method or "grid"
  if s.method ~= "grid" and s.method ~= "random" then fail(path, lines, doc, "method", "method must be 'grid' or 'random', got '" .. tostring(s.method) .. "'") end
  for _, key in ipairs({"max_trials", "seed", "threads"}) do
    local v = doc[key]
    if v ~= nil and (not is_number(v) or v < (key == "seed" and 0 or 1) or v % 1 ~= 0) then
      fail(path, lines, doc, key, key .. " must be a " .. (key == "seed" and "non-negative" or "positive") .. " integer")
    end
  end
  s.max_trials, s.seed, s.threads = doc.max_trials, doc.seed or 0, doc.threads or 1
  if s.method == "random" and not s.max_trials then fail(path, lines, doc, "method", "a random sweep needs max_trials") end
  s.seeds = doc.seeds
  if s.seeds ~= nil then
    if type(s.seeds) ~= "table" or #s.seeds == 0 then fail(path, lines, doc, "seeds", "seeds must be a non-empty list of integers") end
    for i, v in ipairs(s.seeds) do
      if not is_number(v) or v % 1 ~= 0 or v < 0 then fail(path, lines, s.seeds, i, "seed " .. tostring(v) .. " is not a non-negative integer") end
    end
  end
  s.base = doc.base or {}
  if type(s.base) ~= "table" then fail(path, lines, doc, "base", "base must be a mapping of dotted keys to values") end
  -- parameters
  if type(doc.parameters) ~= "table" or next(doc.parameters) == nil then fail(path, lines, doc, "parameters", "parameters must be a non-empty mapping") end
  s.parameters, s.parameter_names = {}, {}
  for name, p in pairs(doc.parameters) do
    if type(p) ~= "table" then fail(path, lines, doc.parameters, name, "parameter '" .. name .. "' must be a mapping") end
    for key in pairs(p) do
      if key ~= "values" and key ~= "distribution" and key ~= "min" and key ~= "max" then
        fail(path, lines, p, key, "parameter '" .. name .. "': unknown key '" .. tostring(key) .. "'")
      end
    end
    if p.values ~= nil then
      if type(p.values) ~= "table" or #p.values == 0 then fail(path, lines, p, "values", "parameter '" .. name .. "': values must be a non-empty list") end
      if p.distribution then fail(path, lines, p, "distribution", "parameter '" .. name .. "': give values or a distribution, not both") end
    else
      local d = p.distribution
      if d ~= "uniform" and d ~= "log_uniform" and d ~= "int_uniform" then
        fail(path, lines, p.distribution and p or doc.parameters, p.distribution and "distribution" or name,
             "parameter '" .. name .. "': distribution must be uniform, log_uniform or int_uniform (or give values)")
      end
      if not is_number(p.min) or not is_number(p.max) then fail(path, lines, p, p.min == nil and "distribution" or "min", "parameter '" .. name .. "': min and max must be numbers") end
      if p.min > p.max then fail(path, lines, p, "min", string.format("parameter '%s': empty range, min %s > max %s", name, tostring(p.min), tostring(p.max))) end
      if d == "log_uniform" and p.min <= 0 then fail(path, lines, p, "min", "parameter '" .. name .. "': log_uniform needs min > 0") end
      if s.method == "grid" then fail(path, lines, p, "distribution", "parameter '" .. name .. "': a grid sweep needs values, not a distribution") end
    end
    s.parameters[name] = p
    s.parameter_names[#s.parameter_names + 1] = name
  end
  table.sort(s.parameter_names)
  -- metric and early termination
  local m = doc.metric or {name = "final_miou", goal = "maximize"}
  if type(m) ~= "table" or type(m.name) ~= "string" then fail(path, lines, doc, "metric", "metric must be {name: ..., goal: maximize|minimize}") end
  if m.goal ~= nil and m.goal ~= "maximize" and m.goal ~= "minimize" then fail(path, lines, m, "goal", "goal must be maximize or minimize") end
  s.metric = {name = m.name, goal = m.goal or "maximize"}
  local e = doc.early_terminate
  if e ~= nil then
    if type(e) ~= "table" or e.type ~= "median" then fail(path, lines, e == nil and doc or (type(e) == "table" and e or doc), type(e) == "table" and "type" or "early_terminate", "early_terminate must be {type: median, min_evals: N}") end
    if e.min_evals ~= nil and (not is_number(e.min_evals) or e.min_evals < 1) then fail(path, lines, e, "min_evals", "min_evals must be a positive integer") end
    s.early = {min_evals = e.min_evals or 2}
  end
  return s
end

-- The line of a parameter (or base key) in the spec, for errors found later.
function spec.line_of(s, section, key)
  local t = s.doc[section]
  return s.lines and t and s.lines[t] and s.lines[t][key]
end

-- A small seeded generator (the same trials for a seed on every machine).
local function generator(seed)
  local state = (seed * 2654435761 + 97) % 4294967296
  return function()
    state = (1103515245 * state + 12345) % 2147483648
    return state / 2147483648
  end
end

-- The configurations: lists of {name, value} in parameter order.
function spec.configurations(s)
  local out = {}
  if s.method == "grid" then
    local function rec(i, current)
      if s.max_trials and #out >= s.max_trials then return end
      if i > #s.parameter_names then
        local copy = {}
        for k, v in ipairs(current) do copy[k] = v end
        out[#out + 1] = copy
        return
      end
      local name = s.parameter_names[i]
      for _, v in ipairs(s.parameters[name].values) do
        current[i] = {name, v}
        rec(i + 1, current)
      end
    end
    rec(1, {})
  else
    local random = generator(s.seed)
    for _ = 1, s.max_trials do
      local config = {}
      for i, name in ipairs(s.parameter_names) do
        local p, u = s.parameters[name], random()
        local v
        if p.values then v = p.values[math.floor(u * #p.values) + 1]
        elseif p.distribution == "uniform" then v = p.min + (p.max - p.min) * u
        elseif p.distribution == "log_uniform" then v = math.exp(math.log(p.min) + (math.log(p.max) - math.log(p.min)) * u)
        else v = math.floor(p.min + (p.max - p.min + 1) * u); if v > p.max then v = p.max end end
        config[i] = {name, v}
      end
      out[#out + 1] = config
    end
  end
  return out
end

-- Every trial: a configuration and a seed, numbered from 0.
function spec.trials(s)
  local trials = {}
  for c, config in ipairs(spec.configurations(s)) do
    for _, seed in ipairs(s.seeds or {false}) do
      trials[#trials + 1] = {index = #trials, id = string.format("trial_%04d", #trials), config_index = c, params = config, seed = seed}
    end
  end
  return trials
end

-- A value as a key=value override.
function spec.format_value(v)
  if type(v) == "table" then
    local parts = {}
    for i, x in ipairs(v) do parts[i] = spec.format_value(x) end
    return "[" .. table.concat(parts, ",") .. "]"
  end
  if type(v) == "number" then return v % 1 == 0 and string.format("%d", v) or string.format("%.6g", v) end
  return tostring(v)
end

return spec
