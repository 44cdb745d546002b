-- runner: runs a sweep's trials as separate kdseg processes, at most
-- `workers` at once, each in runs/<sweep>/<trial>/ with its overrides, and
-- keeps runs/<sweep>/ledger.jsonl: one JSON line per trial state change
-- (started, finished, failed, stopped, interrupted). A trial counts as done
-- once finished, failed or stopped; --resume runs again exactly the others
-- (and with --retry-failed the failed ones too).
local cjson = require("cjson")
local C = require("kd._C")
local spec_mod = require("kd.sweep.spec")
local config = require("kd.infra.config")
local files = require("kd.data.files")
local rundir = require("kd.train.rundir")

local runner = {}

local DONE = {finished = true, failed = true, stopped = true}

function runner.dir(s, runs_dir) return (runs_dir or "runs") .. "/" .. s.name end

-- The overrides of a trial, in order: base, parameters, seed, then where it writes.
function runner.overrides(s, trial, dir)
  local list = {}
  local base_keys = {}
  for k in pairs(s.base) do base_keys[#base_keys + 1] = k end
  table.sort(base_keys)
  for _, k in ipairs(base_keys) do list[#list + 1] = k .. "=" .. spec_mod.format_value(s.base[k]) end
  for _, p in ipairs(trial.params) do list[#list + 1] = p[1] .. "=" .. spec_mod.format_value(p[2]) end
  if trial.seed then list[#list + 1] = "seed=" .. spec_mod.format_value(trial.seed) end
  list[#list + 1] = "runs_dir=" .. dir
  list[#list + 1] = "name=" .. trial.id
  return list
end

function runner.command(s, trial, dir)
  local argv = {C.exe_path(), "--threads", tostring(s.threads)}
  if s.config then argv[#argv + 1] = "train"; argv[#argv + 1] = s.config else argv[#argv + 1] = s.program end
  for _, o in ipairs(runner.overrides(s, trial, dir)) do argv[#argv + 1] = o end
  return argv
end

-- Checks every base key and parameter path against the experiment's config
-- before any trial starts; errors name the spec's line.
function runner.check(s)
  local function where(section, key)
    local line = spec_mod.line_of(s, section, key)
    return s.path .. (line and (":" .. line) or "")
  end
  local keys = {}
  for k, v in pairs(s.base) do keys[#keys + 1] = {"base", k, v} end
  for _, name in ipairs(s.parameter_names) do
    local p = s.parameters[name]
    keys[#keys + 1] = {"parameters", name, p.values and p.values[1] or p.min}
  end
  if s.config then
    if not files.exists(s.config) then error(where("config") .. ": config " .. s.config .. " does not exist", 0) end
    local cfg = kd.train.Trainer.resolve(config.load(s.config), s.config)
    for _, k in ipairs(keys) do
      local ok, err = pcall(config.override, config.copy(cfg), k[2] .. "=" .. spec_mod.format_value(k[3]))
      if not ok then error(where(k[1], k[2]) .. ": " .. tostring(err), 0) end
    end
  else
    if not files.exists(s.program) then error(where("program") .. ": program " .. s.program .. " does not exist", 0) end
    for _, k in ipairs(keys) do
      -- (Lua 5.1's popen does not give the exit status: the shell prints it)
      local cmd = string.format("'%s' '%s' --check '%s=%s' 2>&1; echo \"exit status $?\"", C.exe_path(), s.program,
                                k[2], spec_mod.format_value(k[3]))
      local p = io.popen(cmd)
      local out = p:read("*a")
      p:close()
      local ok = out:match("exit status 0%s*$") ~= nil
      if not ok then error(where(k[1], k[2]) .. ": " .. (out:match("([^\n]*unknown[^\n]*)") or out:gsub("\n.*", "")), 0) end
    end
  end
end

-- The ledger: the last state of each trial.
function runner.read_ledger(path)
  local last, entries = {}, {}
  if not files.exists(path) then return last, entries end
  for line in io.lines(path) do
    local ok, e = pcall(cjson.decode, line)
    if ok and type(e) == "table" and e.trial then
      last[e.trial] = e
      entries[#entries + 1] = e
    end
  end
  return last, entries
end

local function append(path, entry)
  entry.time = os.time()
  local f = files.open_append(path)
  files.append(f, path, cjson.encode(entry) .. "\n")
  f:close()
end

-- A dotted path into a results table ("students.1.miou").
function runner.metric_of(results, name)
  local v = results
  for part in name:gmatch("[^%.]+") do
    if type(v) ~= "table" then return nil end
    v = v[tonumber(part) or part]
  end
  return type(v) == "number" and v or nil
end

local function eval_history(dir, trial)
  local path = dir .. "/" .. trial.id .. "/metrics.jsonl"
  local out = {}
  if not files.exists(path) then return out end
  for line in io.lines(path) do
    local ok, e = pcall(cjson.decode, line)
    if ok and type(e) == "table" and e.type == "eval" and type(e.miou) == "number" then out[#out + 1] = e.miou end
  end
  return out
end

local function log_tail(path)
  if not files.exists(path) then return "no log" end
  local text = files.read(path)
  local lines = {}
  for l in text:gmatch("[^\n]+") do lines[#lines + 1] = l end
  for i = #lines, 1, -1 do
    if lines[i]:match("^kdseg:") then return lines[i] end
  end
  return lines[#lines] or "no output"
end

-- Median stopping: the trial's best metric after k evaluations is worse than
-- the median of the other trials' best after k evaluations.
local function should_stop(s, history, others)
  local k = #history
  if not s.early or k < s.early.min_evals then return false end
  local values = {}
  for _, h in ipairs(others) do
    if #h >= k then
      local best = h[1]
      for i = 2, k do best = s.metric.goal == "maximize" and math.max(best, h[i]) or math.min(best, h[i]) end
      values[#values + 1] = best
    end
  end
  if #values == 0 then return false end
  table.sort(values)
  local median = #values % 2 == 1 and values[(#values + 1) / 2] or (values[#values / 2] + values[#values / 2 + 1]) / 2
  local mine = history[1]
  for i = 2, k do mine = s.metric.goal == "maximize" and math.max(mine, history[i]) or math.min(mine, history[i]) end
  if s.metric.goal == "maximize" then return mine < median end
  return mine > median
end

function runner.run(s, options)
  local dir = runner.dir(s, options.runs_dir)
  local ledger = dir .. "/ledger.jsonl"
  if files.exists(ledger) and not options.resume and not options.trial then
    error(string.format("sweep: %s already has a ledger; add --resume to go on with it", dir), 0)
  end
  -- one runner per sweep at a time (the ledger says what is done); the
  -- tasks of a Slurm array (options.trial) run side by side, each on its trial
  if options.trial then files.mkdir_p(dir) else rundir.claim(dir, {resume = true}) end
  local trials = spec_mod.trials(s)
  C.write_atomic(dir .. "/sweep.json", cjson.encode({spec = s.path, name = s.name, metric = s.metric,
                                                     parameters = s.parameter_names, trials = #trials}) .. "\n")
  local last = runner.read_ledger(ledger)
  local pending = {}
  if options.trial then
    local t = trials[options.trial + 1]
    if not t then error(string.format("sweep: trial %d outside 0..%d", options.trial, #trials - 1), 0) end
    pending[1] = t
  else
    -- retry_failed: the failed ones too (what made them fail is fixed)
    for _, t in ipairs(trials) do
      local state = last[t.id] and last[t.id].state
      if not (state and DONE[state]) or (options.retry_failed and state == "failed") then pending[#pending + 1] = t end
    end
  end
  local workers = options.workers or 1
  local cores = C.nproc()
  if workers * s.threads > cores and not options.oversubscribe then
    local fit = math.max(1, math.floor(cores / s.threads))
    if not options.quiet then print(string.format("sweep: %d workers x %d threads exceed %d cores; running %d at once", workers, s.threads, cores, fit)) end
    workers = fit
  end
  -- Oversubscribed, libgomp's threads that spin at a barrier before they
  -- sleep (its default) hold the cores the other trials need: two 2-thread
  -- processes on 2 cores each ran bench_student's step 7.4 times slower
  -- than alone, and 2.3 times with OMP_WAIT_POLICY=passive (which costs
  -- about 30% alone, so it is not kdseg's default). A user's setting stays.
  local trial_env = {}
  if workers * s.threads > cores and not os.getenv("OMP_WAIT_POLICY") then trial_env.OMP_WAIT_POLICY = "passive" end
  if not options.quiet then print(string.format("sweep %s: %d trials, %d to run, %d at once", s.name, #trials, #pending, workers)) end
  C.watch_interrupts()
  local running, histories, stopping = {}, {}, {}
  local next_index = 1
  while next_index <= #pending or next(running) do
    if C.interrupted() then
      for pid, t in pairs(running) do C.kill(pid) end
      while next(running) do
        local pid = C.wait_any()
        if pid and running[pid] then
          append(ledger, {trial = running[pid].id, state = "interrupted"})
          running[pid] = nil
        elseif not pid then C.sleep(0.05) end
      end
      if not options.quiet then print("sweep: interrupted; the ledger is consistent, --resume goes on") end
      rundir.release(dir)
      return false
    end
    local count = 0
    for _ in pairs(running) do count = count + 1 end
    while count < workers and next_index <= #pending do
      local t = pending[next_index]
      next_index = next_index + 1
      -- a trial runs from the start: what an earlier attempt left goes (a
      -- folder still in use, by a trial an older runner left, is an error)
      local trial_dir = dir .. "/" .. t.id
      rundir.claim(trial_dir, {overwrite = true})
      rundir.release(trial_dir)
      local argv = runner.command(s, t, dir)
      local pid = C.spawn(argv, dir .. "/" .. t.id .. ".log", trial_env)
      local params = {}
      for _, p in ipairs(t.params) do params[p[1]] = p[2] end
      append(ledger, {trial = t.id, index = t.index, state = "started", params = params, seed = t.seed or cjson.null,
                      command = table.concat(argv, " ")})
      running[pid] = t
      count = count + 1
    end
    local pid, code, sig = C.wait_any()
    if pid and running[pid] then
      local t = running[pid]
      running[pid] = nil
      local params = {}
      for _, p in ipairs(t.params) do params[p[1]] = p[2] end
      if stopping[t.id] then
        append(ledger, {trial = t.id, index = t.index, state = "stopped", params = params, seed = t.seed or cjson.null,
                        reason = "median stopping"})
      elseif code == 0 then
        local ok, results = pcall(function() return cjson.decode(files.read(dir .. "/" .. t.id .. "/results.json")) end)
        local value = ok and runner.metric_of(results, s.metric.name) or nil
        if value then
          append(ledger, {trial = t.id, index = t.index, state = "finished", params = params, seed = t.seed or cjson.null, metric = value})
        else
          append(ledger, {trial = t.id, index = t.index, state = "failed", params = params, seed = t.seed or cjson.null,
                          error = "no metric '" .. s.metric.name .. "' in results.json"})
        end
      else
        append(ledger, {trial = t.id, index = t.index, state = "failed", params = params, seed = t.seed or cjson.null,
                        error = sig and ("killed by signal " .. sig) or log_tail(dir .. "/" .. t.id .. ".log")})
      end
      if not options.quiet then print(string.format("sweep: %s %s", t.id, stopping[t.id] and "stopped" or (code == 0 and "done" or "failed"))) end
    elseif not pid then
      if s.early then
        for _, t in ipairs(trials) do histories[t.id] = eval_history(dir, t) end
        for rpid, t in pairs(running) do
          if not stopping[t.id] then
            local others = {}
            for id, h in pairs(histories) do if id ~= t.id then others[#others + 1] = h end end
            if should_stop(s, histories[t.id], others) then
              stopping[t.id] = true
              C.kill(rpid)
            end
          end
        end
      end
      C.sleep(0.1)
    end
  end
  rundir.release(dir)
  return true
end

-- The trials whose last state in the ledger is "failed", with their errors.
function runner.failures(s, runs_dir)
  local last = runner.read_ledger(runner.dir(s, runs_dir) .. "/ledger.jsonl")
  local list = {}
  for _, t in ipairs(spec_mod.trials(s)) do
    local e = last[t.id]
    if e and e.state == "failed" then list[#list + 1] = t.id .. " (" .. tostring(e.error) .. ")" end
  end
  return list
end

return runner
