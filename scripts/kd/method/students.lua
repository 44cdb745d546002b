-- students: several students trained together, as a term list on the one
-- loop (kd.train.Loop). Each student's loss is a weighted sum of
--   ce        cross-entropy on the fine labels
--   pseudo    confidence-weighted cross-entropy on the pseudo-labels
--   pixel_kd  KL to the teacher's softened distribution (T^2-scaled)
--   pairwise  structured distillation from the teacher's features
--   strong    a CutMix strong view of the pseudo batch, supervised by the
--             mixed pseudo-labels of the weak view
--   mutual    KL to each peer's (detached) prediction, averaged over peers
--   holistic  adversarial: minus a critic's score of its map (kd.method.holistic);
--             the critic learns alongside, from the teacher's maps and theirs
-- Every weight is a number or a schedule (kd.distill.schedules); a weight of
-- 0 skips its term. Every term of every student is logged; each student and
-- their ensemble are evaluated, and the run resumes like any loop.
local distill = require("kd.method.distill")
local config = require("kd.infra.config")
local terms = require("kd.train.terms")
local Loop = require("kd.train.loop")
local optimizers = require("kd.train.optimizers")

local students = {}

-- What a student setting means, and its default; kd.semisup's `students`
-- section is these keys (with the method's own values where it differs).
students.settings = {
  models = {"bench_student"}, -- designs: zoo names, or {name = ..., options..., pretrained = path} (kd.models.build)
  iterations = 1000, lr = optimizers.defaults.lr, momentum = optimizers.defaults.momentum,
  weight_decay = optimizers.defaults.weight_decay, schedule_power = optimizers.schedule_defaults.power,
  weights = {ce = 1, pseudo = 1, pixel_kd = 0, pairwise = 0, mutual = 0, strong = 0, holistic = 0},
  -- holistic distillation's critic: its first layer's width (then 2x, 4x)
  -- and its Adam learning rate (the paper's 4e-4, betas 0.9, 0.99)
  critic_width = 32, critic_lr = 4e-4,
  temperature = 2, grid = {unpack(terms.defaults.pairwise_kd.grid)}, strong_p = terms.defaults.cutmix.p,
  -- pair-wise distillation's nodes: "grid" (averaged over `grid`) or "max"
  -- (the structured-distillation paper's max pooling at `pairwise_scale`)
  pairwise_pooling = terms.defaults.pairwise_kd.pooling, pairwise_scale = terms.defaults.pairwise_kd.scale,
  kd_respect_labels = false, -- pixel_kd leaves out pixels where the teacher contradicts their (pseudo-)label
  -- the pseudo term's class weights (kd.distill.class_balance): power 0 is
  -- off, 0.5 weighs a class by the inverse square root of its pixel count
  pseudo_balance = 0, pseudo_balance_cap = 10,
  -- the same for pixel_kd: each pixel weighs the teacher's class's weight
  -- (counted over the pseudo-labels, capped alike, so without pseudo-labels
  -- it is off); 0 is off
  kd_balance = 0,
}

-- The run around them: where it writes, the seed, the batches.
students.defaults = {name = "students", runs_dir = "runs", seed = 0, batch_size = 8, workers = 2, cache_mb = 256, log_every = 20,
                     eval_every = 0, checkpoint_every = 0, augment = {crop = {128, 256}, scale = {0.5, 2.0}, hflip = true,
                     brightness = 0.25, contrast = 0.25, saturation = 0.25, jitter_p = 0.8},
                     students = students.settings}

-- The term list of N students (names s[i]) learning from the "labeled"
-- stream, the "pseudo" stream if there is one, and the model "teacher".
function students.terms(s, names, has_pseudo, has_teacher, class_weights)
  local w, list = s.weights, {}
  local streams = has_pseudo and {"labeled", "pseudo"} or {"labeled"}
  for _, name in ipairs(names) do
    list[#list + 1] = terms.ce({model = name, weight = w.ce})
    if has_pseudo then
      list[#list + 1] = terms.pseudo_ce({model = name, weight = w.pseudo, class_weights = class_weights.pseudo})
    end
    if has_teacher then
      list[#list + 1] = terms.pixel_kd({model = name, teacher = "teacher", streams = streams, weight = w.pixel_kd,
                                        temperature = s.temperature, respect_labels = s.kd_respect_labels,
                                        class_weights = class_weights.kd})
      list[#list + 1] = terms.pairwise_kd({model = name, teacher = "teacher", streams = streams, weight = w.pairwise, grid = s.grid,
                                           pooling = s.pairwise_pooling, scale = s.pairwise_scale})
    end
    if has_pseudo then
      list[#list + 1] = terms.cutmix({model = name, weight = w.strong, p = s.strong_p, view = "strong",
                                      class_weights = class_weights.pseudo})
    end
  end
  if has_teacher and w.holistic ~= 0 then
    local stream = streams[#streams]
    for _, name in ipairs(names) do
      list[#list + 1] = terms.holistic_kd({model = name, critic = "critic", stream = stream, weight = w.holistic})
    end
    list[#list + 1] = terms.critic({model = "critic", teacher = "teacher", students = names, stream = stream})
  end
  if #names > 1 then -- after every student's own terms: each student sees its batches in one order
    for _, name in ipairs(names) do
      list[#list + 1] = terms.mutual({model = name, peers = names, stream = streams[#streams], weight = w.mutual,
                                      temperature = s.temperature})
    end
  end
  return list
end

-- options: settings (the keys of students.defaults), labeled (Dataset),
-- pseudo (Dataset or nil), pseudo_weights (weight PNG per pseudo item), val
-- (Dataset), classes, teacher (a model or nil), resume, quiet. Returns
-- {students = {{name, miou, pixel_accuracy, table}}, ensemble, models}.
function students.train(options)
  local cfg = config.merge(students.defaults, options.settings or {}, "students")
  local s, classes = cfg.students, options.classes
  kd.manual_seed(cfg.seed)
  local models, names = {}, {}
  if options.teacher then models[1] = {name = "teacher", model = options.teacher, frozen = true} end
  for i, spec in ipairs(s.models) do
    local model, arch = kd.models.build(spec, classes.count)
    names[i] = "student" .. i
    models[#models + 1] = {name = names[i], model = model, arch = arch,
                           optim = {lr = s.lr, momentum = s.momentum, weight_decay = s.weight_decay},
                           schedule = {name = "poly", power = s.schedule_power}}
  end
  if options.teacher and s.weights.holistic ~= 0 then -- the critic: learns, but is neither evaluated nor saved apart
    models[#models + 1] = {name = "critic", model = kd.holistic.Critic(classes.count, {width = s.critic_width}),
                           optim = {name = "adamw", lr = s.critic_lr, betas = {0.9, 0.99}, weight_decay = 0},
                           schedule = {name = "constant"}, save = false, evaluate = false}
  end
  local streams = {{name = "labeled", dataset = options.labeled, batch_size = cfg.batch_size, workers = cfg.workers,
                    cache_mb = cfg.cache_mb, augment = cfg.augment, seed = cfg.seed}}
  if options.pseudo then
    streams[2] = {name = "pseudo", dataset = options.pseudo, batch_size = cfg.batch_size, workers = cfg.workers,
                  cache_mb = cfg.cache_mb, augment = cfg.augment, weights = options.pseudo_weights, seed = cfg.seed + 1}
  end
  local class_weights = {}
  if options.pseudo and (s.pseudo_balance ~= 0 or s.kd_balance ~= 0) then
    local counts = options.pseudo:class_pixels()
    if s.pseudo_balance ~= 0 then class_weights.pseudo = distill.class_balance(counts, s.pseudo_balance, s.pseudo_balance_cap) end
    if s.kd_balance ~= 0 then class_weights.kd = distill.class_balance(counts, s.kd_balance, s.pseudo_balance_cap) end
  end
  local loop = Loop({
    name = cfg.name, runs_dir = cfg.runs_dir, seed = cfg.seed, iterations = s.iterations, quiet = options.quiet,
    log_every = cfg.log_every, eval_every = cfg.eval_every, checkpoint_every = cfg.checkpoint_every,
    classes = classes, config = cfg, models = models, streams = streams,
    terms = students.terms(s, names, options.pseudo ~= nil, options.teacher ~= nil, class_weights),
    eval = {dataset = options.val, workers = cfg.workers, models = names,
            ensembles = #names > 1 and {{name = "ensemble", models = names}} or nil},
  }, {resume = options.resume, may_change = {"cache_mb"}})
  -- what the pseudo and pixel_kd terms weighed each class by, for the record
  for file, weights in pairs({pseudo_class_weights = class_weights.pseudo, kd_class_weights = class_weights.kd}) do
    local named = {}
    for c, name in ipairs(classes.names) do named[name] = weights:get(c) end
    loop.log:write_json(file .. ".json", named)
  end
  local r = loop:run()
  local results = {students = {}, models = {}}
  for i, name in ipairs(names) do
    local last = r.last[name]
    results.students[i] = {name = loop.by_name[name].arch.name, miou = last.scores.miou,
                           pixel_accuracy = last.scores.pixel_accuracy, table = last.confusion:table()}
    results.models[i] = loop.by_name[name].model
  end
  if r.last.ensemble then
    results.ensemble = {miou = r.last.ensemble.scores.miou, pixel_accuracy = r.last.ensemble.scores.pixel_accuracy}
  end
  return results
end

return students
