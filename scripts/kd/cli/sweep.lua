-- kdseg sweep: hyperparameter sweeps from a YAML spec (see scripts/kd/sweep/spec.lua).
--   kdseg sweep SPEC [--workers N] [--resume] [--oversubscribe]   run (the report is written at the end)
--   kdseg sweep --report DIR                                        rewrite DIR's report
--   kdseg sweep SPEC --emit-slurm DIR                              a Slurm job-array script
--   kdseg sweep SPEC --trial I                                     run trial I alone (what each array task does)
local argparse = require("argparse")
local spec = require("kd.sweep.spec")
local runner = require("kd.sweep.runner")
local report = require("kd.sweep.report")

return function(...)
  local parser = argparse("kdseg sweep", "Run a hyperparameter sweep from a YAML spec.")
  parser:argument("spec", "The sweep spec (YAML)."):args("?")
  parser:option("--workers", "Trials at once.", "1"):convert(tonumber)
  parser:flag("--resume", "Go on with a sweep whose runner was stopped.")
  parser:flag("--retry-failed", "With --resume, run the failed trials again too (once what made them fail is fixed).")
  parser:flag("--oversubscribe", "Allow workers x threads beyond the machine's cores.")
  parser:option("--report", "Write the report of the sweep in this folder, and stop.")
  parser:option("--emit-slurm", "Write a Slurm job-array script into this folder, and stop.")
  parser:option("--trial", "Run only trial I (0-based)."):convert(tonumber)
  parser:option("--runs-dir", "Where sweeps write.", "runs")
  parser:flag("--quiet", "Print nothing but errors.")
  local args = parser:parse({...})
  if args.report then
    print("report: " .. report.write(args.report))
    return
  end
  if not args.spec then error("kdseg sweep: a spec file is required (kdseg sweep SPEC)", 0) end
  local s = spec.load(args.spec)
  runner.check(s)
  if args.emit_slurm then
    local path, n = report.slurm(s, args.emit_slurm, args.runs_dir)
    print(string.format("slurm: %s (array of %d trials)", path, n))
    return
  end
  if not args.workers or args.workers < 1 then error("kdseg sweep: --workers must be >= 1", 0) end
  if args.retry_failed and not args.resume then error("kdseg sweep: --retry-failed goes with --resume", 0) end
  local complete = runner.run(s, {workers = args.workers, resume = args.resume, retry_failed = args.retry_failed,
                                  oversubscribe = args.oversubscribe,
                                  trial = args.trial, runs_dir = args.runs_dir, quiet = args.quiet})
  local failed = runner.failures(s, args.runs_dir)
  if args.trial then
    for _, f in ipairs(failed) do
      if f:match("^([^ ]+)") == spec.trials(s)[args.trial + 1].id then error("sweep: trial " .. f .. " failed", 0) end
    end
    return
  end
  local path = report.write(runner.dir(s, args.runs_dir), s)
  if not args.quiet then print("report: " .. path) end
  if not complete then os.exit(130, true) end
  -- a sweep with failed trials is not a success: a script or CI must see it
  if #failed > 0 then
    error(string.format("sweep: %d of %d trials failed: %s; their logs are in %s", #failed, #spec.trials(s),
                        table.concat(failed, "; "), runner.dir(s, args.runs_dir)), 0)
  end
end
