-- stage: one step of a pipeline whose output is a run folder. Its
-- results.json, which the loop writes last, marks it finished: when
-- resuming, a finished stage is read back and never run again, and an
-- unfinished one goes on from its state file.
--   local results, done = kd.train.stage(dir, {resume = r, overwrite = o}, function(resume_this) ... end)
-- run(resume_this) trains into dir (resume_this: a state file is there to
-- continue from). Returns dir's results.json and whether it was there before.
-- The folder is claimed first (kd.train.rundir): an earlier run there is
-- refused unless resumed or overwritten. A stage killed before its first
-- state file has nothing to continue from: what it left is removed and it
-- starts again.
local config = require("kd.infra.config")
local files = require("kd.data.files")
local rundir = require("kd.train.rundir")

return function(dir, options, run)
  options = options or {}
  local done = options.resume and files.exists(dir .. "/results.json") or false
  if not done then
    local again = options.resume and files.exists(dir .. "/checkpoints/state.safetensors") or false
    rundir.claim(dir, {resume = again, overwrite = options.overwrite or (options.resume and not again)})
    run(again)
  end
  if not files.exists(dir .. "/results.json") then error("stage " .. dir .. ": finished without writing results.json", 0) end
  return config.load(dir .. "/results.json"), done
end
