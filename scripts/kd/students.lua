-- students: several students trained together. Each student's loss is a
-- weighted sum of
--   ce        cross-entropy on the fine labels
--   pseudo    confidence-weighted cross-entropy on the pseudo-labels
--   pixel_kd  KL to the teacher's softened distribution (T^2-scaled)
--   pairwise  structured distillation from the teacher's features
--   mutual    KL to each peer's (detached) prediction, averaged over peers
--   strong    a CutMix strong view of the pseudo batch, supervised by the
--             mixed pseudo-labels of the weak view
-- Every weight is a number or a schedule (kd.distill.schedules); a weight of
-- 0 skips its term. Every term of every student is logged.
local cjson = require("cjson")
local C = require("kd._C")
local distill = require("kd.distill")
local evaluate = require("kd.train.evaluate")
local checkpoint = require("kd.train.checkpoint")
local runlog = require("kd.train.runlog")

local students = {}

local defaults = {
  name = "students", runs_dir = "runs", seed = 0, models = {{name = "bench_student"}},
  batch_size = 8, workers = 2, iterations = 1000, log_every = 20, eval_every = 0,
  optim = {lr = 0.01, momentum = 0.9, weight_decay = 1e-4}, schedule_power = 0.9,
  weights = {ce = 1, pseudo = 1, pixel_kd = 0, pairwise = 0, mutual = 0, strong = 0},
  temperature = 2, grid = {4, 8}, strong = {p = 0.5},
  kd_respect_labels = false, -- pixel_kd leaves out pixels where the teacher contradicts their (pseudo-)label
  -- the pseudo term's class weights (kd.distill.class_balance): power 0 is
  -- off, 0.5 weighs a class by the inverse square root of its pixel count
  pseudo_balance = 0, pseudo_balance_cap = 10,
  -- the same for pixel_kd: each pixel weighs the teacher's class's weight
  -- (counted over the pseudo-labels, capped alike, so without pseudo-labels
  -- it is off); 0 is off
  kd_balance = 0,
  augment = {crop = {128, 256}, scale = {0.5, 2.0}, hflip = true, brightness = 0.25, contrast = 0.25, saturation = 0.25,
             jitter_p = 0.8, mean = {0.485, 0.456, 0.406}, std = {0.229, 0.224, 0.225}},
}
students.defaults = defaults

-- options: the settings above, and labeled (Dataset), pseudo (Dataset or
-- nil), pseudo_weights (weight PNG per pseudo item), val (Dataset), classes,
-- teacher (a model or nil). Returns {students = {{name, miou, ...}}, ensemble}.
function students.train(options)
  local cfg = kd.config.merge(defaults, options.settings or {}, "students")
  local classes = options.classes
  kd.manual_seed(cfg.seed)
  local models, params = {}, {}
  for i, spec in ipairs(cfg.models) do
    local model_options = {classes = classes.count}
    if spec.width then model_options.width = spec.width end
    models[i] = kd.models.create(spec.name, model_options)
    models[i].spec = {name = spec.name, options = model_options}
    for _, p in ipairs(models[i]:parameters()) do params[#params + 1] = p end
  end
  local opt = kd.optim.SGD(params, {lr = cfg.optim.lr, momentum = cfg.optim.momentum, weight_decay = cfg.optim.weight_decay})
  local schedule = kd.optim.schedules.poly({base = cfg.optim.lr, total = cfg.iterations, power = cfg.schedule_power})
  local function loader(ds, seed, weights)
    return kd.data.Loader(ds, {batch_size = cfg.batch_size, workers = cfg.workers, shuffle = true, seed = seed,
                               infinite = true, drop_last = #ds.items >= cfg.batch_size, augment = cfg.augment, weights = weights})
  end
  local labeled = loader(options.labeled, cfg.seed)
  local pseudo = options.pseudo and loader(options.pseudo, cfg.seed + 1, options.pseudo_weights) or nil
  local pseudo_class_weights, kd_class_weights = nil, nil
  if options.pseudo and (cfg.pseudo_balance ~= 0 or cfg.kd_balance ~= 0) then
    local counts = options.pseudo:class_pixels()
    if cfg.pseudo_balance ~= 0 then pseudo_class_weights = distill.class_balance(counts, cfg.pseudo_balance, cfg.pseudo_balance_cap) end
    if cfg.kd_balance ~= 0 then kd_class_weights = distill.class_balance(counts, cfg.kd_balance, cfg.pseudo_balance_cap) end
  end
  local teacher = options.teacher
  if teacher then teacher:eval() end
  local dir = cfg.runs_dir .. "/" .. cfg.name
  local log = runlog.open(dir)
  -- what the pseudo and pixel_kd terms weighed each class by, for the record
  for file, weights in pairs({pseudo_class_weights = pseudo_class_weights, kd_class_weights = kd_class_weights}) do
    local named = {}
    for c, name in ipairs(classes.names) do named[name] = weights:get(c) end
    log:write_json(file .. ".json", named)
  end
  local w = cfg.weights
  local start = C.clock()
  for iter = 1, cfg.iterations do
    opt:set_lr(schedule(iter - 1))
    local lb = labeled:next()
    local pb = pseudo and pseudo:next() or nil
    local need_teacher = teacher and (distill.weight(w.pixel_kd, iter) ~= 0 or distill.weight(w.pairwise, iter) ~= 0)
    local t_lb, tf_lb, t_pb, tf_pb
    if need_teacher then
      kd.no_grad(function()
        t_lb, tf_lb = teacher:forward_features(lb.images)
        if pb then t_pb, tf_pb = teacher:forward_features(pb.images) end
      end)
    end
    local out_lb, out_pb, feat_lb, feat_pb = {}, {}, {}, {}
    for i, m in ipairs(models) do
      out_lb[i], feat_lb[i] = m:forward_features(lb.images)
      if pb then out_pb[i], feat_pb[i] = m:forward_features(pb.images) end
    end
    local strong_images, strong_labels, strong_weights
    if pb and distill.weight(w.strong, iter) ~= 0 then
      local masks = kd.data.box_masks(pb.images, cfg.strong)
      -- each image mixed with the next one of the batch (the last with the first)
      local other_images, other_labels, other_weights = kd.data.roll(pb.images), kd.data.roll(pb.labels), kd.data.roll(pb.weights)
      strong_images, strong_labels = kd.data.cutmix(pb.images, pb.labels, other_images, other_labels, masks)
      strong_weights = pb.weights:clone()
      C.mix_where(strong_weights, other_weights, masks)
    end
    local total, entry_terms = nil, {}
    for i, m in ipairs(models) do
      local terms = {}
      terms.ce = kd.losses.cross_entropy(out_lb[i], lb.labels)
      if pb and distill.weight(w.pseudo, iter) ~= 0 then terms.pseudo = distill.pseudo_ce(out_pb[i], pb.labels, pb.weights, pseudo_class_weights) end
      if need_teacher and distill.weight(w.pixel_kd, iter) ~= 0 then
        local respect = cfg.kd_respect_labels
        terms.pixel_kd = distill.pixel_kd(out_lb[i], t_lb, cfg.temperature, respect and lb.labels or nil, kd_class_weights)
        if pb then
          terms.pixel_kd = terms.pixel_kd +
                           distill.pixel_kd(out_pb[i], t_pb, cfg.temperature, respect and pb.labels or nil, kd_class_weights)
        end
      end
      if need_teacher and distill.weight(w.pairwise, iter) ~= 0 then
        terms.pairwise = distill.pairwise_kd(feat_lb[i].features, tf_lb.features, cfg.grid)
        if pb then terms.pairwise = terms.pairwise + distill.pairwise_kd(feat_pb[i].features, tf_pb.features, cfg.grid) end
      end
      if #models > 1 and distill.weight(w.mutual, iter) ~= 0 then
        terms.mutual = distill.mutual(pb and out_pb or out_lb, i, cfg.temperature)
      end
      if strong_images then terms.strong = distill.pseudo_ce(m(strong_images), strong_labels, strong_weights, pseudo_class_weights) end
      local values = {}
      for name, term in pairs(terms) do
        local weight = distill.weight(w[name], iter)
        values[name] = term:item()
        if weight ~= 0 then
          local weighted = term * weight
          total = total and total + weighted or weighted
        end
      end
      entry_terms[m.spec.name .. "#" .. i] = values
    end
    opt:zero_grad()
    total:backward()
    opt:step()
    if iter % cfg.log_every == 0 or iter == cfg.iterations then
      local loss = total:item()
      log:log({type = "train", iteration = iter, loss = loss, terms = entry_terms, lr = schedule(iter - 1), elapsed = C.clock() - start})
      if not options.quiet then
        local parts = {}
        for name, values in pairs(entry_terms) do
          local t = {}
          for k, v in pairs(values) do t[#t + 1] = string.format("%s %.3f", k, v) end
          table.sort(t)
          parts[#parts + 1] = name .. ": " .. table.concat(t, " ")
        end
        table.sort(parts)
        log:message(string.format("students iter %d/%d  loss %.4f  %s", iter, cfg.iterations, loss, table.concat(parts, " | ")))
      end
    end
  end
  labeled:close()
  if pseudo then pseudo:close() end
  -- each student alone, then together
  local val_loader = function()
    return kd.data.Loader(options.val, {batch_size = 4, workers = cfg.workers, augment = {mean = cfg.augment.mean, std = cfg.augment.std}})
  end
  local results = {students = {}}
  for i, m in ipairs(models) do
    local confusion = evaluate.run(m, val_loader(), classes)
    local s = confusion:scores()
    results.students[i] = {name = m.spec.name, miou = s.miou, pixel_accuracy = s.pixel_accuracy, table = confusion:table()}
    kd.data.files.mkdir_p(dir .. "/checkpoints")
    checkpoint.save_weights(string.format("%s/checkpoints/student%d_%s.safetensors", dir, i, m.spec.name), m,
      {name = m.spec.name, options = m.spec.options, classes = classes.names, label_ids = classes.ids, palette = classes.palette,
       mean = cfg.augment.mean, std = cfg.augment.std})
    log:log({type = "eval", iteration = cfg.iterations, student = i, model = m.spec.name, miou = s.miou})
  end
  if #models > 1 then
    local s = evaluate.ensemble(models, val_loader(), classes):scores()
    results.ensemble = {miou = s.miou, pixel_accuracy = s.pixel_accuracy}
  end
  log:write_json("results.json", {students = results.students, ensemble = results.ensemble})
  log:close()
  results.models = models
  return results
end

return students
