-- semisup: the whole method as one pipeline of building blocks, each usable
-- alone from a script:
--   1. a teacher trained on the fine labels (kd.train.Trainer);
--   2. K self-correcting cycles: the teacher (or the average of its weights
--      over the cycles, batch-norm statistics re-estimated) predicts every
--      coarse and unlabeled image; its distributions are averaged over cycles;
--      refinement rules make labels and confidence weights, written as PNGs
--      with statistics; the teacher is fine-tuned on fine + refined labels;
--   3. N students trained together (kd.students) from fine labels,
--      pseudo-labels, the teacher and each other;
--   4. evaluation of the teacher, every student, their ensemble and the
--      supervised baselines (fine labels only, all fine labels).
local cjson = require("cjson")
local C = require("kd._C")
local config = require("kd.infra.config")
local pseudo = require("kd.method.pseudo")
local files = require("kd.data.files")
local Dataset = require("kd.data.dataset")
local evaluate = require("kd.train.evaluate")
local checkpoint = require("kd.train.checkpoint")
local rundir = require("kd.train.rundir")

local semisup = {}

local normalize = require("kd.data.normalize")
local students = require("kd.method.students")

local model_options = config.copy(require("kd.train.defaults").model)
model_options.name = nil

semisup.defaults = {
  name = "semisup_kd", runs_dir = "runs", seed = 1, batch_size = 8, workers = 2,
  cache_mb = 256, -- decoded samples each training loader keeps (MiB; 0: none); changes no batch
  checkpoint_every = 200, -- every stage's resume state (kdseg ... --resume continues a killed pipeline)
  data = {root = "data/synthcity", classes = "cityscapes", labeled = "splits/1_8/labeled.txt", unlabeled = "splits/1_8/unlabeled.txt",
          coarse = {split = "train_extra", use = true}, val = {split = "val", limit = 0}},
  augment = {crop = {128, 256}, scale = {0.5, 2.0}},
  -- model_options: the teacher design's options and pretrained backbone
  -- weights, the keys of a training config's model section but its name
  -- (kd.models.build; false: the design's default)
  teacher = {model = "bench_teacher", model_options = model_options,
             iterations = 2000, lr = 0.01, retrain_iterations = 1000, retrain_lr = 0.005,
             with_coarse = false, average_weights = false, bn_batches = 20, retrain_fine_share = 0.5,
             retrain_freeze_bn = true, checkpoint = false},
  -- with_coarse: first training on raw coarse labels too; retrain_fine_share:
  -- the fine images' share of the retraining set (0: each image once);
  -- retrain_freeze_bn: retraining keeps the batch norms' running statistics;
  -- checkpoint: a weights file of a teacher already trained (the first
  -- training is skipped)
  -- rules: coarse labels are an annotator's and right where drawn (SynthCity's
  -- always are), so every one is kept at full weight; with a 0.9 threshold a
  -- teacher confident in its mistakes (trucks taken for buses) overruled them
  -- and the cycles could not correct it
  cycles = {count = 2, soft_average = true, soft_scale = 4, flip = false, percentile = pseudo.threshold_defaults.percentile,
            min_threshold = pseudo.threshold_defaults.min, max_threshold = pseudo.threshold_defaults.max,
            rules = {{"keep_coarse", threshold = 1, weight = 1}, {"fill", threshold = "per_class"}}},
  -- students: the keys of kd.students.settings, with the method's own values:
  -- pseudo_balance weighs the pseudo term's classes by (mean / count)^0.5.
  -- Unweighted, the pseudo-labels (a tenth of the fence and pole pixels
  -- labelled, their surroundings labelled with confidence) taught the
  -- students to miss thin classes: fence 7.7 against 15.5 for the fine-only
  -- student. Weighted: fence 21, pole 12, students +1.7 / +1.3.
  -- kd_balance weighs pixel_kd's pixels alike by the teacher's class; most
  -- thin-class pixels have no pseudo-label (the teacher is unsure there) and
  -- only pixel_kd reaches them: fence 29, pole 22, students +2.0 / +2.5 over
  -- pseudo_balance alone.
  students = config.merge(students.settings, {models = {"bench_student", "bench_student"}, iterations = 2000,
                                              weights = {pixel_kd = 1, pairwise = 1, mutual = 1},
                                              pseudo_balance = 0.5, kd_balance = 0.5}),
  baselines = {fine_only = true, all_labels = true},
  quiet = false,
}

local function resolve_list(root, list)
  if not list then return nil end
  return list:sub(1, 1) == "/" and list or (root .. "/" .. list)
end

-- The true fine labels of an image where the dataset has them: gtFine, or
-- SynthCity's gtFineTrue for coarse-only images. nil otherwise.
function semisup.truth_for(root, image)
  local stem = image:sub(#root + 2):match("^leftImg8bit/(.*)_leftImg8bit%.[%a]+$")
  if not stem then return nil end
  for _, dir in ipairs({"gtFineTrue", "gtFine"}) do
    local path = root .. "/" .. dir .. "/" .. stem .. "_gtFine_labelIds.png"
    if files.exists(path) then return path end
  end
end

-- The images pseudo-labels are made for: coarse ones (with their coarse
-- labels) and unlabeled ones (without). Items: {image, label (coarse) or nil}.
function semisup.weak_items(cfg, classes)
  local d, items = cfg.data, {}
  if d.coarse.use then
    local coarse = Dataset({root = d.root, split = d.coarse.split, labels = "coarse", classes = classes})
    for _, it in ipairs(coarse.items) do items[#items + 1] = {image = it.image, label = it.label, train_ids = it.train_ids} end
  end
  if d.unlabeled then
    local unl = Dataset({root = d.root, list = resolve_list(d.root, d.unlabeled), classes = classes})
    for _, it in ipairs(unl.items) do items[#items + 1] = {image = it.image} end
  end
  return items
end

-- The teacher as a model spec (kd.models.build).
local function teacher_spec(cfg)
  local spec = {name = cfg.teacher.model}
  for k, v in pairs(cfg.teacher.model_options) do spec[k] = v end
  return spec
end

-- A teacher of the configured design, to load weights into (no pretrained
-- backbone: they would be overwritten).
local function blank_teacher(cfg, classes)
  return kd.models.create(cfg.teacher.model, kd.models.build_options(teacher_spec(cfg), classes.count))
end

-- model: a zoo name or a spec table, as the trainer's model section.
local function train_config(cfg, name, model, iterations, lr, list)
  return {name = name, runs_dir = cfg.runs_dir .. "/" .. cfg.name, seed = cfg.seed,
          data = {root = cfg.data.root, classes = cfg.data.classes, batch_size = cfg.batch_size, workers = cfg.workers,
                  cache_mb = cfg.cache_mb,
                  train = {list = list or false}, val = {split = cfg.data.val.split, limit = cfg.data.val.limit},
                  augment = {crop = cfg.augment.crop, scale = cfg.augment.scale}},
          model = type(model) == "table" and model or {name = model}, optim = {lr = lr}, schedule = {warmup = math.min(100, math.floor(iterations / 10))},
          train = {iterations = iterations, log_every = math.max(1, math.floor(iterations / 10)), eval_every = 0,
                   checkpoint_every = cfg.checkpoint_every, grids = 4}}
end

-- Re-estimates batch-norm running statistics of model over `batches`
-- training batches (cumulative averages), as for averaged weights.
function semisup.reestimate_bn(model, loader, batches)
  local bns = {}
  local function walk(m)
    if m.running_mean and m.momentum then bns[#bns + 1] = m end
    for _, child in ipairs(m:children()) do walk(child) end
  end
  walk(model)
  for _, bn in ipairs(bns) do bn.running_mean:fill_(0); bn.running_var:fill_(1); bn.saved_momentum = bn.momentum end
  model:train()
  kd.no_grad(function()
    for b = 1, batches do
      for _, bn in ipairs(bns) do bn.momentum = 1 / b end
      model(loader:next().images)
    end
  end)
  for _, bn in ipairs(bns) do bn.momentum, bn.saved_momentum = bn.saved_momentum, nil end
  model:eval()
end

-- Where a cycle in dir writes an image's pseudo-label and confidence PNGs:
-- under the image's path relative to the dataset root, since file names
-- alone repeat (coarse-only and unlabeled folders often reuse them, and
-- 350 of 750 images were once trained on another image's labels).
function semisup.pseudo_paths(dir, root, image)
  local prefix = root:gsub("/+$", "") .. "/"
  local rel = image:sub(1, #prefix) == prefix and image:sub(#prefix + 1) or nil
  if not rel or rel:match("^%.%./") or rel:find("/%.%./") or rel:find("/%.%.$") then
    error(string.format("semisup: image %s is not inside the dataset root %s", image, root), 0)
  end
  local stem = rel:gsub("_leftImg8bit%.[%a]+$", ""):gsub("%.[%a]+$", "")
  return dir .. "/" .. stem .. "_label.png", dir .. "/" .. stem .. "_confidence.png"
end
local pseudo_paths = semisup.pseudo_paths

-- The labeled training set and the validation set of a config.
function semisup.datasets(cfg, classes)
  local root = cfg.data.root
  local labeled = Dataset({root = root, list = resolve_list(root, cfg.data.labeled), classes = classes})
  local val = Dataset({root = root, split = cfg.data.val.split, classes = classes})
  if cfg.data.val.limit > 0 then
    local items = {}
    for i = 1, math.min(cfg.data.val.limit, #val.items) do items[i] = val.items[i] end
    val.items = items
  end
  return labeled, val
end

-- The pseudo items (and weight PNGs) a cycle wrote to dir for the weak items,
-- as label_cycle returns them: to train students again from an earlier run.
function semisup.cycle_items(dir, root, weak, train_id_files)
  local items, weights = {}, {}
  for _, it in ipairs(weak) do
    local label, weight = pseudo_paths(dir, root, it.image)
    if not files.exists(label) then error("semisup: " .. label .. " is missing (not the run's data?)", 0) end
    items[#items + 1] = {image = it.image, label = label, train_ids = train_id_files}
    weights[#weights + 1] = weight
  end
  return items, weights
end

-- The N students of cfg.students trained together (kd.students) into
-- <runs_dir>/<cfg.name>/<name> from the fine labels, the pseudo items (or
-- none) and the teacher. Returns kd.students.train's results.
function semisup.train_students(cfg, name, teacher, labeled, pseudo_items, pseudo_weights, val, classes, resume)
  local pseudo_set = pseudo_items and Dataset.from_items(pseudo_items, classes, labeled.train_id_files) or nil
  return students.train({
    settings = {name = name, runs_dir = cfg.runs_dir .. "/" .. cfg.name, seed = cfg.seed, batch_size = cfg.batch_size,
                workers = cfg.workers, cache_mb = cfg.cache_mb, log_every = math.max(1, math.floor(cfg.students.iterations / 10)),
                checkpoint_every = cfg.checkpoint_every, augment = {crop = cfg.augment.crop, scale = cfg.augment.scale},
                students = cfg.students},
    labeled = labeled, pseudo = pseudo_set, pseudo_weights = pseudo_weights, val = val, classes = classes,
    teacher = teacher, quiet = cfg.quiet, resume = resume,
  })
end

-- A run folder named per seed ("runs/teachers/seed{seed}") for one seed.
function semisup.seed_folder(pattern, seed)
  return (pattern:gsub("{seed}", function() return tostring(seed) end))
end

-- The students of cfg.students trained again from the finished run in
-- folder `run` (cfg: its settings, with the students' own) after `cycle`:
-- that cycle's teacher and pseudo-labels, or for cycle 0 the first teacher
-- and no pseudo-labels (fine labels only). Into <cfg.runs_dir>/<cfg.name>/<name>;
-- returns kd.students.train's results. What students_from_run.lua and the
-- ablation's variants train, without the teacher and its cycles again.
function semisup.students_from(run, cycle, cfg, name, resume)
  if type(cycle) ~= "number" or cycle < 0 or cycle % 1 ~= 0 or cycle > cfg.cycles.count then
    error(string.format("semisup: %s has cycles 0 to %d, not %s", run, cfg.cycles.count, tostring(cycle)), 0)
  end
  local teacher_path = cycle > 0 and string.format("%s/teacher_cycle%d/checkpoints/last.safetensors", run, cycle)
                       or cfg.teacher.checkpoint or (run .. "/teacher/checkpoints/last.safetensors")
  if not files.exists(teacher_path) then error("semisup: " .. teacher_path .. " is missing (an unfinished run?)", 0) end
  local teacher = checkpoint.load_model(teacher_path)
  local classes = kd.data.classes.get(cfg.data.classes) -- the run's own table
  local labeled, val = semisup.datasets(cfg, classes)
  local items, weights = nil, nil
  if cycle > 0 then
    items, weights = semisup.cycle_items(string.format("%s/pseudo/cycle_%d", run, cycle), cfg.data.root,
                                         semisup.weak_items(cfg, classes), labeled.train_id_files)
  end
  return semisup.train_students(cfg, name, teacher, labeled, items, weights, val, classes, resume)
end

-- One self-correction cycle: predictions for every weak item (averaged with
-- earlier cycles' when soft), refined labels and weights written to dir.
-- Returns pseudo items (label PNGs in the dataset's label space), weight PNG
-- paths and statistics. Data-parallel (kd.dist), each rank predicts and
-- writes its share of the items (round robin); the averaged distributions
-- are gathered on every rank (a sum over ranks of maps zero elsewhere, so
-- exact), so the per-class thresholds are the single process's, and the
-- statistics are added up.
function semisup.label_cycle(teacher, items, state, cycle, cfg, classes, dir, train_id_files)
  files.mkdir_p(dir)
  local written_by = {} -- label file -> image: two images must never share one
  for _, item in ipairs(items) do
    local label_path = pseudo_paths(dir, cfg.data.root, item.image)
    if written_by[label_path] then
      error(string.format("semisup: %s and %s would share the pseudo-label file %s (an image listed twice?)",
                          written_by[label_path], item.image, label_path), 0)
    end
    written_by[label_path] = item.image
  end
  local ids = {}
  for id = 1, #items do ids[id] = id end
  local mine = kd.dist.shard(ids) -- this rank's items: mine[k] is the index in items of its k-th
  local my_items = {}
  for k, id in ipairs(mine) do my_items[k] = items[id] end
  local ds = Dataset.from_items(my_items, classes, train_id_files)
  local function batches()
    if #my_items == 0 then return function() end end
    return kd.data.Loader(ds, {batch_size = 4, workers = cfg.workers, augment = normalize}):epoch()
  end
  local c = cfg.cycles
  -- pass 1: distributions, averaged over cycles at 1/soft_scale resolution
  state.soft = state.soft or {}
  for batch in batches() do
    local probs = pseudo.predict(teacher, batch.images, 1, c.flip)
    local h, w = probs:size(3), probs:size(4)
    for k = 1, batch.ids:numel() do
      local id = mine[batch.ids:get(k) + 1]
      local p = probs:narrow(k, 1)
      local sh, sw = math.max(1, math.floor(h / c.soft_scale)), math.max(1, math.floor(w / c.soft_scale))
      local small = kd.resize_bilinear(p, sh, sw)
      if c.soft_average and state.soft[id] then
        state.soft[id]:axpby_((cycle - 1) / cycle, small, 1 / cycle)
      else
        state.soft[id] = small
      end
    end
  end
  if kd.dist.size() > 1 then semisup.gather_soft(state.soft, mine, #items) end
  local low_pred, low_conf = {}, {}
  for id = 1, #items do low_conf[id], low_pred[id] = kd.max(state.soft[id]) end
  -- per-class thresholds over the whole set, from the averaged distributions
  local n, sh, sw = #items, low_pred[1]:size(2), low_pred[1]:size(3)
  local all_pred, all_conf = kd.zeros({n, sh, sw}, "int32"), kd.zeros({n, sh, sw})
  for id = 1, n do
    all_pred:narrow(id, 1):copy_(low_pred[id])
    all_conf:narrow(id, 1):copy_(low_conf[id])
  end
  local thresholds = pseudo.class_thresholds(all_pred, all_conf, classes.count,
                                             {percentile = c.percentile, min = c.min_threshold, max = c.max_threshold})
  -- pass 2: refine and write
  local to_file = {}
  for i = 1, 256 do to_file[i] = 255 end
  for t = 1, classes.count do to_file[t] = train_id_files and (t - 1) or classes.ids[t] end
  local covered, pixels, correct, judged, judged_images = 0, 0, 0, 0, 0
  local per_class = {}
  for k = 1, classes.count do per_class[k] = {labelled = 0, correct = 0} end
  for batch in batches() do
    for k = 1, batch.ids:numel() do
      local id = mine[batch.ids:get(k) + 1]
      local item = items[id]
      local h, w = batch.images:size(3), batch.images:size(4)
      local probs = kd.resize_bilinear(state.soft[id], h, w)
      local pred, conf = pseudo.decide(probs)
      local coarse = item.label and batch.labels:narrow(k, 1) or nil
      local labels, weights = pseudo.refine({probs = probs, pred = pred, conf = conf, coarse = coarse, classes = classes.count,
                                            thresholds = thresholds}, c.rules, cycle)
      local label_path, weight_path = pseudo_paths(dir, cfg.data.root, item.image)
      files.mkdir_p(label_path:match("^(.*)/[^/]+$"))
      local as_uint8 = labels:to("uint8"):view(h, w)
      local file_labels = C.map_values(as_uint8, to_file) -- ignored pixels stay 255, ignored in both spaces
      kd.image.write(label_path, file_labels)
      kd.image.write(weight_path, (weights * 255):to("uint8"):view(h, w))
      local truth_path = semisup.truth_for(cfg.data.root, item.image)
      local truth = truth_path and C.map_values(kd.image.read(truth_path), classes.lut) or nil
      local st = pseudo.stats(labels, truth, classes.count)
      covered, pixels = covered + st.covered, pixels + st.pixels
      if truth then
        judged_images = judged_images + 1
        for cl = 1, classes.count do
          per_class[cl].labelled = per_class[cl].labelled + st.per_class[cl].labelled
          per_class[cl].correct = per_class[cl].correct + st.per_class[cl].correct
          judged, correct = judged + st.per_class[cl].labelled, correct + st.per_class[cl].correct
        end
      end
    end
  end
  if kd.dist.size() > 1 then -- every rank's counts added up
    local numbers = {covered, pixels, correct, judged, judged_images}
    for cl = 1, classes.count do numbers[#numbers + 1] = per_class[cl].labelled; numbers[#numbers + 1] = per_class[cl].correct end
    local sums = kd.dist.all_reduce_numbers(numbers)
    covered, pixels, correct, judged, judged_images = sums[1], sums[2], sums[3], sums[4], sums[5]
    for cl = 1, classes.count do per_class[cl] = {labelled = sums[4 + 2 * cl], correct = sums[5 + 2 * cl]} end
    kd.dist.barrier() -- every rank's files are written before any rank reads them
  end
  local out_items, weight_paths = {}, {}
  for id, item in ipairs(items) do
    local label_path, weight_path = pseudo_paths(dir, cfg.data.root, item.image)
    out_items[id] = {image = item.image, label = label_path, train_ids = train_id_files}
    weight_paths[id] = weight_path
  end
  local accuracy = {}
  for cl, name in ipairs(classes.names) do
    accuracy[name] = per_class[cl].labelled > 0 and per_class[cl].correct / per_class[cl].labelled or cjson.null
  end
  -- coverage counts every image; accuracy only the images whose true labels
  -- exist (SynthCity's hidden truth, or fine labels): say over how many
  local stats = {cycle = cycle, images = n, coverage = covered / math.max(pixels, 1),
                 accuracy = judged > 0 and correct / judged or cjson.null, per_class_accuracy = accuracy,
                 accuracy_images = judged_images, coverage_images = n, thresholds = thresholds}
  -- the averaged distributions go on to the next cycle; stats.json, written
  -- last, marks the cycle finished for a resumed pipeline
  if kd.dist.is_main() then
    local soft = {}
    for id = 1, n do soft[tostring(id)] = state.soft[id] end
    kd.save(dir .. "/soft.safetensors", soft)
    C.write_atomic(dir .. "/stats.json", cjson.encode(stats) .. "\n")
  end
  return out_items, weight_paths, stats
end

-- Data-parallel: every item's averaged distribution on every rank. Each rank
-- has those of its items (`mine`); a sum over the ranks of a set that is
-- zero elsewhere gives each one exactly.
function semisup.gather_soft(soft, mine, n)
  local shape = {0, 0, 0, 0} -- every rank must agree on it: the largest over the ranks
  if #mine > 0 then shape = soft[mine[1]].shape end
  local agreed = kd.dist.all_reduce_numbers({shape[2], shape[3], shape[4]}, "max")
  local all = kd.zeros({n, agreed[1], agreed[2], agreed[3]})
  for _, id in ipairs(mine) do all:narrow(id, 1):copy_(soft[id]) end
  kd.dist.all_reduce(all)
  for id = 1, n do soft[id] = all:narrow(id, 1):clone() end
end

-- The training set of a retraining cycle: the fine items, repeated so they
-- make about `fine_share` of it (the few fine labels would otherwise be a
-- few percent of each batch, and the teacher would drift towards its own
-- pseudo-labels' mistakes), then the pseudo-labelled items. Returns items and
-- per-item weight PNGs (false for fine items).
function semisup.retrain_items(fine_items, pseudo_items, pseudo_weights, fine_share)
  local items, weights = {}, {}
  local repeats = 1
  if fine_share > 0 and fine_share < 1 and #fine_items > 0 then
    repeats = math.max(1, math.floor(fine_share / (1 - fine_share) * #pseudo_items / #fine_items + 0.5))
  end
  for _ = 1, repeats do
    for _, it in ipairs(fine_items) do items[#items + 1] = it; weights[#weights + 1] = false end
  end
  for i, it in ipairs(pseudo_items) do items[#items + 1] = it; weights[#weights + 1] = pseudo_weights[i] end
  return items, weights
end

-- Fine-tunes the teacher (in place) on fine + refined labels after cycle
-- `cycle`; returns the trainer's results (final_miou, per-class IoU).
function semisup.retrain_teacher(cfg, teacher, labeled, pseudo_items, pseudo_weights, cycle, classes, resume)
  local items, weights = semisup.retrain_items(labeled.items, pseudo_items, pseudo_weights, cfg.teacher.retrain_fine_share)
  local rcfg = train_config(cfg, "teacher_cycle" .. cycle, teacher_spec(cfg), cfg.teacher.retrain_iterations,
                            cfg.teacher.retrain_lr, cfg.data.labeled)
  rcfg.train.freeze_bn = cfg.teacher.retrain_freeze_bn
  local retrain = kd.train.Trainer(rcfg, {quiet = cfg.quiet, model = teacher, resume = resume,
                                          train_set = Dataset.from_items(items, classes, labeled.train_id_files),
                                          train_weights = weights})
  return retrain:run()
end

semisup.bounds = {{"seed", 0, "integer"}, {"batch_size", 1, "integer"}, {"workers", 0, "integer"}, {"cache_mb", 0},
                  {"checkpoint_every", 0, "integer"}, {"data.val.limit", 0, "integer"},
                  {"teacher.iterations", 1, "integer"}, {"teacher.lr", 0}, {"teacher.retrain_iterations", 0, "integer"},
                  {"teacher.retrain_lr", 0}, {"teacher.bn_batches", 0, "integer"}, {"cycles.count", 0, "integer"},
                  {"cycles.percentile", 0}, {"students.iterations", 1, "integer"}, {"students.lr", 0},
                  {"students.temperature", 0}}

local function say(cfg, ...) if not cfg.quiet and kd.dist.is_main() then print(string.format(...)) end end

local function same(a, b)
  if type(a) ~= type(b) then return false end
  if type(a) ~= "table" then return a == b or (type(a) == "number" and math.abs(a - b) <= 1e-12 * math.max(1, math.abs(a))) end
  for k, v in pairs(a) do if not same(v, b[k]) then return false end end
  for k in pairs(b) do if a[k] == nil then return false end end
  return true
end

-- Whether two settings are the same once written as JSON (a config.json
-- read back, where a rule {"fill", threshold = 0.5} has the key "1").
function semisup.same_settings(a, b)
  return same(cjson.decode(cjson.encode(a)), cjson.decode(cjson.encode(b)))
end

local function stage(cfg, options, name, run)
  return kd.train.stage(cfg.runs_dir .. "/" .. cfg.name .. "/" .. name, options, run)
end

-- The whole pipeline from a config (merged over semisup.defaults), as stages
-- that hand each other files in runs/<name>/: teacher/, pseudo/cycle_<k>/
-- and teacher_cycle<k>/ for each cycle, students/, baseline_fine_only/,
-- baseline_all_labels/. With {resume = true} a killed pipeline goes on at the
-- stage and iteration where it stopped; {overwrite = true} replaces an
-- earlier run of that name, which is refused otherwise. Writes results.json and results.md.
function semisup.run(user_config, options)
  options = options or {}
  local cfg = config.merge(semisup.defaults, user_config or {}, "semisup")
  config.check_bounds(cfg, semisup.bounds, "semisup")
  if type(cfg.students.models) ~= "table" then error("semisup: students.models must be a list of model names", 0) end
  if #cfg.students.models == 0 and (cfg.baselines.fine_only or cfg.baselines.all_labels) then
    error("semisup: the baselines train the students' model: with students.models=[] set "
          .. "baselines.fine_only=false baselines.all_labels=false", 0)
  end
  local dir = rundir.path(cfg.runs_dir, cfg.name, "semisup")
  local main = kd.dist.is_main() -- data-parallel: rank 0 writes the pipeline's own files
  rundir.claim(dir, {resume = options.resume, overwrite = options.overwrite})
  -- compared as JSON gives them back (a rule {"fill", threshold = 0.5} has the key "1" there);
  -- the loaders' cache may change (it changes no batch)
  local function settings(t) t = cjson.decode(cjson.encode(t)); t.cache_mb = nil; return t end
  if options.resume and files.exists(dir .. "/config.json") and
     not same(settings(config.load(dir .. "/config.json")), settings(cfg)) then
    error(string.format("semisup: --resume with other settings than %s/config.json's; resume with the same ones", dir), 0)
  end
  if main then C.write_atomic(dir .. "/config.json", cjson.encode(cfg) .. "\n") end
  local classes = kd.data.classes.get(cfg.data.classes)
  local root = cfg.data.root
  local labeled, val = semisup.datasets(cfg, classes)
  local results = {name = cfg.name}
  local start = C.clock()

  local weak = semisup.weak_items(cfg, classes)
  local coarse = 0
  for _, it in ipairs(weak) do if it.label then coarse = coarse + 1 end end
  results.images = {fine = #labeled.items, coarse = coarse, unlabeled = #weak - coarse, val = #val.items}
  say(cfg, "== data %s (%s classes): %d finely labeled, %d coarse-only, %d unlabeled, %d validation images", root,
      classes.name or "?", #labeled.items, coarse, #weak - coarse, #val.items)

  -- 1. the teacher on the fine labels (and the raw coarse ones if asked)
  local first_set = nil
  if cfg.teacher.with_coarse then
    local items = {}
    for _, it in ipairs(labeled.items) do items[#items + 1] = it end
    for _, it in ipairs(weak) do if it.label then items[#items + 1] = it end end
    first_set = Dataset.from_items(items, classes, labeled.train_id_files)
  end
  local teacher, teacher_miou
  if cfg.teacher.checkpoint then
    say(cfg, "== teacher from %s", cfg.teacher.checkpoint)
    local model_config
    teacher, model_config = checkpoint.load_model(cfg.teacher.checkpoint)
    if model_config.name ~= cfg.teacher.model then
      error(string.format("semisup: teacher.checkpoint %s holds a %s, teacher.model is %s", cfg.teacher.checkpoint,
                          tostring(model_config.name), cfg.teacher.model), 0)
    end
    local loader = kd.data.Loader(val, {batch_size = 4, workers = cfg.workers, augment = normalize})
    teacher_miou = evaluate.run(teacher, loader, classes):scores().miou
  else
    local r, done = stage(cfg, options, "teacher", function(resume)
      say(cfg, "== teacher (%s) on %d finely labelled images%s", cfg.teacher.model, #labeled.items,
          first_set and " and the raw coarse labels" or "")
      local tcfg = train_config(cfg, "teacher", teacher_spec(cfg), cfg.teacher.iterations, cfg.teacher.lr, cfg.data.labeled)
      local trainer = kd.train.Trainer(tcfg, {quiet = cfg.quiet, train_set = first_set, resume = resume})
      trainer:run()
      teacher = trainer.model
    end)
    if done then
      say(cfg, "== teacher: finished earlier")
      teacher = checkpoint.load_model(dir .. "/teacher/checkpoints/last.safetensors")
    end
    teacher_miou = r.final_miou
  end
  results.teacher = {miou = teacher_miou, cycle = 0}
  local history = {{cycle = 0, teacher_miou = teacher_miou}}

  -- 2. self-correcting cycles
  local state, pseudo_items, pseudo_weights, stats = {}, nil, nil, nil
  local averaged = nil
  for cycle = 1, cfg.cycles.count do
    local cycle_dir = string.format("%s/pseudo/cycle_%d", dir, cycle)
    if options.resume and files.exists(cycle_dir .. "/stats.json") then
      say(cfg, "== cycle %d: pseudo-labels made earlier", cycle)
      stats = config.load(cycle_dir .. "/stats.json")
      pseudo_items, pseudo_weights = semisup.cycle_items(cycle_dir, cfg.data.root, weak, labeled.train_id_files)
      local soft = kd.load(cycle_dir .. "/soft.safetensors")
      state.soft = {}
      for id = 1, #weak do state.soft[id] = soft[tostring(id)] end
      if cfg.teacher.average_weights then
        averaged = blank_teacher(cfg, classes)
        averaged:load_state_dict(kd.load(cycle_dir .. "/averaged.safetensors"))
      end
    else
      local labeller = teacher
      if cfg.teacher.average_weights then
        if not averaged then
          averaged = blank_teacher(cfg, classes)
          averaged:load_state_dict(teacher:state_dict())
        else
          kd.optim.EMA(averaged, teacher, {decay = (cycle - 1) / cycle, average_buffers = true}):update()
          local bn_loader = kd.data.Loader(labeled, {batch_size = cfg.batch_size, workers = cfg.workers, shuffle = true,
                                                      seed = cfg.seed + cycle, infinite = true, augment = {crop = cfg.augment.crop}})
          semisup.reestimate_bn(averaged, bn_loader, cfg.teacher.bn_batches)
          bn_loader:close()
        end
        files.mkdir_p(cycle_dir)
        if main then kd.save(cycle_dir .. "/averaged.safetensors", averaged:state_dict()) end
        labeller = averaged
      end
      say(cfg, "== cycle %d: pseudo-labels for %d images", cycle, #weak)
      pseudo_items, pseudo_weights, stats = semisup.label_cycle(labeller, weak, state, cycle, cfg, classes, cycle_dir,
                                                                labeled.train_id_files)
    end
    say(cfg, "   coverage %.1f%% (of %d images), accuracy %s", 100 * stats.coverage, stats.coverage_images,
        type(stats.accuracy) == "number" and string.format("%.1f%% (of the %d with true labels)", 100 * stats.accuracy,
                                                           stats.accuracy_images) or "unknown (no true labels)")
    local name = "teacher_cycle" .. cycle
    local r, done = stage(cfg, options, name, function(resume)
      semisup.retrain_teacher(cfg, teacher, labeled, pseudo_items, pseudo_weights, cycle, classes, resume)
    end)
    if done then
      say(cfg, "== %s: finished earlier", name)
      teacher:load_state_dict(kd.load(dir .. "/" .. name .. "/checkpoints/last.safetensors"))
    end
    history[#history + 1] = {cycle = cycle, teacher_miou = r.final_miou, coverage = stats.coverage, accuracy = stats.accuracy}
    results.teacher = {miou = r.final_miou, cycle = cycle}
  end
  results.cycles = history

  -- 3. the students, together (students.models = []: none, the pipeline
  -- ends with the teacher and its pseudo-labels, which students_from_run.lua
  -- can train students from again and again)
  results.students = {}
  if #cfg.students.models > 0 then
    local s = stage(cfg, options, "students", function(resume)
      say(cfg, "== %d students", #cfg.students.models)
      semisup.train_students(cfg, "students", teacher, labeled, pseudo_items, pseudo_weights, val, classes, resume)
    end)
    for i = 1, #cfg.students.models do
      local st = s.models["student" .. i]
      results.students[i] = {name = st.model, miou = st.final_miou}
    end
    if s.models.ensemble then
      results.ensemble = {miou = s.models.ensemble.final_miou, pixel_accuracy = s.models.ensemble.pixel_accuracy}
    end
  end

  -- 4. baselines with the same student and budget
  local student_spec = cfg.students.models[1]
  local student_model = type(student_spec) == "table" and student_spec.name or student_spec
  local student_iterations, student_lr = cfg.students.iterations, cfg.students.lr
  if cfg.baselines.fine_only then
    results.fine_only = {miou = stage(cfg, options, "baseline_fine_only", function(resume)
      say(cfg, "== baseline: %s on fine labels only", student_model)
      kd.train.run(train_config(cfg, "baseline_fine_only", student_spec, student_iterations, student_lr, cfg.data.labeled),
                   {quiet = cfg.quiet, resume = resume})
    end).final_miou}
  end
  if cfg.baselines.all_labels then
    results.all_labels = {miou = stage(cfg, options, "baseline_all_labels", function(resume)
      local all, seen = {}, {}
      local fine = Dataset({root = root, split = "train", labels = "fine", classes = classes})
      for _, it in ipairs(fine.items) do all[#all + 1] = it; seen[it.image] = true end
      for _, it in ipairs(weak) do -- unlabeled training images are in `fine` already
        local truth = not seen[it.image] and semisup.truth_for(root, it.image)
        if truth then all[#all + 1] = {image = it.image, label = truth, train_ids = false} end
      end
      say(cfg, "== baseline: %s on all %d fine labels", student_model, #all)
      local bcfg = train_config(cfg, "baseline_all_labels", student_spec, student_iterations, student_lr, nil)
      kd.train.Trainer(bcfg, {quiet = cfg.quiet, resume = resume, train_set = Dataset.from_items(all, classes, false)}):run()
    end).final_miou}
  end
  results.elapsed = C.clock() - start
  local md = semisup.table(results)
  if main then
    C.write_atomic(dir .. "/results.json", cjson.encode(results) .. "\n")
    C.write_atomic(dir .. "/results.md", md .. "\n")
    rundir.release(dir)
    print(md)
  end
  return results
end

-- The results as a markdown table.
function semisup.table(results)
  local rows = {"| model | val mIoU |", "|---|---|"}
  local function row(name, r) if r and r.miou then rows[#rows + 1] = string.format("| %s | %.2f |", name, 100 * r.miou) end end
  row("student, fine labels only", results.fine_only)
  for i, st in ipairs(results.students or {}) do row(string.format("distilled student %d (%s)", i, st.name), st) end
  row("students' ensemble", results.ensemble)
  row("student, all fine labels", results.all_labels)
  row("teacher (after the last cycle)", results.teacher)
  return table.concat(rows, "\n")
end

return semisup
