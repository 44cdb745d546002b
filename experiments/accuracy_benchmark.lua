-- The accuracy benchmark of the method (`make bench-accuracy`, not a test):
-- SynthCity of a fixed size and seed at 128 x 256, 1/8 of the training images
-- finely labeled, plus the coarse and unlabeled tiers. The method
-- (kd.semisup: teacher, self-correcting cycles, two students) and every
-- baseline (experiments/baselines_semisup.lua: fine only, fine + raw coarse,
-- Mean Teacher, CPS, UniMatch-style) train the same student design for the
-- same iterations, batch, crops and scales; evaluation is on the whole
-- 128 x 256 validation images. Writes runs/<name>/results.md and .json.
--   kdseg experiments/accuracy_benchmark.lua [iterations=N] [teacher_iterations=N] [name=...] [--resume | --overwrite]
-- iterations: every student's and baseline's budget (4000: at 2000 the
-- supervised baselines were still far from converged, fine only 36.9 against
-- 41.5 at 4000); teacher_iterations: the teacher's first training (each of the
-- 2 retraining cycles takes half).
-- About 1.5 hours on 2 cores with the defaults below, a little over an hour
-- with teacher_checkpoint= (the documented size; `size` and `root` are there
-- for the tests' tiny run).
local cjson = require("cjson")
local semisup = require("kd.method.semisup")

local cfg = {name = "accuracy_benchmark", root = "data/accuracy_benchmark", classes = "cityscapes", seed = 1, iterations = 4000, lr = 0.02,
             teacher_iterations = 2000, -- the teacher's first training; each retraining cycle half of it
             batch_size = 8, workers = 2, crop = {64, 128}, scale = {0.5, 2.0}, teacher = "deeplabv3plus",
             student = "bench_student", quiet = false, teacher_with_coarse = false,
             baselines_from = false, -- a results.json of an earlier run's baselines (same data and budget) to reuse
             teacher_checkpoint = false, -- the weights of a teacher an earlier run trained (same data and budget)
             size = {train = 200, coarse = 600, val = 100, height = 128, width = 256}}
local flags = kd.config.arguments(arg, cfg, {"resume", "overwrite"})
local root, dir = cfg.root, kd.train.rundir.path("runs", cfg.name, "accuracy_benchmark")
kd.train.rundir.claim(dir, flags) -- --resume: the method and the baselines go on where they stopped

-- The documented size and seed: 200 training images (25 finely labeled),
-- 600 coarse-only images, 100 validation images.
local size = cfg.size
kd.dist.on_main(function() -- data-parallel: one rank generates, the others wait
  if kd.data.files.exists(root .. "/.complete") then return end
  print("== generating SynthCity in " .. root)
  kd.data.synthcity.write({root = root, train = size.train, coarse = size.coarse, val = size.val, height = size.height,
                           width = size.width, seed = 1})
  kd.data.splits.write({root = root, fractions = {"1/8"}, seed = 0})
  kd._C.write_atomic(root .. "/.complete", "")
end)
local data = {root = root, classes = cfg.classes, labeled = "splits/1_8/labeled.txt", unlabeled = "splits/1_8/unlabeled.txt"}

local method = semisup.run({
  name = "method", runs_dir = dir, seed = cfg.seed, batch_size = cfg.batch_size, workers = cfg.workers,
  data = data, augment = {crop = cfg.crop, scale = cfg.scale},
  teacher = {model = cfg.teacher, iterations = cfg.teacher_iterations, lr = cfg.lr, with_coarse = cfg.teacher_with_coarse,
             checkpoint = cfg.teacher_checkpoint,
             retrain_iterations = math.floor(cfg.teacher_iterations / 2), retrain_lr = cfg.lr / 2},
  cycles = {count = 2},
  students = {models = {cfg.student, cfg.student}, iterations = cfg.iterations, lr = cfg.lr},
  quiet = cfg.quiet,
}, {resume = flags.resume})

local args = {"name=baselines", "runs_dir=" .. dir, "seed=" .. cfg.seed, "model=" .. cfg.student,
              "iterations=" .. cfg.iterations, "lr=" .. cfg.lr, "batch_size=" .. cfg.batch_size,
              "workers=" .. cfg.workers, string.format("crop=[%d,%d]", cfg.crop[1], cfg.crop[2]),
              string.format("scale=[%g,%g]", cfg.scale[1], cfg.scale[2]), "data.root=" .. root,
              "data.labeled=" .. data.labeled, "data.unlabeled=" .. data.unlabeled, "data.classes=" .. cfg.classes,
              "methods=[cps,mean_teacher,unimatch,fine_coarse]", "quiet=" .. tostring(cfg.quiet),
              flags.resume and "--resume" or nil}
local baselines_json = cfg.baselines_from or (dir .. "/baselines/results.json")
if not cfg.baselines_from then
  _G.arg = args
  dofile((debug.getinfo(1, "S").source:match("^@(.*/)") or "./") .. "baselines_semisup.lua")
end
local baselines = cjson.decode(kd.data.files.read(baselines_json))

-- One table: the method's students against every baseline and the two
-- supervised references (fine labels only, all fine labels).
local fine, all = method.fine_only.miou, method.all_labels.miou
local best = 0
for _, st in ipairs(method.students) do best = math.max(best, st.miou) end
local rows = {string.format("SynthCity %s: %d train (1/8 finely labeled) + %d coarse, %d val, %dx%d, seed 1; "
                            .. "%s, %d iterations, batch %d, crops %dx%d; teacher %s, %d + %d x %d iterations",
                            root, size.train, size.coarse, size.val, size.height, size.width, cfg.student, cfg.iterations,
                            cfg.batch_size, cfg.crop[1], cfg.crop[2], cfg.teacher, cfg.teacher_iterations, 2,
                            math.floor(cfg.teacher_iterations / 2)), "",
              "| model | val mIoU |", "|---|---|"}
local function row(name, v) rows[#rows + 1] = string.format("| %s | %.2f |", name, 100 * v) end
row("supervised, fine labels only", fine)
row("supervised, fine + raw coarse labels", baselines.fine_coarse)
row("Mean Teacher", baselines.mean_teacher)
row("Cross Pseudo Supervision", baselines.cps)
row("UniMatch-style", baselines.unimatch)
for i, st in ipairs(method.students) do row(string.format("the method: distilled student %d", i), st.miou) end
row("the method: students' ensemble", method.ensemble.miou)
row(string.format("the method: teacher (%s%s, last cycle)", cfg.teacher,
                  cfg.teacher_with_coarse and ", first trained on fine + raw coarse" or ""), method.teacher.miou)
row("supervised, all fine labels", all)
if cfg.baselines_from then rows[#rows + 1] = "\nbaselines reused from " .. cfg.baselines_from end
rows[#rows + 1] = ""
rows[#rows + 1] = string.format("best distilled student - fine only: %+.2f mIoU; share of the gap to all labels closed: %.0f%%",
                                100 * (best - fine), all > fine and 100 * (best - fine) / (all - fine) or 0)
local md = table.concat(rows, "\n")
if kd.dist.is_main() then
  kd._C.write_atomic(dir .. "/results.md", md .. "\n")
  kd._C.write_atomic(dir .. "/results.json", cjson.encode({settings = cfg, method = method, baselines = baselines}) .. "\n")
  print(md)
end
kd.train.rundir.release(dir)
