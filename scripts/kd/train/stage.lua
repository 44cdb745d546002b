-- stage: one step of a pipeline whose output is a run folder. Its
-- results.json, which the loop writes last, marks it finished: when
-- resuming, a finished stage is read back and never run again, and an
-- unfinished one goes on from its state file.
--   local results, done = kd.train.stage(dir, resume, function(resume_this) ... end)
-- run(resume_this) trains into dir (resume_this: a state file is there to
-- continue from). Returns dir's results.json and whether it was there before.
local config = require("kd.config")
local files = require("kd.data.files")

return function(dir, resume, run)
  local done = resume and files.exists(dir .. "/results.json") or false
  if not done then run(resume and files.exists(dir .. "/checkpoints/state.safetensors") or false) end
  if not files.exists(dir .. "/results.json") then error("stage " .. dir .. ": finished without writing results.json", 0) end
  return config.load(dir .. "/results.json"), done
end
