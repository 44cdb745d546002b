-- Trainer: the iteration-based training loop every experiment runs on.
--   local trainer = kd.train.Trainer(config, {resume = false})
--   trainer:on("loss", function(t, step) step.terms.extra = ...; step.weights.extra = 0.5 end)
--   local results = trainer:run()
-- Each iteration: a batch, the learning rate of the schedule, the model's
-- logits (and features), loss terms (cross-entropy on the labels, plus what
-- "loss" hooks add, each with a weight), backward, optional clipping of the
-- gradient norm, an optimizer step. Every log_every iterations a metrics line;
-- every eval_every an evaluation on the validation set (mIoU, per-class IoU,
-- a grid of predictions) and the best weights kept; every checkpoint_every
-- the full state for --resume. Hooks: "loss", "step" (after the update),
-- "eval" (after an evaluation), each called as fn(trainer, info).
local cjson = require("cjson")
local C = require("kd._C")
local class = require("kd.class")
local config = require("kd.config")
local checkpoint = require("kd.train.checkpoint")
local evaluate = require("kd.train.evaluate")
local runlog = require("kd.train.runlog")

local Trainer = class("train.Trainer")

Trainer.defaults = require("kd.train.defaults")

-- A merged, checked config from a table (defaults <- cfg).
function Trainer.resolve(cfg, where)
  return config.merge(Trainer.defaults, cfg, where or "config")
end

local function model_options(cfg, classes)
  local options = {classes = classes.count}
  if cfg.model.width then options.width = cfg.model.width end
  return options
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

function Trainer:build_optimizer()
  local o = self.cfg.optim
  local decay, no_decay = {}, {}
  for _, p in ipairs(self.model:parameters()) do
    if o.no_decay_bn_bias and p.ndim == 1 then no_decay[#no_decay + 1] = p else decay[#decay + 1] = p end
  end
  local groups = {{params = decay}}
  if #no_decay > 0 then groups[2] = {params = no_decay, weight_decay = 0} end
  if #decay == 0 then table.remove(groups, 1) end
  if o.name == "sgd" then
    return kd.optim.SGD(groups, {lr = o.lr, momentum = o.momentum, weight_decay = o.weight_decay, nesterov = o.nesterov})
  elseif o.name == "adamw" then
    return kd.optim.AdamW(groups, {lr = o.lr, betas = o.betas, weight_decay = o.weight_decay})
  end
  error("config: optim.name must be 'sgd' or 'adamw', got " .. tostring(o.name), 0)
end

function Trainer:build_schedule()
  local s, total, base = self.cfg.schedule, self.cfg.train.iterations, self.cfg.optim.lr
  local inner
  if s.name == "poly" then inner = kd.optim.schedules.poly({base = base, total = total, power = s.power})
  elseif s.name == "cosine" then inner = kd.optim.schedules.cosine({base = base, total = total})
  elseif s.name == "constant" then inner = function() return base end
  else error("config: schedule.name must be 'poly', 'cosine' or 'constant', got " .. tostring(s.name), 0) end
  if s.warmup and s.warmup > 0 then return kd.optim.schedules.warmup(inner, {iterations = s.warmup}) end
  return inner
end

-- cfg: a table (merged with the defaults here); options: resume, quiet, and
-- for programs that compose runs (the semi-supervised pipeline): train_set
-- (a Dataset in place of cfg.data.train), train_weights (per item, a weight
-- PNG path or false), model (a model to go on training instead of a new one).
function Trainer:__init(cfg, options)
  options = options or {}
  self.cfg = Trainer.resolve(cfg)
  local c = self.cfg
  if type(c.name) ~= "string" or not c.name:match("^[%w_%-%.]+$") then
    error("config: name must be a plain file name (letters, digits, _ - .), got " .. tostring(c.name), 0)
  end
  if c.threads and c.threads > 0 then kd.set_threads(c.threads) end
  self.dir = c.runs_dir .. "/" .. c.name
  self.hooks = {loss = {}, step = {}, eval = {}}
  self.classes = c.data.classes == "cityscapes" and kd.data.classes.cityscapes() or kd.data.classes.load(c.data.classes)
  self:build_datasets()
  if options.train_set then self.train_set = options.train_set end
  kd.manual_seed(c.seed)
  self.model = options.model or kd.models.create(c.model.name, model_options(c, self.classes))
  self.optimizer = self:build_optimizer()
  self.schedule = self:build_schedule()
  self.iteration, self.best_miou, self.best_iteration = 0, -1, 0
  if options.resume then checkpoint.load_state(self.dir .. "/checkpoints", self) end
  self.log = runlog.open(self.dir, options.resume and self.iteration or nil)
  self.log:write_json("config.json", c)
  self.train_loader = kd.data.Loader(self.train_set, {
    batch_size = c.data.batch_size, workers = c.data.workers, shuffle = true, seed = c.seed, infinite = true,
    drop_last = #self.train_set.items >= c.data.batch_size, augment = c.data.augment, start_batch = self.iteration,
    weights = options.train_weights,
  })
  self.pixel_weights = options.train_weights ~= nil
  self.quiet = options.quiet
  if options.resume and not self.quiet then
    print(string.format("%s: resumed from iteration %d of %d", c.name, self.iteration, c.train.iterations))
  end
end

function Trainer:on(event, fn)
  if not self.hooks[event] then error("Trainer:on: unknown event '" .. tostring(event) .. "' (loss, step, eval)", 2) end
  table.insert(self.hooks[event], fn)
  return self
end

local function fire(self, event, info)
  for _, fn in ipairs(self.hooks[event]) do fn(self, info) end
end

-- The model config saved with the weights.
function Trainer:model_config()
  return {name = self.cfg.model.name, options = model_options(self.cfg, self.classes), classes = self.classes.names,
          label_ids = self.classes.ids, palette = self.classes.palette,
          mean = self.cfg.data.augment.mean, std = self.cfg.data.augment.std}
end

-- Training mode for the whole model (evaluation may have left it in
-- evaluation mode, and a model handed over may come in it), but with
-- train.freeze_bn the batch norms stay in evaluation mode.
function Trainer:training_mode()
  self.model:train()
  if not self.cfg.train.freeze_bn then return end
  local function walk(m)
    if class.is_instance(m, kd.nn.BatchNorm2d) then m:eval() end
    for _, child in ipairs(m:children()) do walk(child) end
  end
  walk(self.model)
end

-- One training iteration; returns the loss terms as numbers.
function Trainer:step()
  self:training_mode()
  local batch = self.train_loader:next()
  local lr = self.schedule(self.iteration)
  self.optimizer:set_lr(lr)
  local logits, features = self.model:forward_features(batch.images)
  local step = {batch = batch, logits = logits, features = features, iteration = self.iteration + 1,
                terms = {ce = kd.losses.cross_entropy(logits, batch.labels,
                                                      {ignore = 255, pixel_weight = self.pixel_weights and batch.weights or nil})},
                weights = {ce = 1}}
  fire(self, "loss", step)
  local loss, values, names = nil, {}, {}
  for name, term in pairs(step.terms) do names[#names + 1] = name end
  table.sort(names)
  for _, name in ipairs(names) do
    local weight = step.weights[name] or 1
    values[name] = step.terms[name]:item()
    if weight ~= 0 then
      local weighted = weight == 1 and step.terms[name] or step.terms[name] * weight
      loss = loss and loss + weighted or weighted
    end
  end
  local total = loss:item()
  if total ~= total or math.abs(total) == math.huge then
    error(string.format("training diverged: loss is %s at iteration %d", tostring(total), self.iteration + 1), 0)
  end
  self.optimizer:zero_grad()
  loss:backward()
  if self.cfg.train.clip_grad and self.cfg.train.clip_grad > 0 then self:clip_gradients(self.cfg.train.clip_grad) end
  self.optimizer:step()
  self.iteration = self.iteration + 1
  fire(self, "step", step)
  return total, values, names, lr, batch.images:size(1)
end

-- Scales all gradients so that their global L2 norm is at most max_norm.
function Trainer:clip_gradients(max_norm)
  local sq = 0
  for _, p in ipairs(self.model:parameters()) do if p.grad then sq = sq + p.grad:sum_squares() end end
  local norm = math.sqrt(sq)
  if norm > max_norm then
    local scale = max_norm / (norm + 1e-6)
    for _, p in ipairs(self.model:parameters()) do if p.grad then p.grad:axpby_(scale, p.grad, 0) end end
  end
  return norm
end

function Trainer:evaluate()
  local c = self.cfg
  local loader = kd.data.Loader(self.val_set, {batch_size = c.eval.batch_size, workers = c.data.workers,
                                               augment = {mean = c.data.augment.mean, std = c.data.augment.std}})
  local confusion, kept = evaluate.run(self.model, loader, self.classes,
                                       {crop = c.eval.crop or nil, stride = c.eval.stride or nil, keep = c.train.grids})
  loader:close()
  local scores = confusion:scores()
  if #kept > 0 then
    local images, truths, predictions = {}, {}, {}
    for i, k in ipairs(kept) do
      images[i] = kd.data.pictures.denormalize(k.image, c.data.augment.mean, c.data.augment.std)[1]
      truths[i], predictions[i] = k.truth, k.prediction
    end
    kd.data.files.mkdir_p(self.dir .. "/grids")
    kd.data.pictures.save(string.format("%s/grids/iter_%07d.png", self.dir, self.iteration),
                          kd.data.pictures.samples_grid(images, truths, predictions, self.classes))
  end
  local entry = {type = "eval", iteration = self.iteration, miou = scores.miou, pixel_accuracy = scores.pixel_accuracy,
                 iou = confusion:named_iou(scores, cjson.null)}
  self.log:log(entry)
  fire(self, "eval", {scores = scores, confusion = confusion})
  return scores, confusion
end

function Trainer:save(kind)
  local dir = self.dir .. "/checkpoints"
  kd.data.files.mkdir_p(dir)
  checkpoint.save_weights(dir .. "/" .. kind .. ".safetensors", self.model, self:model_config(), {iteration = self.iteration})
end

function Trainer:run()
  local c = self.cfg
  local total = c.train.iterations
  local start_time, window_start, window_images = C.clock(), C.clock(), 0
  local first = self.iteration
  while self.iteration < total do
    local loss, values, names, lr, images = self:step()
    window_images = window_images + images
    local it = self.iteration
    if it % c.train.log_every == 0 or it == total then
      local now = C.clock()
      local rate = window_images / math.max(now - window_start, 1e-9)
      self.log:log({type = "train", iteration = it, loss = loss, terms = values, lr = lr, images_per_second = rate,
                    elapsed = now - start_time})
      if not self.quiet then
        local per_iteration = (now - start_time) / math.max(it - first, 1)
        self.log:progress({iteration = it, total = total, loss = loss, terms = values, term_names = names, lr = lr,
                           images_per_second = rate, left = per_iteration * (total - it), print_line = true})
      end
      window_start, window_images = now, 0
    end
    if (c.train.eval_every > 0 and it % c.train.eval_every == 0) or it == total then
      local scores, confusion = self:evaluate()
      self.last_scores, self.last_confusion = scores, confusion
      if not self.quiet then self.log:message(string.format("iter %d: val mIoU %.2f, pixel accuracy %.2f", it, 100 * scores.miou, 100 * scores.pixel_accuracy)) end
      if scores.miou > self.best_miou then
        self.best_miou, self.best_iteration = scores.miou, it
        self:save("best")
      end
    end
    if (c.train.checkpoint_every > 0 and it % c.train.checkpoint_every == 0) or it == total then
      self:save("last")
      checkpoint.save_state(self.dir .. "/checkpoints", self)
    end
  end
  self.train_loader:close()
  local scores, confusion = self.last_scores, self.last_confusion
  if not scores then scores, confusion = self:evaluate() end
  local results = {name = c.name, model = c.model.name, iterations = total, final_miou = scores.miou,
                   pixel_accuracy = scores.pixel_accuracy, best_miou = self.best_miou, best_iteration = self.best_iteration,
                   iou = confusion:named_iou(scores, cjson.null), classes = self.classes.names, elapsed = C.clock() - start_time,
                   parameters = self.model:num_parameters()}
  self.log:write_json("results.json", results)
  self.log:close()
  require("kd.train.report").write(self.dir)
  if not self.quiet then print(confusion:table()) end
  return results
end

return Trainer
