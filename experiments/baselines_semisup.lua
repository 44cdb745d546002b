-- The baselines the method is measured against, with one student design and
-- one budget (iterations, batch size): supervised on fine labels only;
-- supervised on fine + raw coarse labels; Mean Teacher; Cross Pseudo
-- Supervision; a UniMatch-style weak-to-strong consistency. Writes
-- runs/<name>/results.md and results.json. Each method is a stage of its
-- own (runs/<name>/<method>/): --resume goes on at the method and iteration
-- where a killed run stopped; --overwrite replaces an earlier run.
--   kdseg experiments/baselines_semisup.lua [key=value ...] [--resume | --overwrite]
-- (--check only checks the overrides: kdseg sweep does, before its trials.)
-- probe_images=N (64; 0: none): the semi-supervised methods' pseudo-labels
-- are measured ten times as they train on N of the coarse and unlabeled
-- images whose true labels exist (SynthCity's hidden truth), "pseudo" lines
-- in each method's metrics.jsonl (kd.train.pseudo_probe).
-- Each semi-supervised method's own settings are under its name, with its
-- reference's values by default (kd.baselines.common):
--   mean_teacher.weight=100 mean_teacher.rampup=0 mean_teacher.on=both mean_teacher.ema_decay=0.99 mean_teacher.perturb=true
--   cps.weight=6 cps.rampup=0 cps.on=both
--   unimatch.weight=1 unimatch.rampup=0 unimatch.threshold=0 unimatch.unconfident=zero unimatch.strong=photometric
local cjson = require("cjson")
local semisup = require("kd.method.semisup")

local common = require("kd.baselines.common")
local cfg = {name = "baselines_semisup", runs_dir = "runs", seed = 1, model = "bench_student", iterations = 2000,
             lr = 0.01, batch_size = 8, workers = 2, crop = {128, 256}, scale = {0.5, 2.0}, quiet = false, probe_images = 64,
             data = kd.config.copy(semisup.defaults.data), methods = {"fine_only", "fine_coarse", "mean_teacher", "cps", "unimatch"},
             mean_teacher = common.own_settings("mean_teacher"), cps = common.own_settings("cps"),
             unimatch = common.own_settings("unimatch")}
local flags = kd.config.arguments(arg, cfg, {"check", "resume", "overwrite"})
if flags.check then return end -- kdseg sweep checks overrides this way before running trials
local classes = kd.data.classes.get(cfg.data.classes) -- data.classes: cityscapes or a YAML table
local root = cfg.data.root
local function at_root(list) return list:sub(1, 1) == "/" and list or root .. "/" .. list end
local labeled = kd.data.Dataset{root = root, list = at_root(cfg.data.labeled), classes = classes}
local val = kd.data.Dataset{root = root, split = cfg.data.val.split, classes = classes}
local weak = semisup.weak_items({data = cfg.data}, classes) -- coarse images (with labels) and unlabeled ones
local unlabeled_items = {}
for i, it in ipairs(weak) do unlabeled_items[i] = {image = it.image} end
local unlabeled = kd.data.Dataset.from_items(unlabeled_items, classes)
if type(cfg.probe_images) ~= "number" or cfg.probe_images < 0 or cfg.probe_images % 1 ~= 0 then
  error("baselines: probe_images must be a whole number >= 0, got " .. tostring(cfg.probe_images), 0)
end
-- the probe's images: spread evenly over the coarse and unlabeled ones that have true labels
local probe = nil
if cfg.probe_images > 0 then
  local judged = {}
  for _, it in ipairs(weak) do
    local truth = semisup.truth_for(root, it.image)
    if truth then judged[#judged + 1] = {image = it.image, label = truth, train_ids = false} end
  end
  local picked, n = {}, math.min(cfg.probe_images, #judged)
  for k = 1, n do picked[k] = judged[math.floor((k - 1) * #judged / n) + 1] end
  if n > 0 then
    probe = {dataset = kd.data.Dataset.from_items(picked, classes, false), every = math.max(1, math.floor(cfg.iterations / 10))}
  end
end
local dir = kd.train.rundir.path(cfg.runs_dir, cfg.name, "baselines")
kd.train.rundir.claim(dir, flags)

local function supervised(name, items, resume)
  local tcfg = {name = name, runs_dir = dir, seed = cfg.seed, model = {name = cfg.model}, optim = {lr = cfg.lr},
                data = {root = root, classes = cfg.data.classes, batch_size = cfg.batch_size, workers = cfg.workers,
                        train = {list = cfg.data.labeled}, val = {split = cfg.data.val.split},
                        augment = {crop = cfg.crop, scale = cfg.scale}},
                train = {iterations = cfg.iterations, eval_every = 0, checkpoint_every = 0,
                         log_every = math.max(1, math.floor(cfg.iterations / 10))}}
  local set = items and kd.data.Dataset.from_items(items, classes, labeled.train_id_files) or nil
  kd.train.Trainer(tcfg, {quiet = cfg.quiet, train_set = set, resume = resume}):run()
end

local results, rows = {}, {"| method (" .. cfg.model .. ", " .. cfg.iterations .. " iterations) | val mIoU |", "|---|---|"}
local titles = {fine_only = "supervised, fine labels only", fine_coarse = "supervised, fine + raw coarse labels",
                mean_teacher = "Mean Teacher", cps = "Cross Pseudo Supervision", unimatch = "UniMatch-style"}
for _, method in ipairs(cfg.methods) do
  if not titles[method] then error("baselines: unknown method '" .. tostring(method) .. "'", 0) end
end
for _, method in ipairs(cfg.methods) do
  local r = kd.train.stage(dir .. "/" .. method, flags, function(resume)
    if method == "fine_only" then supervised("fine_only", nil, resume)
    elseif method == "fine_coarse" then
      local items = {}
      for _, it in ipairs(labeled.items) do items[#items + 1] = it end
      for _, it in ipairs(weak) do if it.label then items[#items + 1] = it end end
      supervised("fine_coarse", items, resume)
    else
      local settings = {name = method, runs_dir = dir, seed = cfg.seed, model = cfg.model, iterations = cfg.iterations,
                        lr = cfg.lr, batch_size = cfg.batch_size, workers = cfg.workers, crop = cfg.crop,
                        scale = cfg.scale, quiet = cfg.quiet}
      for key, value in pairs(cfg[method]) do settings[key] = value end
      kd.baselines[method]({settings = settings,
                            labeled = labeled, unlabeled = unlabeled, val = val, classes = classes, resume = resume,
                            probe = probe})
    end
  end)
  results[method] = r.final_miou
  rows[#rows + 1] = string.format("| %s | %.2f |", titles[method], 100 * r.final_miou)
  -- written after each method: a run stopped later keeps the methods it finished
  if kd.dist.is_main() then
    kd._C.write_atomic(dir .. "/results.json", cjson.encode(results) .. "\n")
    kd._C.write_atomic(dir .. "/results.md", table.concat(rows, "\n") .. "\n")
  end
end
kd.train.rundir.release(dir)
if kd.dist.is_main() then print(table.concat(rows, "\n")) end
