-- Ablation of the method: fine labels only / + pseudo-labels (one cycle) /
-- + self-correction (K cycles) / + pixel KD / + pair-wise KD / + holistic
-- KD / + mutual learning, each over several seeds; writes
-- runs/<name>/ablation.md (and .json) with the students' mIoU as mean and
-- spread (sample standard deviation), on the validation images and, where
-- the dataset has one, on its test split.
--   kdseg experiments/ablation.lua [seeds=[1,2,3]] [key=value ...] [--resume | --overwrite]   (keys: kd.semisup.defaults)
-- Each distillation term enters with the weight students.weights gives it
-- (kd.semisup's defaults, or, as below, the tuned ones the accuracy
-- benchmark's students use, so that the rows build up to the benchmarked
-- method); holistic KD, which the method leaves at 0, with the
-- structured-distillation paper's 0.1 unless given.
-- The variants differ only in the students, so each seed's teacher and its
-- K cycles are made once (runs/<name>/seed<k>/teacher, a kd.semisup run
-- without students) and every variant's students learn from it
-- (semisup.students_from: the first teacher for fine labels only, cycle 1's
-- teacher and pseudo-labels for one cycle, cycle K's for the rest) in
-- runs/<name>/seed<k>/v<i>. teachers_from=<folder with {seed}> takes them
-- from earlier runs instead (the accuracy benchmark's:
-- teachers_from=runs/accuracy_benchmark/seed{seed}/method), which must have
-- been made with the same settings. --resume goes on where a killed ablation stopped.
-- At the accuracy benchmark's size, from its teachers, with its students'
-- tuned settings (README, "The ablation"):
--   kdseg experiments/ablation.lua name=ablation_benchmark teachers_from=runs/accuracy_benchmark/seed{seed}/method \
--     data.root=data/accuracy_benchmark augment.crop=[64,128] teacher.model=deeplabv3plus teacher.iterations=2000 \
--     teacher.lr=0.02 teacher.retrain_iterations=1000 teacher.retrain_lr=0.01 students.iterations=4000 students.lr=0.02 \
--     students.weights.pixel_kd=2 students.weights.pairwise=0.198055 students.weights.mutual=0.613839 \
--     students.temperature=1 students.pairwise_pooling=max
local cjson = require("cjson")
local semisup = require("kd.method.semisup")
local evaluate = require("kd.train.evaluate")
local files = require("kd.data.files")

local base = kd.config.copy(semisup.defaults)
base.name, base.seeds, base.teachers_from = "ablation", {1, 2, 3}, false
local flags = kd.config.arguments(arg, base, {"resume", "overwrite"})
if type(base.seeds) ~= "table" or #base.seeds == 0 then error("ablation: seeds must be a non-empty list", 0) end
if base.teachers_from ~= false and (type(base.teachers_from) ~= "string" or not base.teachers_from:find("{seed}", 1, true)) then
  error("ablation: teachers_from must be a folder naming the seed as {seed}, got " .. tostring(base.teachers_from), 0)
end
local dir = kd.train.rundir.path(base.runs_dir, base.name, "ablation")
kd.train.rundir.claim(dir, flags)
local seeds, teachers_from = base.seeds, base.teachers_from
base.seeds, base.teachers_from = nil, nil
base.baselines = {fine_only = false, all_labels = false}
local K = math.max(2, base.cycles.count)
base.cycles.count = K
local given = base.students.weights
for _, term in ipairs({"pixel_kd", "pairwise", "mutual"}) do
  if type(given[term]) ~= "number" or given[term] <= 0 then
    error(string.format("ablation: the ablation adds %s; give it a weight above 0 (students.weights.%s), got %s",
                        term, term, tostring(given[term])), 0)
  end
end
local holistic = (type(given.holistic) == "number" and given.holistic > 0) and given.holistic or 0.1
local none = {ce = 1, pseudo = 0, pixel_kd = 0, pairwise = 0, mutual = 0, strong = 0, holistic = 0}
local added = {} -- the terms of the variants so far, with their weights
local function weights(term, weight)
  if term then added[term] = weight end
  local w = kd.config.copy(none)
  for k, v in pairs(added) do w[k] = v end
  return w
end
local function title(text, weight) return string.format("%s (weight %g)", text, weight) end
-- title, the cycle whose teacher and pseudo-labels the students learn from,
-- their loss weights (each row adds one term to the row before)
local variants = {
  {"fine labels only", 0, weights()},
  {"+ pseudo-labels (1 cycle)", 1, weights("pseudo", 1)},
  {"+ self-correction (" .. K .. " cycles)", K, weights()},
  {title("+ pixel KD", given.pixel_kd), K, weights("pixel_kd", given.pixel_kd)},
  {title("+ pair-wise KD", given.pairwise), K, weights("pairwise", given.pairwise)},
  {title("+ holistic KD", holistic), K, weights("holistic", holistic)},
  {title("+ mutual learning", given.mutual), K, weights("mutual", given.mutual)},
}

-- What the teacher and its cycles depend on: a run given by teachers_from
-- must agree on all of it.
local function teacher_side(cfg)
  return {cfg.data, cfg.augment, cfg.teacher, cfg.cycles, cfg.batch_size, cfg.seed}
end

local classes = kd.data.classes.get(base.data.classes)
local test_set = nil
if files.exists(base.data.root .. "/leftImg8bit/test") then
  test_set = kd.data.Dataset({root = base.data.root, split = "test", labels = "fine", classes = classes})
end

-- per variant, per seed: the students' mean mIoU on val and on test
local values = {}
for v = 1, #variants do values[v] = {val = {}, test = {}} end
for _, seed in ipairs(seeds) do
  local seed_cfg = kd.config.copy(base)
  seed_cfg.seed = seed
  local run
  if teachers_from then
    run = semisup.seed_folder(teachers_from, seed)
    local path = run .. "/config.json"
    if not files.exists(path) then error("ablation: " .. path .. " is missing (teachers_from: not a kd.semisup run?)", 0) end
    local theirs = kd.config.merge(semisup.defaults, kd.config.load(path), "semisup")
    if not semisup.same_settings(teacher_side(theirs), teacher_side(seed_cfg)) then
      error("ablation: " .. run .. "'s teacher was made with other settings (data, augment, teacher, cycles, batch_size "
            .. "or seed) than this ablation's: give the same ones", 0)
    end
  else
    local teacher_cfg = kd.config.copy(seed_cfg)
    teacher_cfg.name, teacher_cfg.students.models = string.format("%s/seed%d/teacher", base.name, seed), {}
    semisup.run(teacher_cfg, {resume = flags.resume})
    run = string.format("%s/%s/seed%d/teacher", base.runs_dir, base.name, seed)
  end
  for v, variant in ipairs(variants) do
    local cfg = kd.config.copy(seed_cfg)
    cfg.name, cfg.students.weights = string.format("%s/seed%d", base.name, seed), variant[3]
    local folder = string.format("%s/%s/v%d", cfg.runs_dir, cfg.name, v)
    local r = kd.train.stage(folder, flags, function(resume) semisup.students_from(run, variant[2], cfg, "v" .. v, resume) end)
    local test = test_set and evaluate.run_folder(folder, test_set, classes, {workers = cfg.workers}) or nil
    local val_sum, test_sum = 0, 0
    for i = 1, #cfg.students.models do
      val_sum = val_sum + r.models["student" .. i].final_miou
      if test then test_sum = test_sum + test["student" .. i].miou end
    end
    values[v].val[#values[v].val + 1] = 100 * val_sum / #cfg.students.models
    if test then values[v].test[#values[v].test + 1] = 100 * test_sum / #cfg.students.models end
  end
end

local stats = require("kd.infra.stats")
local function cell(list)
  if #list == 0 then return "-" end
  local mean, sd = stats.mean_sd(list)
  return #list > 1 and string.format("%.2f ± %.2f", mean, sd) or string.format("%.2f", mean)
end
local rows = {string.format("| variant | students' test mIoU | students' val mIoU |"), "|---|---|---|"}
local json = {seeds = seeds, variants = {}}
for v, variant in ipairs(variants) do
  rows[#rows + 1] = string.format("| %s | %s | %s |", variant[1], cell(values[v].test), cell(values[v].val))
  json.variants[v] = {name = variant[1], val = values[v].val, test = values[v].test}
end
rows[#rows + 1] = ""
rows[#rows + 1] = string.format("mean ± sample standard deviation over seeds %s; each seed's figure is the mean of its %d students",
                                table.concat(seeds, ", "), #base.students.models)
local md = table.concat(rows, "\n")
kd.train.rundir.release(dir)
if kd.dist.is_main() then
  kd._C.write_atomic(dir .. "/ablation.md", md .. "\n")
  kd._C.write_atomic(dir .. "/ablation.json", cjson.encode(json) .. "\n")
  print(md)
end
