-- The students of an earlier kd.semisup run (semisup_kd.lua, the accuracy
-- benchmark's method/) trained again from its teacher after a cycle and that
-- cycle's pseudo-labels, with other student settings: what a student-side
-- change does, without running the teacher and the cycles again.
--   kdseg experiments/students_from_run.lua run=runs/accuracy_benchmark/method \
--         name=respect students.kd_respect_labels=true [cycle=K] [students.iterations=N] [--resume | --overwrite]
-- run: the semisup run's folder (config.json, teacher_cycle<K>/, pseudo/cycle_<K>/),
-- where "{seed}" stands for the seed (a sweep's replicates each learning
-- from their own seed's teacher: experiments/sweeps/kd_weights.yaml);
-- cycle: which cycle's teacher and pseudo-labels (default: the run's last);
-- seed: the students' seed (default: the run's);
-- runs_dir: where the students' folder <name>/ goes (default: the run's folder);
-- students.models: the run's, or kd.semisup's default two when it had none;
-- students.*: any field of the run's students settings. Writes
-- <runs_dir>/<name>/results.json and prints each student's and the ensemble's mIoU.
-- (--check only checks the overrides, against kd.semisup's defaults: kdseg sweep does, before its trials.)
local semisup = require("kd.method.semisup")
local files = require("kd.data.files")

local run, seed, check_only
for _, a in ipairs(arg or {}) do -- first: the other defaults come from the run
  run, seed = a:match("^run=(.+)$") or run, a:match("^seed=(.+)$") or seed
  check_only = check_only or a == "--check"
end
if check_only then
  kd.config.arguments(arg, {run = "", runs_dir = "", name = "", cycle = 1, students = kd.config.copy(semisup.defaults.students),
                            quiet = false, seed = 0}, {"check", "resume", "overwrite"})
  return
end
if not run then error("students_from_run: run=<folder of a kd.semisup run> is required", 0) end
if run:find("{seed}", 1, true) then
  if not seed then error("students_from_run: run=" .. run .. " names the seed's folder: give seed=N", 0) end
  run = semisup.seed_folder(run, seed)
end
local config_path = run .. "/config.json"
if not files.exists(config_path) then error("students_from_run: " .. config_path .. " is missing (not a kd.semisup run?)", 0) end
local base = kd.config.merge(semisup.defaults, kd.config.load(config_path), "semisup")
-- a run made for this (students.models=[]: the teacher and its cycles only)
-- gets kd.semisup's default students
if #base.students.models == 0 then base.students.models = kd.config.copy(semisup.defaults.students.models) end

local cfg = {run = run, runs_dir = run, name = "students_again", cycle = base.cycles.count, students = base.students,
             quiet = base.quiet, seed = base.seed}
local flags = kd.config.arguments(arg, cfg, {"resume", "overwrite"})
if cfg.cycle < 1 then error("students_from_run: the run has no cycle (cycles.count = 0): no pseudo-labels to learn from", 0) end

base.students, base.quiet, base.seed = cfg.students, cfg.quiet, cfg.seed
-- the students train in <base.runs_dir>/<base.name>/<name>
base.runs_dir, base.name = cfg.runs_dir:match("^(.*)/[^/]+$") or ".", cfg.runs_dir:match("([^/]+)/*$")
local dir = kd.train.rundir.path(cfg.runs_dir, cfg.name, "students_from_run")
kd.train.rundir.claim(dir, flags)
local out = semisup.students_from(run, cfg.cycle, base, cfg.name, flags.resume)

local rows = {string.format("students of %s trained again from cycle %d (%s):", run, cfg.cycle, cfg.name), "",
              "| model | val mIoU |", "|---|---|"}
for i, st in ipairs(out.students) do rows[#rows + 1] = string.format("| student %d (%s) | %.2f |", i, st.name, 100 * st.miou) end
if out.ensemble then rows[#rows + 1] = string.format("| students' ensemble | %.2f |", 100 * out.ensemble.miou) end
local md = table.concat(rows, "\n")
if kd.dist.is_main() then
  kd._C.write_atomic(dir .. "/results.md", md .. "\n")
  print(md)
end
