-- The students of an earlier kd.semisup run (semisup_kd.lua, the accuracy
-- benchmark's method/) trained again from its teacher after a cycle and that
-- cycle's pseudo-labels, with other student settings: what a student-side
-- change does, without running the teacher and the cycles again.
--   kdseg experiments/students_from_run.lua run=runs/accuracy_benchmark/method \
--         name=respect students.kd_respect_labels=true [cycle=K] [students.iterations=N] [--resume | --overwrite]
-- run: the semisup run's folder (config.json, teacher_cycle<K>/, pseudo/cycle_<K>/);
-- cycle: which cycle's teacher and pseudo-labels (default: the run's last);
-- seed: the students' seed (default: the run's);
-- students.*: any field of the run's students settings. Writes
-- <run>/<name>/results.json and prints each student's and the ensemble's mIoU.
local semisup = require("kd.method.semisup")
local checkpoint = require("kd.train.checkpoint")
local files = require("kd.data.files")

local run
for _, a in ipairs(arg or {}) do run = a:match("^run=(.+)$") or run end -- first: the other defaults come from it
if not run then error("students_from_run: run=<folder of a kd.semisup run> is required", 0) end
local config_path = run .. "/config.json"
if not files.exists(config_path) then error("students_from_run: " .. config_path .. " is missing (not a kd.semisup run?)", 0) end
local base = kd.config.merge(semisup.defaults, kd.config.load(config_path), "semisup")

local cfg = {run = run, name = "students_again", cycle = base.cycles.count, students = base.students, quiet = base.quiet,
             seed = base.seed}
local flags = kd.config.arguments(arg, cfg, {"resume", "overwrite"})
if cfg.cycle < 1 then error("students_from_run: the run has no cycle (cycles.count = 0): no pseudo-labels to learn from", 0) end

local classes = kd.data.classes.get(base.data.classes) -- the run's own table
local teacher_path = string.format("%s/teacher_cycle%d/checkpoints/last.safetensors", run, cfg.cycle)
if not files.exists(teacher_path) then error("students_from_run: " .. teacher_path .. " is missing", 0) end
local teacher = checkpoint.load_model(teacher_path)
base.students, base.quiet, base.seed = cfg.students, cfg.quiet, cfg.seed
base.runs_dir, base.name = run:match("^(.*)/[^/]+$") or ".", run:match("([^/]+)$")
local labeled, val = semisup.datasets(base, classes)
local items, weights = semisup.cycle_items(string.format("%s/pseudo/cycle_%d", run, cfg.cycle), base.data.root,
                                           semisup.weak_items(base, classes), labeled.train_id_files)
kd.train.rundir.claim(kd.train.rundir.path(run, cfg.name, "students_from_run"), flags)
local out = semisup.train_students(base, cfg.name, teacher, labeled, items, weights, val, classes, flags.resume)

local rows = {string.format("students of %s trained again from cycle %d (%s):", run, cfg.cycle, cfg.name), "",
              "| model | val mIoU |", "|---|---|"}
for i, st in ipairs(out.students) do rows[#rows + 1] = string.format("| student %d (%s) | %.2f |", i, st.name, 100 * st.miou) end
if out.ensemble then rows[#rows + 1] = string.format("| students' ensemble | %.2f |", 100 * out.ensemble.miou) end
local md = table.concat(rows, "\n")
if kd.dist.is_main() then
  kd._C.write_atomic(run .. "/" .. cfg.name .. "/results.md", md .. "\n")
  print(md)
end
