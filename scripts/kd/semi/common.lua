-- common: what the semi-supervised baselines share - a labeled and an
-- unlabeled loader drawn together, SGD with the poly schedule, evaluation.
local common = {}

common.defaults = {
  name = "baseline", runs_dir = "runs", seed = 1, model = "bench_student", iterations = 2000, lr = 0.01,
  batch_size = 8, workers = 2, crop = {128, 256}, scale = {0.5, 2.0},
  weight = 1.0, rampup = 0,      -- the unsupervised term's weight and its sigmoid ramp-up length
  ema_decay = 0.99,              -- Mean Teacher
  threshold = 0.95,              -- UniMatch: confidence of the weak view's pseudo-labels
  quiet = false,
}

function common.setup(options)
  local cfg = kd.config.merge(common.defaults, options.settings or {}, "baseline")
  local aug = {crop = cfg.crop, scale = cfg.scale, hflip = true}
  local function loader(ds, seed)
    return kd.data.Loader(ds, {batch_size = cfg.batch_size, workers = cfg.workers, shuffle = true, seed = seed,
                               infinite = true, drop_last = #ds.items >= cfg.batch_size, augment = aug})
  end
  kd.manual_seed(cfg.seed)
  local env = {cfg = cfg, classes = options.classes, labeled = loader(options.labeled, cfg.seed),
               unlabeled = loader(options.unlabeled, cfg.seed + 1), val = options.val}
  env.schedule = kd.optim.schedules.poly({base = cfg.lr, total = cfg.iterations})
  env.ramp = cfg.rampup > 0 and kd.distill.schedules.sigmoid_rampup(cfg.weight, cfg.rampup) or function() return cfg.weight end
  function env.model() return kd.models.create(cfg.model, {classes = options.classes.count}) end
  function env.optimizer(params) return kd.optim.SGD(params, {lr = cfg.lr, momentum = 0.9, weight_decay = 1e-4}) end
  function env.log(iter, terms)
    if cfg.quiet or (iter % math.max(1, math.floor(cfg.iterations / 10)) ~= 0) then return end
    local parts = {}
    for k, v in pairs(terms) do parts[#parts + 1] = string.format("%s %.4f", k, v) end
    table.sort(parts)
    print(string.format("%s iter %d/%d  %s", cfg.name, iter, cfg.iterations, table.concat(parts, "  ")))
    io.stdout:flush() -- a log file (not a terminal) sees each line when it is written
  end
  function env.evaluate(model)
    env.labeled:close()
    env.unlabeled:close()
    local cm = kd.train.evaluate.run(model, kd.data.Loader(env.val, {batch_size = 4, workers = cfg.workers}), env.classes)
    return {miou = cm:miou(), table = cm:table()}
  end
  return env
end

return common
