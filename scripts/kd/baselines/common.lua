-- common: what the semi-supervised baselines share: their settings, a
-- labeled and an unlabeled stream drawn together, SGD with the poly
-- schedule, and the one loop (kd.train.Loop) that trains their term lists.
local Loop = require("kd.train.loop")
local optimizers = require("kd.train.optimizers")
local pseudo_probe = require("kd.train.pseudo_probe")

local common = {}

common.defaults = {
  name = "baseline", runs_dir = "runs", seed = 1, model = "bench_student", iterations = 2000, lr = optimizers.defaults.lr,
  batch_size = 8, workers = 2, cache_mb = 256, crop = {128, 256}, scale = {0.5, 2.0},
  weight = 1.0, rampup = 0,      -- the unsupervised term's weight and its sigmoid ramp-up length
  on = "both",                   -- Mean Teacher, CPS: the consistency on "unlabeled" images or on "both" streams
  ema_decay = 0.99,              -- Mean Teacher
  perturb = true,                -- Mean Teacher: the student sees colour-perturbed images (common.colours), the teacher not
  threshold = 0.95,              -- UniMatch: confidence of the weak view's pseudo-labels
  unconfident = "zero",          -- UniMatch: unconfident pixels count as zeros in the mean ("ignore": left out)
  strong = "photometric",        -- UniMatch: the strong views' colours, common.colours ("affine": x a + b)
  checkpoint_every = 0, quiet = false,
}

-- Each method's own defaults over common.defaults: its reference code's
-- settings for Cityscapes (experiments/baselines/REFERENCES.md says what
-- matches the reference and what does not). Mean Teacher's segmentation
-- reference weighs its consistency 100, CPS's 6; UniMatch's Cityscapes
-- configuration keeps every pseudo-label (threshold 0).
common.method_defaults = {
  mean_teacher = {weight = 100},
  cps = {weight = 6},
  unimatch = {weight = 1, threshold = 0},
}

-- UniMatch's strong colours (its transform: ColorJitter(0.5, 0.5, 0.5, 0.25)
-- with p 0.8, grayscale p 0.2, Gaussian blur sigma 0.1-2 with p 0.5), as
-- kd.data.photometric's options; Mean Teacher's student perturbation too.
common.colours = {brightness = 0.5, contrast = 0.5, saturation = 0.5, hue = 0.25, jitter_p = 0.8, grayscale_p = 0.2,
                  blur_p = 0.5, blur_sigma = {0.1, 2.0}}

-- The settings that are each method's own (a sweep tunes them; the scripts
-- take them as <method>.<key>=), and their defaults.
common.own_keys = {mean_teacher = {"weight", "rampup", "on", "ema_decay", "perturb"}, cps = {"weight", "rampup", "on"},
                   unimatch = {"weight", "rampup", "threshold", "unconfident", "strong"}}
function common.own_settings(method)
  local all, out = common.settings(method), {}
  for _, key in ipairs(common.own_keys[method]) do out[key] = all[key] end
  return out
end

-- A method's settings: common.defaults <- its own defaults <- the given ones.
function common.settings(method, given)
  local defaults = kd.config.merge(common.defaults, common.method_defaults[method] or {}, method)
  return kd.config.merge(defaults, given or {}, method)
end

-- The settings merged, the seed set, and the pieces a baseline composes:
-- env.model() (a new student), env.ramp (the unsupervised weight's schedule),
-- env.run{models, terms, evaluate, ensembles, probe} -> {miou, table}. With
-- options.probe = {dataset, every} (images with their true labels), the
-- pseudo-labels of spec.probe's sources ({name, model, threshold}) are
-- measured as it trains (kd.train.pseudo_probe).
function common.setup(options, method)
  local cfg = common.settings(method, options.settings)
  if cfg.on ~= "both" and cfg.on ~= "unlabeled" then error(method .. ": on must be 'both' or 'unlabeled', got " .. tostring(cfg.on), 0) end
  local aug = {crop = cfg.crop, scale = cfg.scale, hflip = true}
  kd.manual_seed(cfg.seed)
  local env = {cfg = cfg, classes = options.classes}
  env.ramp = cfg.rampup > 0 and kd.distill.schedules.sigmoid_rampup(cfg.weight, cfg.rampup) or cfg.weight
  env.arch = {name = cfg.model, options = {classes = options.classes.count}}
  function env.model() return kd.models.create(cfg.model, {classes = options.classes.count}) end
  -- a learning model's entry: SGD with the poly schedule
  function env.learner(name, model)
    return {name = name, model = model, arch = env.arch, optim = {lr = cfg.lr}} -- the rest: optimizers.defaults
  end
  -- streams: labeled then unlabeled unless `order` says otherwise (the
  -- order batches are drawn in; each has its own seed, so it changes nothing else)
  function env.run(spec)
    local streams = {labeled = {name = "labeled", dataset = options.labeled, seed = cfg.seed},
                     unlabeled = {name = "unlabeled", dataset = options.unlabeled, seed = cfg.seed + 1}}
    local list = {}
    for i, name in ipairs(spec.streams or {"labeled", "unlabeled"}) do
      local s = streams[name]
      s.batch_size, s.workers, s.cache_mb, s.augment = cfg.batch_size, cfg.workers, cfg.cache_mb, aug
      list[i] = s
    end
    local loop = Loop({name = cfg.name, runs_dir = cfg.runs_dir, seed = cfg.seed, iterations = cfg.iterations,
                       log_every = math.max(1, math.floor(cfg.iterations / 10)), checkpoint_every = cfg.checkpoint_every,
                       quiet = cfg.quiet, classes = options.classes, config = cfg, models = spec.models, streams = list,
                       terms = spec.terms,
                       eval = {dataset = options.val, workers = cfg.workers, models = spec.evaluate, ensembles = spec.ensembles,
                               primary = spec.result}},
                      {resume = options.resume, may_change = {"cache_mb"}})
    if options.probe and spec.probe then
      pseudo_probe.attach(loop, {dataset = options.probe.dataset, every = options.probe.every, sources = spec.probe,
                                 workers = cfg.workers})
    end
    local r = loop:run()
    local last = r.last[spec.result]
    return {miou = last.scores.miou, table = last.confusion:table(), results = r}
  end
  return env
end

return common
