-- Trainer: supervised training of one model from a config (the keys of
-- kd.train.defaults), on the one loop (kd.train.Loop) with a single term,
-- cross-entropy on the labels (per-pixel weights when the training set has
-- them).
--   local trainer = kd.train.Trainer(config, {resume = false})
--   local results = trainer:run()
-- options: resume, overwrite (replace an earlier run of that name), quiet, and for programs that compose runs (the
-- semi-supervised pipeline): train_set (a Dataset in place of
-- cfg.data.train), train_weights (per item, a weight PNG path or false),
-- model (a model to go on training instead of a new one), terms (more loss
-- terms for the model, named "model" in the loop).
local class = require("kd.infra.class")
local config = require("kd.infra.config")
local terms = require("kd.train.terms")
local Loop = require("kd.train.loop")

local Trainer = class("train.Trainer")

Trainer.defaults = require("kd.train.defaults")

local bounds = {{"seed", 0, "integer"}, {"threads", 0, "integer"}, {"data.batch_size", 1, "integer"},
                {"data.workers", 0, "integer"}, {"data.cache_mb", 0}, {"data.val.limit", 0, "integer"}, {"optim.lr", 0},
                {"optim.momentum", 0}, {"optim.weight_decay", 0}, {"schedule.warmup", 0, "integer"},
                {"train.iterations", 1, "integer"}, {"train.log_every", 1, "integer"},
                {"train.eval_every", 0, "integer"}, {"train.checkpoint_every", 0, "integer"},
                {"train.clip_grad", 0}, {"train.grids", 0, "integer"}, {"train.bucket_mb", 0.001}, {"eval.batch_size", 1, "integer"}}

-- What a resumed run may set otherwise than it started with: how it runs
-- and logs, where its folder is, and its length (a longer run stretches its
-- learning-rate schedule from there on).
Trainer.may_change_on_resume = {"threads", "runs_dir", "data.workers", "data.cache_mb", "train.log_every", "train.eval_every",
                                "train.checkpoint_every", "train.grids", "train.iterations", "eval.batch_size",
                                "train.bucket_mb"}

-- A merged, checked config from a table (defaults <- cfg).
function Trainer.resolve(cfg, where)
  local merged = config.merge(Trainer.defaults, cfg, where or "config")
  config.check_bounds(merged, bounds, where or "config")
  return merged
end

function Trainer:build_datasets()
  local d = self.cfg.data
  local function dataset(part)
    local spec = {root = d.root, classes = self.classes}
    if part.list then -- relative to the dataset root, as split files are: only root changes between datasets
      spec.list = part.list:sub(1, 1) == "/" and part.list or (d.root .. "/" .. part.list)
    else
      spec.split, spec.labels = part.split, part.labels
    end
    return kd.data.Dataset(spec)
  end
  self.train_set = dataset(d.train)
  self.val_set = dataset(d.val)
  if d.val.limit and d.val.limit > 0 then
    local items = {}
    for i = 1, math.min(d.val.limit, #self.val_set.items) do items[i] = self.val_set.items[i] end
    self.val_set.items = items
  end
end

function Trainer:__init(cfg, options)
  options = options or {}
  self.cfg = Trainer.resolve(cfg)
  local c = self.cfg
  require("kd.train.rundir").path(c.runs_dir, c.name, "config") -- a bad name fails before any data is read
  if c.threads and c.threads > 0 then kd.set_threads(c.threads) end
  self.classes = kd.data.classes.get(c.data.classes)
  self:build_datasets()
  if options.train_set then self.train_set = options.train_set end
  kd.manual_seed(c.seed)
  local arch = {name = c.model.name, options = kd.models.build_options(c.model, self.classes.count)}
  self.model = options.model or (kd.models.build(c.model, self.classes.count))
  local term_list = {terms.ce({model = "model", stream = "train", pixel_weights = options.train_weights ~= nil})}
  for _, t in ipairs(options.terms or {}) do term_list[#term_list + 1] = t end
  self.loop = Loop({
    name = c.name, runs_dir = c.runs_dir, seed = c.seed, iterations = c.train.iterations, quiet = options.quiet,
    log_every = c.train.log_every, eval_every = c.train.eval_every, checkpoint_every = c.train.checkpoint_every,
    clip_grad = c.train.clip_grad, grids = c.train.grids, classes = self.classes, config = c,
    sync_bn = c.train.sync_bn, bucket_mb = c.train.bucket_mb,
    models = {{name = "model", model = self.model, arch = arch, optim = c.optim, schedule = c.schedule,
               freeze_bn = c.train.freeze_bn}},
    streams = {{name = "train", dataset = self.train_set, batch_size = c.data.batch_size, workers = c.data.workers,
                cache_mb = c.data.cache_mb, augment = c.data.augment, weights = options.train_weights, seed = c.seed}},
    terms = term_list,
    eval = {dataset = self.val_set, batch_size = c.eval.batch_size, workers = c.data.workers,
            crop = c.eval.crop or nil, stride = c.eval.stride or nil, mean = c.data.augment.mean, std = c.data.augment.std},
  }, {resume = options.resume, overwrite = options.overwrite, may_change = Trainer.may_change_on_resume})
  self.dir = self.loop.dir
  self.train_loader = self.loop.streams[1].loader
end

-- One training iteration (the loop's); returns the loss and the terms.
function Trainer:step() return self.loop:step() end

function Trainer:evaluate() return self.loop:evaluate() end

function Trainer:on(event, fn) self.loop:on(event, fn); return self end

-- Trains to the end; results.json's fields: final_miou, best_miou,
-- best_iteration, iou, model, parameters, classes, elapsed.
function Trainer:run()
  local results = self.loop:run()
  self.iteration = self.loop.iteration
  self.best_miou = results.best_miou
  return results
end

return Trainer
