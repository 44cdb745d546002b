-- The accuracy benchmark of the method (`make bench-accuracy`, not a test):
-- SynthCity of a fixed size and seed at 128 x 256, 1/8 of the training images
-- finely labeled, plus the coarse and unlabeled tiers. The method
-- (kd.semisup: teacher, self-correcting cycles, two students) and every
-- baseline (experiments/baselines_semisup.lua: fine only, fine + raw coarse,
-- Mean Teacher, CPS, UniMatch-style) train the same student design for the
-- same iterations, batch, crops and scales, once per seed (seeds, 3 by
-- default: each row is a mean and sample standard deviation). Settings are
-- chosen on the validation images; the table's figures are on a held-out
-- test split (100 images the generator adds after the others, so the
-- training and validation images are those of earlier runs), every model
-- from its last weights; the validation figures are given beside.
-- Writes runs/<name>/results.md and .json, each seed in runs/<name>/seed<k>/.
--   kdseg experiments/accuracy_benchmark.lua [seeds=[1,2,3]] [iterations=N] [teacher_iterations=N] [name=...]
--         [mean_teacher.weight=W ...] [students.weights.mutual=W ...] [baselines=false] [--resume | --overwrite]
-- iterations: every student's and baseline's budget (4000: at 2000 the
-- supervised baselines were still far from converged, fine only 36.9 against
-- 41.5 at 4000); teacher_iterations: the teacher's first training (each of the
-- 2 retraining cycles takes half). baselines=false: the method's rows only
-- (teacher, students, fine only, all labels), a little over half the time:
-- for comparing settings of the engine on the method, such as
-- KDSEG_CONV_PRECISION=bf16, against a full run's rows.
-- About 35 minutes per seed on 2 cores with the defaults below (the
-- documented size; `size` and `root` are there for the tests' tiny run),
-- the baselines 17 of them; README, "The accuracy benchmark".
local cjson = require("cjson")
local semisup = require("kd.method.semisup")
local evaluate = require("kd.train.evaluate")
local pseudo_probe = require("kd.train.pseudo_probe")

local cfg = {name = "accuracy_benchmark", root = "data/accuracy_benchmark", classes = "cityscapes", seeds = {1, 2, 3},
             iterations = 4000, lr = 0.02,
             teacher_iterations = 2000, -- the teacher's first training; each retraining cycle half of it
             batch_size = 8, workers = 2, crop = {64, 128}, scale = {0.5, 2.0}, teacher = "deeplabv3plus",
             student = "bench_student", quiet = false, teacher_with_coarse = false,
             baselines_from = false, -- an earlier benchmark's folder whose seed<k>/baselines (same data and budget) are reused
             baselines = true, -- false: the method's rows only
             teacher_checkpoint = false, -- the weights of a teacher an earlier run trained (same data and budget), every seed
             size = {train = 200, coarse = 600, val = 100, test = 100, height = 128, width = 256}}
-- Each semi-supervised baseline's own settings (mean_teacher.weight=...,
-- the keys of experiments/baselines_semisup.lua) and the students' (the
-- method's students.*, but their models, iterations and learning rate,
-- which are the benchmark's student, iterations and lr): as tuned below,
-- else their defaults, unless given.
local common = require("kd.baselines.common")
for method in pairs(common.own_keys) do cfg[method] = common.own_settings(method) end
-- The settings each baseline's sweep chose on the validation split
-- (experiments/sweeps/baseline_*.yaml, 1000 iterations; a ramp-up found there
-- is scaled to the default 4000: 250 of 1000 is 1000 of 4000; see
-- ACCURACY_NOTES.md, "Tuning the baselines"). Their references' own
-- settings are kd.baselines.common's (mean_teacher.weight=100 ... to run those).
local tuned = {mean_teacher = {weight = 8.30768, ema_decay = 0.99, on = "both", rampup = 1000},
               cps = {weight = 0.728502, on = "unlabeled", rampup = 0},
               unimatch = {weight = 0.178872, threshold = 0.8, unconfident = "zero", rampup = 1000}}
for method, settings in pairs(tuned) do
  for key, value in pairs(settings) do cfg[method][key] = value end
end
cfg.students = kd.config.copy(semisup.defaults.students)
cfg.students.models, cfg.students.iterations, cfg.students.lr = nil, nil, nil
-- The students' distillation settings the method's sweep chose with the
-- baselines' budget (experiments/sweeps/kd_weights.yaml; ACCURACY_NOTES.md,
-- "Tuning the method"); kd.semisup's own defaults otherwise.
local tuned_students = {weights = {pixel_kd = 2, pairwise = 0.198055, mutual = 0.613839}, temperature = 1,
                        pairwise_pooling = "max"}
for key, value in pairs(tuned_students.weights) do cfg.students.weights[key] = value end
cfg.students.temperature, cfg.students.pairwise_pooling = tuned_students.temperature, tuned_students.pairwise_pooling
local flags = kd.config.arguments(arg, cfg, {"resume", "overwrite"})
local root, dir = cfg.root, kd.train.rundir.path("runs", cfg.name, "accuracy_benchmark")
if type(cfg.seeds) ~= "table" or #cfg.seeds == 0 then error("accuracy_benchmark: seeds must be a non-empty list", 0) end
if not cfg.baselines and cfg.baselines_from then
  error("accuracy_benchmark: baselines=false runs no baselines; baselines_from has none to reuse then", 0)
end
kd.train.rundir.claim(dir, flags) -- --resume: the method and the baselines go on where they stopped

-- The documented size and seed: 200 training images (25 finely labeled),
-- 600 coarse-only images, 100 validation images, 100 test images (added to
-- a dataset written before there was a test split, the others unchanged).
local size = cfg.size
kd.dist.on_main(function() -- data-parallel: one rank generates, the others wait
  local spec = {root = root, train = size.train, coarse = size.coarse, val = size.val, test = size.test,
                height = size.height, width = size.width, seed = 1}
  if not kd.data.files.exists(root .. "/.complete") then
    print("== generating SynthCity in " .. root)
    kd.data.synthcity.write(spec)
    kd.data.splits.write({root = root, fractions = {"1/8"}, seed = 0})
    kd._C.write_atomic(root .. "/.complete", "")
    kd._C.write_atomic(root .. "/.test_complete", "")
  elseif not kd.data.files.exists(root .. "/.test_complete") then
    print("== adding a test split to " .. root)
    spec.only = {"test"}
    kd.data.synthcity.write(spec)
    kd._C.write_atomic(root .. "/.test_complete", "")
  end
end)
local data = {root = root, classes = cfg.classes, labeled = "splits/1_8/labeled.txt", unlabeled = "splits/1_8/unlabeled.txt"}
local classes = kd.data.classes.get(cfg.classes)
local test_set = kd.data.Dataset({root = root, split = "test", labels = "fine", classes = classes})
local baselines_script = (debug.getinfo(1, "S").source:match("^@(.*/)") or "./") .. "baselines_semisup.lua"

-- The rows of the table: the run folder (relative to a seed's folder) and
-- model of each, and where its validation figure is in the seed's results.
local baseline_methods = {fine_coarse = "supervised, fine + raw coarse labels", mean_teacher = "Mean Teacher",
                          cps = "Cross Pseudo Supervision", unimatch = "UniMatch-style"}
local rows = {
  {"supervised, fine labels only", "method/baseline_fine_only"},
  {baseline_methods.fine_coarse, "baselines/fine_coarse"},
  {baseline_methods.mean_teacher, "baselines/mean_teacher"},
  {baseline_methods.cps, "baselines/cps"},
  {baseline_methods.unimatch, "baselines/unimatch"},
  {"the method: distilled student 1", "method/students", "student1"},
  {"the method: distilled student 2", "method/students", "student2"},
  {"the method: students' ensemble", "method/students", "ensemble"},
  {string.format("the method: teacher (%s%s, last cycle)", cfg.teacher,
                 cfg.teacher_with_coarse and ", first trained on fine + raw coarse" or ""), "method/teacher_cycle2"},
  {"supervised, all fine labels", "method/baseline_all_labels"},
}

-- The pseudo-labels each semi-supervised method learns from: the baselines'
-- probes (kd.train.pseudo_probe; their last, and at a tenth and half of the
-- training) and the method's refined labels of each cycle (its stats.json).
-- Per row: the baseline folder and probe source, or the method's cycle.
local pseudo_rows = {
  {"Mean Teacher: EMA teacher (every pixel)", "mean_teacher", "teacher"},
  {"CPS: network a's labels for b (every pixel)", "cps", "a"},
  {"CPS: network b's labels for a (every pixel)", "cps", "b"},
  {"UniMatch-style: weak view above its threshold", "unimatch", "weak"},
  {"the method: refined pseudo-labels, cycle 1", cycle = 1},
  {"the method: refined pseudo-labels, cycle 2", cycle = 2},
}
-- whether a row of the table (a run folder under baselines/) or of the
-- pseudo-label table (a baseline's) is left out by baselines=false
local function left_out(row) return not cfg.baselines and row[2] and row[2]:find("^baselines/") ~= nil end
local function pseudo_left_out(row) return not cfg.baselines and not row.cycle end
local function pseudo_figures(seed_dir, baselines_dir)
  local out = {}
  for i, row in ipairs(pseudo_rows) do
    if row.cycle then
      local path = string.format("%s/method/pseudo/cycle_%d/stats.json", seed_dir, row.cycle)
      local st = kd.data.files.exists(path) and kd.config.load(path) or {}
      if type(st.accuracy) == "number" then out[i] = {final = {accuracy = st.accuracy, coverage = st.coverage}} end
    elseif not pseudo_left_out(row) then
      local list = pseudo_probe.history(baselines_dir .. "/baselines/" .. row[2])[row[3]]
      if list and #list > 0 then
        out[i] = {first = list[1], middle = list[math.ceil(#list / 2)], final = list[#list]}
      end
    end
  end
  return out
end

-- One seed: the method and every baseline, then every row's model on the
-- test split. Returns per row {val = ..., test = ...} (mIoU), and the
-- pseudo-label figures (pseudo_figures).
local students_settings = kd.config.copy(cfg.students)
students_settings.models, students_settings.iterations, students_settings.lr = {cfg.student, cfg.student}, cfg.iterations, cfg.lr
local function one_seed(seed)
  local seed_dir = dir .. "/seed" .. seed
  kd.data.files.mkdir_p(seed_dir)
  semisup.run({
    name = "method", runs_dir = seed_dir, seed = seed, batch_size = cfg.batch_size, workers = cfg.workers,
    data = data, augment = {crop = cfg.crop, scale = cfg.scale},
    teacher = {model = cfg.teacher, iterations = cfg.teacher_iterations, lr = cfg.lr, with_coarse = cfg.teacher_with_coarse,
               checkpoint = cfg.teacher_checkpoint,
               retrain_iterations = math.floor(cfg.teacher_iterations / 2), retrain_lr = cfg.lr / 2},
    cycles = {count = 2},
    students = students_settings,
    quiet = cfg.quiet,
  }, {resume = flags.resume})
  local baselines_dir = seed_dir
  if cfg.baselines_from then
    baselines_dir = cfg.baselines_from .. "/seed" .. seed
  elseif cfg.baselines then
    _G.arg = {"name=baselines", "runs_dir=" .. seed_dir, "seed=" .. seed, "model=" .. cfg.student,
              "iterations=" .. cfg.iterations, "lr=" .. cfg.lr, "batch_size=" .. cfg.batch_size,
              "workers=" .. cfg.workers, string.format("crop=[%d,%d]", cfg.crop[1], cfg.crop[2]),
              string.format("scale=[%g,%g]", cfg.scale[1], cfg.scale[2]), "data.root=" .. root,
              "data.labeled=" .. data.labeled, "data.unlabeled=" .. data.unlabeled, "data.classes=" .. cfg.classes,
              "methods=[cps,mean_teacher,unimatch,fine_coarse]", "quiet=" .. tostring(cfg.quiet)}
    for _, method in ipairs({"mean_teacher", "cps", "unimatch"}) do
      for _, key in ipairs(common.own_keys[method]) do
        _G.arg[#_G.arg + 1] = method .. "." .. key .. "=" .. tostring(cfg[method][key])
      end
    end
    if flags.resume then _G.arg[#_G.arg + 1] = "--resume" end
    dofile(baselines_script)
  end
  local tested = {} -- run folder -> its models' test scores, and its results.json
  local out = {}
  for i, row in ipairs(rows) do
    if left_out(row) then goto next_row end
    local folder = row[2]:gsub("^baselines/", "") ~= row[2] and (baselines_dir .. "/" .. row[2]) or (seed_dir .. "/" .. row[2])
    if not tested[folder] then
      tested[folder] = {scores = evaluate.run_folder(folder, test_set, classes, {workers = cfg.workers}),
                        results = kd.config.load(folder .. "/results.json")}
    end
    local t = tested[folder]
    local model = row[3] or t.results.primary
    local val = t.results.models[model] and t.results.models[model].final_miou
    local test = t.scores[model] and t.scores[model].miou
    if not val or not test then error(string.format("accuracy_benchmark: %s has no model %s", folder, tostring(model)), 0) end
    out[i] = {val = val, test = test}
    ::next_row::
  end
  out.pseudo = pseudo_figures(seed_dir, baselines_dir)
  return out
end

local per_seed = {}
for k, seed in ipairs(cfg.seeds) do
  if not cfg.quiet and kd.dist.is_main() then print(string.format("== seed %d (%d of %d)", seed, k, #cfg.seeds)) end
  per_seed[k] = one_seed(seed)
end

-- mean and sample standard deviation over the seeds, in mIoU points
local function spread(i, field)
  local values = {}
  for k = 1, #per_seed do values[k] = 100 * per_seed[k][i][field] end
  local mean, sd = require("kd.infra.stats").mean_sd(values)
  return mean, sd, values
end
local function cell(i, field)
  local mean, sd = spread(i, field)
  return #per_seed > 1 and string.format("%.2f ± %.2f", mean, sd) or string.format("%.2f", mean)
end
local lines = {string.format("SynthCity %s: %d train (1/8 finely labeled) + %d coarse, %d val, %d test, %dx%d, data seed 1; "
                             .. "%s, %d iterations, batch %d, crops %dx%d; teacher %s, %d + %d x %d iterations; seeds %s",
                             root, size.train, size.coarse, size.val, size.test, size.height, size.width, cfg.student,
                             cfg.iterations, cfg.batch_size, cfg.crop[1], cfg.crop[2], cfg.teacher, cfg.teacher_iterations,
                             2, math.floor(cfg.teacher_iterations / 2), table.concat(cfg.seeds, ", ")), "",
               string.format("| model | test mIoU | val mIoU |"), "|---|---|---|"}
local json_rows = {}
for i, row in ipairs(rows) do
  if left_out(row) then goto next_row end
  lines[#lines + 1] = string.format("| %s | %s | %s |", row[1], cell(i, "test"), cell(i, "val"))
  local test_mean, test_sd, test_values = spread(i, "test")
  local val_mean, val_sd, val_values = spread(i, "val")
  json_rows[#json_rows + 1] = {name = row[1], test = {mean = test_mean, sd = test_sd, seeds = test_values},
                               val = {mean = val_mean, sd = val_sd, seeds = val_values}}
  ::next_row::
end
if cfg.baselines_from then lines[#lines + 1] = "\nbaselines reused from " .. cfg.baselines_from end
if not cfg.baselines then lines[#lines + 1] = "\nthe method's rows only (baselines=false)" end
local fine, best, all = spread(1, "test"), math.max((spread(6, "test")), (spread(7, "test"))), spread(10, "test")
lines[#lines + 1] = ""
lines[#lines + 1] = string.format("on the test split, best distilled student - fine only: %+.2f mIoU (means over the seeds); "
                                  .. "share of the gap to all labels closed: %.0f%%",
                                  best - fine, all > fine and 100 * (best - fine) / (all - fine) or 0)
-- the pseudo-label table: means over the seeds that have the figure
local function pseudo_cell(i, at, field)
  local sum, n = 0, 0
  for k = 1, #per_seed do
    local f = per_seed[k].pseudo[i] and per_seed[k].pseudo[i][at]
    if f and type(f[field]) == "number" then sum, n = sum + f[field], n + 1 end
  end
  return n > 0 and string.format("%.1f", 100 * sum / n) or "-"
end
lines[#lines + 1] = ""
lines[#lines + 1] = "Pseudo-labels on coarse and unlabeled training images, judged against their hidden true labels "
                    .. "(the baselines: the probe's images, predictions at a tenth, half and the end of training; "
                    .. "the method: every such image, its refined labels per cycle); % accuracy of the labelled pixels, "
                    .. "% of pixels labelled, mIoU of the source's predictions; means over the seeds"
lines[#lines + 1] = ""
lines[#lines + 1] = "| pseudo-labels | accuracy, 1/10 | accuracy, 1/2 | accuracy, end | coverage, end | mIoU, end |"
lines[#lines + 1] = "|---|---|---|---|---|---|"
local pseudo_json = {}
for i, row in ipairs(pseudo_rows) do
  if pseudo_left_out(row) then goto next_pseudo end
  local entry = {name = row[1], seeds = {}}
  for k = 1, #per_seed do entry.seeds[k] = per_seed[k].pseudo[i] or cjson.null end
  pseudo_json[#pseudo_json + 1] = entry
  lines[#lines + 1] = string.format("| %s | %s | %s | %s | %s | %s |", row[1], pseudo_cell(i, "first", "accuracy"),
                                    pseudo_cell(i, "middle", "accuracy"), pseudo_cell(i, "final", "accuracy"),
                                    pseudo_cell(i, "final", "coverage"), pseudo_cell(i, "final", "miou"))
  ::next_pseudo::
end
local md = table.concat(lines, "\n")
if kd.dist.is_main() then
  kd._C.write_atomic(dir .. "/results.md", md .. "\n")
  kd._C.write_atomic(dir .. "/results.json", cjson.encode({settings = cfg, rows = json_rows, pseudo = pseudo_json}) .. "\n")
  print(md)
end
kd.train.rundir.release(dir)
