-- Loop: the one training loop. Every training in kdseg runs on it: the
-- supervised trainer, the teacher's retraining, the method's students, each
-- baseline and a researcher's own topology. What varies is data:
--
--   local loop = kd.train.Loop{
--     name = "mine", runs_dir = "runs", seed = 1, iterations = 1000, classes = classes,
--     models = {                                   -- in order: outputs, logs and saves follow it
--       {name = "teacher", model = t, frozen = true},
--       {name = "student", model = s, arch = {name = "bench_student", options = {classes = 19}},
--        optim = {lr = 0.02}, schedule = {name = "poly"}},
--       {name = "mean", model = m, ema = {of = {"student"}, decay = 0.99}},
--     },
--     streams = {{name = "labeled", dataset = ds, batch_size = 8, augment = {crop = {64, 128}}}},
--     terms = {kd.terms.ce{model = "student"}, kd.terms.pixel_kd{model = "student", teacher = "teacher", temperature = 2}},
--     eval = {dataset = val, ensembles = {{name = "both", models = {"student", "mean"}}}},
--   }
--   local results = loop:run()          -- or kd.train.Loop(spec, {resume = true}):run()
--
-- Models: trainable (an optimizer and a schedule, from `optim` and
-- `schedule` settings or an `optimizer` object), frozen, or an exponential
-- moving average of one model or the mean of several (`ema`); frozen and EMA
-- models run without gradient, in evaluation mode unless forward_mode =
-- "train". Streams: named loaders, one batch of each per iteration. Views:
-- named functions of the step making other inputs (a strong view of a
-- stream's batch), made once per step. Terms: {name, model, weight = number
-- or schedule of the iteration (from 1), fn = function(step, term) -> tensor
-- or nil}; the model's loss is the weighted sum of its terms, in the order
-- given, a weight of 0 skips the term. Outputs are made on first request and
-- shared by every term of the step (kd.train.Step).
--
-- The loop logs every term of every model, evaluates every trainable and
-- EMA model (and named ensembles), keeps each one's best and last weights,
-- writes config.json, metrics.jsonl, results.json and report.html, and its
-- state file (every model, optimizer, loader position and the generator)
-- resumes the run exactly after a kill. The run folder is this loop's alone
-- (kd.train.rundir): options {resume = true} continues the run there,
-- {overwrite = true} replaces it, and without either a folder holding an
-- earlier run is refused.
--
-- Data-parallel (started by mpirun or srun, kd.dist): each rank loads its
-- shard of every stream's batch (the global batch and its order are the
-- single process's), gradients are averaged over the ranks in buckets sent
-- while backward runs, the logged losses are the ranks' means, batch norms
-- are per rank (their buffers taken from rank 0 at each step, as PyTorch's
-- DDP does) or synchronised (sync_bn = true), evaluation splits the
-- validation images over the ranks and adds up their confusion matrices,
-- and rank 0 alone writes the run folder. A state resumes with any number
-- of ranks.
local cjson = require("cjson")
local C = require("kd._C")
local class = require("kd.infra.class")
local config = require("kd.infra.config")
local evaluate = require("kd.train.evaluate")
local optimizers = require("kd.train.optimizers")
local rundir = require("kd.train.rundir")
local runlog = require("kd.train.runlog")
local state = require("kd.train.state")
local Step = require("kd.train.step")
local weights = require("kd.train.weights")

local Loop = class("train.Loop")

Loop.defaults = {
  name = "run", runs_dir = "runs", seed = 0, iterations = 1000, threads = 0,
  log_every = 20, eval_every = 0, checkpoint_every = 0, clip_grad = 0,
  grids = 0, -- samples drawn in the prediction grid of each evaluation (the first evaluated model's)
  quiet = false,
  sync_bn = false, -- data-parallel: batch statistics over every rank's shard (else each rank's own)
  bucket_mb = 1,   -- data-parallel: gradients are averaged in buckets of about this size
}

local model_keys = {name = true, model = true, arch = true, optim = true, optimizer = true, schedule = true,
                    frozen = true, ema = true, forward_mode = true, freeze_bn = true, save = true, evaluate = true}
local stream_keys = {name = true, dataset = true, batch_size = true, workers = true, augment = true, weights = true,
                     seed = true, shuffle = true, cache_mb = true}
local eval_keys = {dataset = true, batch_size = true, workers = true, crop = true, stride = true, models = true,
                   ensembles = true, mean = true, std = true, primary = true}

local function check_keys(t, known, what)
  if type(t) ~= "table" then error(what .. " must be a table", 0) end
  for key in pairs(t) do
    if not known[key] then error(string.format("%s: unknown key '%s'", what, tostring(key)), 0) end
  end
end

local function as_list(v) return type(v) == "table" and v or {v} end

-- Settings (defaults <- spec), models, streams and terms, checked.
function Loop:__init(spec, options)
  options = options or {}
  if type(spec) ~= "table" then error("train.Loop: a spec table is required", 2) end
  local settings = {}
  for key in pairs(Loop.defaults) do settings[key] = spec[key] end
  self.cfg = config.merge(Loop.defaults, settings, "train.Loop")
  local c = self.cfg
  if type(c.iterations) ~= "number" or c.iterations < 1 or c.iterations % 1 ~= 0 then
    error("train.Loop: iterations must be a positive integer, got " .. tostring(c.iterations), 0)
  end
  if type(c.sync_bn) ~= "boolean" then
    error("train.Loop: sync_bn must be true or false, got " .. tostring(c.sync_bn), 0) -- (false defaults take any type)
  end
  if c.threads > 0 then kd.set_threads(c.threads) end
  self.rank, self.ranks = kd.dist.rank(), kd.dist.size()
  self.main = self.rank == 0 -- the rank that writes the run folder and prints
  self.dir = rundir.path(c.runs_dir, c.name, "train.Loop")
  self.classes = spec.classes or error("train.Loop: classes (the class table) is required", 0)
  self.hooks = {step = {}, eval = {}}
  self.record = spec.config -- what config.json records (the caller's config), else the loop's settings
  self:add_models(spec.models)
  self:add_streams(spec.streams)
  self.views = {}
  for name, fn in pairs(spec.views or {}) do self.views[name] = fn end
  self:add_terms(spec.terms)
  check_keys(spec.eval or {}, eval_keys, "train.Loop eval")
  self.eval_spec = spec.eval or {}
  self.iteration, self.best = 0, {}
  self.positions = {}
  for _, s in ipairs(self.streams) do self.positions[s.name] = 0 end
  -- resuming a run killed before its first checkpoint: nothing to continue
  -- from, so what it left is replaced and it starts from the beginning
  local state_path = self.dir .. "/checkpoints/state.safetensors"
  local resuming = options.resume and kd.data.files.exists(state_path)
  if options.resume and not resuming and not c.quiet and self.main then
    print(string.format("%s: no checkpoint to resume from yet; starting from the beginning", c.name))
  end
  -- data-parallel: rank 0 holds it, the others read it once it is ready
  rundir.claim(self.dir, {resume = resuming, overwrite = options.overwrite or (options.resume and not resuming)})
  if resuming then
    self:check_same_config(options.may_change or {})
    state.load(state_path, self)
  end
  self.resumed = resuming and self.iteration or nil
  if self.ranks > 1 then self:start_data_parallel() end
  for _, s in ipairs(self.streams) do s.loader = self:open_stream(s) end
  self.log = self.main and runlog.open(self.dir, self.resumed) or runlog.silent()
  self.log:write_json("config.json", self.record or self:describe())
  self:note_engine()
  self.quiet = c.quiet or not self.main
  if self.resumed and not self.quiet then
    print(string.format("%s: resumed from iteration %d of %d", c.name, self.iteration, c.iterations))
  end
end

-- engine.json: how the run began to compute (kd.engine()). A resume under
-- another convolution algorithm or precision (a default changed since, or
-- KDSEG_CONV_ALGORITHM / KDSEG_CONV_PRECISION) goes on, within rounding of
-- the run it continues, and says so, since its bits then differ from an
-- uninterrupted run's. results.json's engine is the one the run ended with.
function Loop:note_engine()
  if not self.main then return end
  local path, now = self.dir .. "/engine.json", kd.engine()
  if not self.resumed then
    self.log:write_json("engine.json", now)
    return
  end
  -- (a run begun before engine.json was kept: how it began is unknown, and
  -- the engine it resumes with is not written as if it were)
  if not kd.data.files.exists(path) then return end
  local ok, began = pcall(config.load, path)
  if not (ok and type(began) == "table") then return end
  for _, key in ipairs({"conv_algorithm", "conv_precision"}) do
    if began[key] ~= nil and began[key] ~= now[key] then
      io.stderr:write(string.format("warning: %s: resumed with %s %s, where it began with %s: the results stay within "
                                    .. "rounding of an uninterrupted run's, not the same bits\n", self.dir, key,
                                    tostring(now[key]), tostring(began[key])))
    end
  end
end

-- Every rank starts from rank 0's weights; the trainable models' gradients
-- are averaged in buckets; batch norms are synchronised with sync_bn, else
-- their buffers are rank 0's at each step.
function Loop:start_data_parallel()
  for _, s in ipairs(self.streams) do
    local per_batch = math.min(s.batch_size, #s.dataset.items)
    if per_batch < self.ranks then
      error(string.format("train.Loop stream %s: a batch of %d images cannot be split over %d ranks; "
                          .. "give a batch_size of at least %d", s.name, per_batch, self.ranks, self.ranks), 0)
    end
    if per_batch % self.ranks ~= 0 and self.main then
      io.stderr:write(string.format("warning: stream %s: batches of %d images over %d ranks make shards of unequal "
                                    .. "size; each rank's loss counts alike\n", s.name, per_batch, self.ranks))
    end
  end
  local params = {}
  self.bn_buffers = {}
  for _, m in ipairs(self.models) do
    kd.dist.broadcast_module(m.model)
    if self.cfg.sync_bn then kd.dist.sync_batch_norm(m.model, true) end
    if m.trainable then
      for _, p in ipairs(m.model:parameters()) do params[#params + 1] = p end
      if not self.cfg.sync_bn then
        for _, pair in ipairs(m.model:named_buffers()) do self.bn_buffers[#self.bn_buffers + 1] = pair[2] end
      end
    end
  end
  self.averager = kd.dist.GradAverager(params, {bucket_mb = self.cfg.bucket_mb})
end

-- A run resumes with the settings it was started with: another model or
-- batch size would make the state file's weights meaningless (or fail to
-- load with a list of missing names). may_change lists the dotted keys a
-- resume may change (threads, logging, a longer run ...).
function Loop:check_same_config(may_change)
  local path = self.dir .. "/config.json"
  if not self.record or not kd.data.files.exists(path) then return end
  local before = config.load(path)
  local now = cjson.decode(cjson.encode(self.record)) -- as JSON gives it back
  local allowed = {}
  for _, key in ipairs(may_change) do allowed[key] = true end
  local differ = {}
  local function walk(a, b, prefix)
    local keys = {}
    for k in pairs(type(a) == "table" and a or {}) do keys[k] = true end
    for k in pairs(type(b) == "table" and b or {}) do keys[k] = true end
    for k in pairs(keys) do
      local key = prefix .. tostring(k)
      local x, y = a[k], b[k]
      if not allowed[key] then
        if type(x) == "table" and type(y) == "table" then walk(x, y, key .. ".")
        elseif x ~= y and not (type(x) == "number" and type(y) == "number" and math.abs(x - y) <= 1e-12 * math.max(1, math.abs(x))) then
          differ[#differ + 1] = string.format("%s: %s (was %s)", key, cjson.encode(y == nil and cjson.null or y),
                                              cjson.encode(x == nil and cjson.null or x))
        end
      end
    end
  end
  walk(before, now, "")
  if #differ > 0 then
    table.sort(differ)
    error(string.format("%s: --resume with other settings than its config.json: %s; resume with the same settings, "
                        .. "or start another run (another name, or --overwrite)", self.dir, table.concat(differ, "; ")), 0)
  end
end

function Loop:add_models(list)
  if type(list) ~= "table" or #list == 0 then error("train.Loop: models must be a non-empty list", 0) end
  self.models, self.by_name = {}, {}
  for i, entry in ipairs(list) do
    check_keys(entry, model_keys, "train.Loop model " .. i)
    local name = entry.name
    if type(name) ~= "string" or not name:match("^[%w_]+$") then
      error(string.format("train.Loop model %d: name must be letters, digits and _, got %s", i, tostring(name)), 0)
    end
    if self.by_name[name] then error("train.Loop: two models are named '" .. name .. "'", 0) end
    if not class.is_instance(entry.model, kd.nn.Module) then error("train.Loop model " .. name .. ": model must be a kd.nn.Module", 0) end
    local m = {name = name, model = entry.model, arch = entry.arch, frozen = entry.frozen or false, ema = entry.ema,
               forward_mode = entry.forward_mode or "eval", freeze_bn = entry.freeze_bn or false}
    m.trainable = not m.frozen and not m.ema
    if m.ema then
      local e = m.ema
      check_keys(e, {of = true, decay = true, warmup = true, average_buffers = true}, "train.Loop model " .. name .. " ema")
      m.ema_sources = as_list(e.of)
      m.ema_decay = e.decay or 0.999
      m.ema_warmup = e.warmup or false
    end
    if m.trainable then
      m.optimizer = entry.optimizer or optimizers.build(m.model:parameters(), entry.optim)
      m.optim_settings = entry.optim
      local base = entry.optimizer and entry.optimizer.param_groups[1].lr or
                   kd.config.merge(optimizers.defaults, entry.optim or {}, "optim").lr
      m.schedule = optimizers.schedule(entry.schedule, base, self.cfg.iterations)
      m.schedule_settings = type(entry.schedule) == "table" and entry.schedule or nil
    end
    m.save = entry.save
    if m.save == nil then m.save = not m.frozen end
    m.evaluate = entry.evaluate
    if m.evaluate == nil then m.evaluate = not m.frozen end
    self.models[i], self.by_name[name] = m, m
  end
  for _, m in ipairs(self.models) do
    for _, source in ipairs(m.ema_sources or {}) do
      if not self.by_name[source] then error("train.Loop model " .. m.name .. ": ema of unknown model '" .. source .. "'", 0) end
    end
  end
  -- an EMA starts as (the mean of) its sources, unless resumed from a state
  for _, m in ipairs(self.models) do if m.ema then self:update_ema(m, 0) end end
end

function Loop:add_streams(list)
  self.streams, self.stream_by_name = {}, {}
  for i, s in ipairs(list or {}) do
    check_keys(s, stream_keys, "train.Loop stream " .. i)
    if type(s.name) ~= "string" then error("train.Loop stream " .. i .. ": name is required", 0) end
    if self.stream_by_name[s.name] then error("train.Loop: two streams are named '" .. s.name .. "'", 0) end
    if type(s.dataset) ~= "table" or type(s.dataset.items) ~= "table" then
      error("train.Loop stream " .. s.name .. ": dataset must be a kd.data.Dataset", 0)
    end
    if #s.dataset.items == 0 then error("train.Loop stream " .. s.name .. ": the dataset has no images", 0) end
    local stream = {name = s.name, dataset = s.dataset, batch_size = s.batch_size or 8, workers = s.workers or 2,
                    augment = s.augment or {}, weights = s.weights, seed = s.seed or (self.cfg.seed + i - 1),
                    shuffle = s.shuffle ~= false, cache_mb = s.cache_mb}
    self.streams[i], self.stream_by_name[s.name] = stream, stream
  end
end

function Loop:add_terms(list)
  if type(list) ~= "table" or #list == 0 then error("train.Loop: terms must be a non-empty list", 0) end
  self.terms = {}
  for i, t in ipairs(list) do
    local where = "train.Loop term " .. i .. (type(t) == "table" and t.name and (" (" .. tostring(t.name) .. ")") or "")
    if type(t) ~= "table" then error(where .. " must be a table", 0) end
    if type(t.name) ~= "string" then error(where .. ": name is required", 0) end
    if type(t.fn) ~= "function" then error(where .. ": fn must be a function(step, term)", 0) end
    if not self.by_name[t.model] then error(where .. ": model '" .. tostring(t.model) .. "' is not one of the loop's", 0) end
    if not self.by_name[t.model].trainable then error(where .. ": model '" .. t.model .. "' does not learn (frozen or EMA)", 0) end
    local w = t.weight == nil and 1 or t.weight
    if type(w) ~= "number" and type(w) ~= "function" and type(w) ~= "table" then
      error(where .. ": weight must be a number or a schedule", 0)
    end
    for name, fn in pairs(t.views or {}) do self.views[name] = self.views[name] or fn end
    local term = setmetatable({weight = w}, {__index = t})
    self.terms[i] = term
  end
  self:check_labels()
  -- the label of a term in logs: "ce" with one learning model, "student.ce" with several
  local learners = 0
  for _, m in ipairs(self.models) do if m.trainable then learners = learners + 1 end end
  for _, t in ipairs(self.terms) do t.label = learners > 1 and (t.model .. "." .. t.name) or t.name end
end

-- A term that learns from a stream's labels (labels_from) must have some:
-- a split naming images without label files would train on nothing with a
-- loss of exactly 0. Some images without labels is allowed, and said.
function Loop:check_labels()
  local said = {}
  for _, t in ipairs(self.terms) do
    local s = t.labels_from and self.stream_by_name[t.labels_from]
    if t.labels_from and not s then
      error(string.format("train.Loop term %s: stream '%s' is not one of the loop's", t.name, tostring(t.labels_from)), 0)
    end
    if s and not said[s.name] then
      said[s.name] = true
      local missing = 0
      for _, item in ipairs(s.dataset.items) do if not item.label then missing = missing + 1 end end
      local from = s.dataset.source and (" (" .. s.dataset.source .. ")") or ""
      if missing == #s.dataset.items then
        error(string.format("train.Loop term %s: none of the %d images of stream '%s'%s has a label file; "
                            .. "it would learn nothing", t.name, missing, s.name, from), 0)
      elseif missing > 0 and kd.dist.is_main() then
        io.stderr:write(string.format("warning: %d of %d images of stream '%s'%s have no label file; term %s "
                                      .. "learns nothing from them\n", missing, #s.dataset.items, s.name, from, t.name))
      end
    end
  end
end

-- The loader of a stream, positioned where the run is.
function Loop:open_stream(s)
  return kd.data.Loader(s.dataset, {batch_size = s.batch_size, workers = s.workers, shuffle = s.shuffle, seed = s.seed,
                                    cache_mb = s.cache_mb,
                                    infinite = true, drop_last = #s.dataset.items >= s.batch_size, augment = s.augment,
                                    weights = s.weights, start_batch = self.positions[s.name],
                                    shard = self.ranks > 1 and {self.rank + 1, self.ranks} or nil})
end

-- What config.json holds when the caller gives no config of its own.
function Loop:describe()
  local d = {name = self.cfg.name, settings = self.cfg, models = {}, streams = {}, terms = {}}
  for i, m in ipairs(self.models) do
    d.models[i] = {name = m.name, arch = m.arch, frozen = m.frozen or nil, ema = m.ema and {of = m.ema_sources, decay = m.ema_decay} or nil,
                   optim = m.optim_settings, schedule = m.schedule_settings}
  end
  for i, s in ipairs(self.streams) do d.streams[i] = {name = s.name, images = #s.dataset.items, batch_size = s.batch_size, seed = s.seed} end
  for i, t in ipairs(self.terms) do
    d.terms[i] = {name = t.name, model = t.model, weight = type(t.weight) == "function" and "schedule" or t.weight}
  end
  return d
end

function Loop:on(event, fn)
  if not self.hooks[event] then error("Loop:on: unknown event '" .. tostring(event) .. "' (step, eval)", 2) end
  table.insert(self.hooks[event], fn)
  return self
end

local function fire(self, event, info)
  for _, fn in ipairs(self.hooks[event]) do fn(self, info) end
end

-- Trainable models train (their batch norms kept in evaluation mode with
-- freeze_bn); the others run in their forward_mode.
function Loop:set_modes()
  for _, m in ipairs(self.models) do
    if m.trainable then
      m.model:train()
      if m.freeze_bn then
        local function walk(x)
          if class.is_instance(x, kd.nn.BatchNorm2d) then x:eval() end
          for _, child in ipairs(x:children()) do walk(child) end
        end
        walk(m.model)
      end
    else
      m.model:train(m.forward_mode == "train")
    end
  end
end

-- target = the mean of its sources' weights blended in with the decay (the
-- decay is min(decay, 1 - 1 / (iteration + 1)) with warmup; 0 copies).
function Loop:update_ema(m, iteration)
  local decay = iteration == 0 and 0 or m.ema_decay
  if iteration > 0 and m.ema_warmup then decay = math.min(decay, 1 - 1 / (iteration + 1)) end
  local sources = m.ema_sources
  if #sources == 1 then
    m.ema_updater = m.ema_updater or kd.optim.EMA(m.model, self.by_name[sources[1]].model,
                                                  {decay = m.ema_decay, average_buffers = m.ema.average_buffers})
    m.ema_updater:update(decay)
    return
  end
  -- the mean of several models of one design, parameter by parameter
  local target = m.model:state_dict()
  local states = {}
  for k, name in ipairs(sources) do states[k] = self.by_name[name].model:state_dict() end
  for key, t in pairs(target) do
    if t.dtype == "float32" then
      local mean = states[1][key]:clone()
      for k = 2, #states do mean:axpby_(1, states[k][key], 1) end
      t:axpby_(decay, mean, (1 - decay) / #states)
    else
      t:copy_(states[1][key])
    end
  end
end

-- The weighted sum of the step's terms (nil if none gave one), and their values by label.
function Loop:add_terms_up(step, iteration)
  local total, values = nil, {}
  for _, term in ipairs(self.terms) do
    local w = weights.at(term.weight, iteration)
    if w ~= 0 then
      local value = term.fn(step, term)
      if value ~= nil then
        if not kd.is_tensor(value) or value:numel() ~= 1 then
          error(string.format("term %s of %s: fn must return a one-element tensor or nil", term.name, term.model), 0)
        end
        values[term.label] = value:item()
        local weighted = w == 1 and value or value * w
        total = total and total + weighted or weighted
      end
    end
  end
  return total, values
end

-- One iteration; returns the total loss, the terms' values by label, and the
-- learning rate of the first trainable model.
function Loop:step()
  self:set_modes()
  for _, b in ipairs(self.bn_buffers or {}) do kd.dist.broadcast(b, 0) end
  local batches = {}
  for _, s in ipairs(self.streams) do
    batches[s.name] = s.loader:next()
    self.positions[s.name] = self.positions[s.name] + 1
  end
  local lr
  for _, m in ipairs(self.models) do
    if m.trainable then
      local rate = m.schedule(self.iteration)
      m.optimizer:set_lr(rate)
      lr = lr or rate
    end
  end
  local iteration = self.iteration + 1
  if self.ranks > 1 then
    -- what a step draws (dropout, CutMix boxes, jitter) differs between the
    -- ranks' shards, and a resumed run draws it again the same: a generator
    -- seeded by (seed, iteration, rank), exact in a double
    C.manual_seed(((self.cfg.seed % 4096) * 2 ^ 20 + iteration % 2 ^ 20) * 4096 + self.rank % 4096)
  end
  local step = Step(self, batches, iteration)
  local total, values
  if self.ranks > 1 then
    -- cross-entropy means over the global batch's pixels (kd_set_loss_mean_reducer)
    C.dist_global_means(true)
    local ok, sum, by_label = pcall(self.add_terms_up, self, step, iteration)
    C.dist_global_means(false)
    if not ok then error(sum, 0) end
    total, values = sum, by_label
  else
    total, values = self:add_terms_up(step, iteration)
  end
  if not total then error(string.format("iteration %d: no term gave a loss (every weight 0?)", iteration), 0) end
  local loss = total:item()
  local images = 0
  for _, b in pairs(batches) do images = images + b.images:size(1) end
  if self.ranks > 1 then loss, images = self:mean_over_ranks(loss, values, images) end
  if loss ~= loss or math.abs(loss) == math.huge then
    error(string.format("training diverged: loss is %s at iteration %d", tostring(loss), iteration), 0)
  end
  for _, m in ipairs(self.models) do if m.trainable then m.optimizer:zero_grad() end end
  if self.averager then
    self.communication = (self.communication or 0) + self.averager:backward(total)
  else
    total:backward()
  end
  if self.cfg.clip_grad > 0 then self:clip_gradients(self.cfg.clip_grad) end
  for _, m in ipairs(self.models) do if m.trainable then m.optimizer:step() end end
  for _, m in ipairs(self.models) do if m.ema then self:update_ema(m, iteration) end end
  self.iteration = iteration
  fire(self, "step", {step = step, loss = loss, terms = values})
  return loss, values, lr, images
end

-- The loss and the terms' values (in place) as means over the ranks (a term
-- only some ranks gave is the mean of theirs), and the images of all shards.
function Loop:mean_over_ranks(loss, values, images)
  local numbers = {loss, images}
  for i, t in ipairs(self.terms) do
    numbers[2 * i + 1], numbers[2 * i + 2] = values[t.label] or 0, values[t.label] and 1 or 0
  end
  local sums = kd.dist.all_reduce_numbers(numbers)
  for i, t in ipairs(self.terms) do values[t.label] = sums[2 * i + 2] > 0 and sums[2 * i + 1] / sums[2 * i + 2] or nil end
  return sums[1] / self.ranks, sums[2]
end

-- Scales all trainable gradients so that their global L2 norm is at most max_norm.
function Loop:clip_gradients(max_norm)
  local params = {}
  for _, m in ipairs(self.models) do
    if m.trainable then for _, p in ipairs(m.model:parameters()) do params[#params + 1] = p end end
  end
  local sq = 0
  for _, p in ipairs(params) do if p.grad then sq = sq + p.grad:sum_squares() end end
  local norm = math.sqrt(sq)
  if norm > max_norm then
    local scale = max_norm / (norm + 1e-6)
    for _, p in ipairs(params) do if p.grad then p.grad:axpby_(scale, p.grad, 0) end end
  end
  return norm
end

-- The models evaluated, in order, and the ensembles: {{name, models = {model objects}}}.
function Loop:evaluated()
  local list = {}
  if self.eval_spec.models then
    for _, name in ipairs(self.eval_spec.models) do
      list[#list + 1] = self.by_name[name] or error("train.Loop eval: unknown model '" .. tostring(name) .. "'", 0)
    end
  else
    for _, m in ipairs(self.models) do if m.evaluate then list[#list + 1] = m end end
  end
  local ensembles = {}
  for i, e in ipairs(self.eval_spec.ensembles or {}) do
    local members = {}
    for k, name in ipairs(e.models or {}) do
      members[k] = (self.by_name[name] or error("train.Loop ensemble " .. tostring(e.name) .. ": unknown model '" .. tostring(name) .. "'", 0)).model
    end
    ensembles[i] = {name = e.name or ("ensemble" .. i), members = members, member_names = e.models}
  end
  return list, ensembles
end

function Loop:normalization()
  local e = self.eval_spec
  local first = self.streams[1] and self.streams[1].augment or {}
  local n = require("kd.data.normalize")
  return e.mean or first.mean or n.mean, e.std or first.std or n.std
end

-- Every evaluated model and ensemble on the validation set: logged, best
-- weights kept. Returns {name = {scores, confusion}}. With again = true
-- (a run resumed after its last iteration, whose final evaluation is logged
-- already) the scores are computed for the results and nothing is recorded.
function Loop:evaluate(again)
  local e = self.eval_spec
  if not e.dataset then return {} end
  local mean, std = self:normalization()
  -- data-parallel: each rank evaluates its share of the images; the
  -- confusion matrices are added up (a rank with no image adds zeros)
  local dataset = kd.dist.shard_dataset(e.dataset)
  local function loader()
    if #dataset.items == 0 then return {epoch = function() return function() end end, close = function() end} end
    return kd.data.Loader(dataset, {batch_size = e.batch_size or 4, workers = e.workers or 2, augment = {mean = mean, std = std}})
  end
  local list, ensembles = self:evaluated()
  local out = {}
  local function record(name, confusion, scores)
    out[name] = {scores = scores, confusion = confusion}
    local entry = {type = "eval", iteration = self.iteration, miou = scores.miou, pixel_accuracy = scores.pixel_accuracy,
                   iou = confusion:named_iou(scores, cjson.null)}
    if #list + #ensembles > 1 then entry.model = name end
    if again then return end
    self.log:log(entry)
    if not self.quiet then
      self.log:message(string.format("iter %d: %sval mIoU %.2f, pixel accuracy %.2f", self.iteration,
                                     #list + #ensembles > 1 and (name .. " ") or "", 100 * scores.miou, 100 * scores.pixel_accuracy))
    end
  end
  for k, m in ipairs(list) do
    local l = loader()
    local confusion, kept = evaluate.run(m.model, l, self.classes, {crop = e.crop or nil, stride = e.stride or nil,
                                                                    keep = (k == 1 and not again and self.main) and self.cfg.grids or 0})
    l:close()
    kd.dist.all_reduce(confusion.matrix)
    if #kept > 0 then self:save_grid(kept, mean, std) end
    local scores = confusion:scores()
    record(m.name, confusion, scores)
    local best = self.best[m.name]
    if m.save and not again and (not best or scores.miou > best.miou) then
      self.best[m.name] = {miou = scores.miou, iteration = self.iteration}
      self:save_weights(m, "best")
    end
  end
  for _, ens in ipairs(ensembles) do
    local l = loader()
    local confusion = evaluate.ensemble(ens.members, l, self.classes)
    l:close()
    kd.dist.all_reduce(confusion.matrix)
    local scores = confusion:scores()
    record(ens.name, confusion, scores)
    local best = self.best[ens.name]
    if not again and (not best or scores.miou > best.miou) then self.best[ens.name] = {miou = scores.miou, iteration = self.iteration} end
  end
  if not again then fire(self, "eval", {results = out}) end
  return out
end

function Loop:save_grid(kept, mean, std)
  local images, truths, predictions = {}, {}, {}
  for i, k in ipairs(kept) do
    images[i] = kd.data.pictures.denormalize(k.image, mean, std)[1]
    truths[i], predictions[i] = k.truth, k.prediction
  end
  kd.data.files.mkdir_p(self.dir .. "/grids")
  kd.data.pictures.save(string.format("%s/grids/iter_%07d.png", self.dir, self.iteration),
                        kd.data.pictures.samples_grid(images, truths, predictions, self.classes))
end

-- How many models the loop saves; with one, its files are checkpoints/best
-- and last.safetensors, with several checkpoints/<model>/best and last.
function Loop:saved_models()
  local list = {}
  for _, m in ipairs(self.models) do if m.save then list[#list + 1] = m end end
  return list
end

function Loop:weights_path(m, kind)
  local dir = self.dir .. "/checkpoints"
  if #self:saved_models() > 1 then dir = dir .. "/" .. m.name end
  return dir .. "/" .. kind .. ".safetensors"
end

-- The model config saved with the weights (what kd.train.checkpoint.load_model rebuilds from).
function Loop:model_config(m)
  local mean, std = self:normalization()
  local arch = m.arch or {name = m.model.__name, options = {}}
  local categories = nil
  if self.classes.category_of then
    categories = {}
    for i = 1, self.classes.count do categories[i] = self.classes.categories[self.classes.category_of[i]] end
  end
  return {name = arch.name, options = arch.options, classes = self.classes.names, label_ids = self.classes.ids,
          palette = self.classes.palette, categories = categories, mean = mean, std = std}
end

function Loop:save_weights(m, kind)
  if not self.main then return end
  local path = self:weights_path(m, kind)
  kd.data.files.mkdir_p(path:match("^(.*)/[^/]+$"))
  require("kd.train.checkpoint").save_weights(path, m.model, self:model_config(m), {iteration = self.iteration})
end

function Loop:checkpoint()
  if not self.main then return end
  for _, m in ipairs(self:saved_models()) do self:save_weights(m, "last") end
  state.save(self.dir .. "/checkpoints/state.safetensors", self)
end

function Loop:close()
  for _, s in ipairs(self.streams) do if s.loader then s.loader:close() end end
  if self.ranks > 1 and self.cfg.sync_bn then
    for _, m in ipairs(self.models) do kd.dist.sync_batch_norm(m.model, false) end
  end
end

-- Trains to the end; returns (and writes to results.json) per model and
-- ensemble the final and best mIoU. The figures of eval.primary (by default
-- the one evaluated model, if there is one) are also at the top level
-- (final_miou, best_miou, best_iteration, iou).
function Loop:run()
  local c = self.cfg
  local total = c.iterations
  local start_time, window_start, window_images, window_steps = C.clock(), C.clock(), 0, 0
  local first = self.iteration
  local last = nil
  while self.iteration < total do
    local loss, values, lr, images = self:step()
    window_images, window_steps = window_images + images, window_steps + 1
    local it = self.iteration
    if it % c.log_every == 0 or it == total then
      local now = C.clock()
      local rate = window_images / math.max(now - window_start, 1e-9)
      self.log:log({type = "train", iteration = it, loss = loss, terms = values, lr = lr, images_per_second = rate,
                    elapsed = now - start_time, ranks = self.ranks > 1 and self.ranks or nil,
                    communication = self.communication and self.communication / window_steps or nil})
      self.communication, window_steps = self.averager and 0 or nil, 0
      if not self.quiet then
        local names = {}
        for _, t in ipairs(self.terms) do if values[t.label] then names[#names + 1] = t.label end end
        local per_iteration = (now - start_time) / math.max(it - first, 1)
        self.log:progress({iteration = it, total = total, loss = loss, terms = values, term_names = names, lr = lr or 0,
                           images_per_second = rate, left = per_iteration * (total - it), print_line = true})
      end
      window_start, window_images = now, 0
    end
    if (c.eval_every > 0 and it % c.eval_every == 0) or it == total then last = self:evaluate() end
    if (c.checkpoint_every > 0 and it % c.checkpoint_every == 0) or it == total then self:checkpoint() end
  end
  self:close()
  if not last then last = self:evaluate(true) end -- resumed after the last iteration: logged already
  local results = {name = c.name, iterations = total, elapsed = C.clock() - start_time, models = {}}
  local list, ensembles = self:evaluated()
  local function entry(name, m)
    local r = last[name]
    if not r then return nil end
    local best = self.best[name] or {}
    local category_iou, category_miou = r.confusion:named_category_iou(self.classes, cjson.null)
    return {final_miou = r.scores.miou, pixel_accuracy = r.scores.pixel_accuracy, best_miou = best.miou,
            best_iteration = best.iteration, iou = r.confusion:named_iou(r.scores, cjson.null),
            category_iou = category_iou, category_miou = category_miou,
            parameters = m and m.model:num_parameters() or nil, model = m and m.arch and m.arch.name or nil}
  end
  -- where each model's last weights are (relative to the run folder) and
  -- which models make each ensemble: kd.train.evaluate.run_folder scores
  -- them again on another split
  for _, m in ipairs(list) do
    results.models[m.name] = entry(m.name, m)
    if results.models[m.name] and m.save then
      results.models[m.name].weights = self:weights_path(m, "last"):sub(#self.dir + 2)
    end
  end
  for _, e in ipairs(ensembles) do
    results.models[e.name] = entry(e.name)
    if results.models[e.name] then results.models[e.name].members = e.member_names end
  end
  results.classes = self.classes.names
  results.engine = require("kd").engine() -- the bits depend on it: threads, conv precision and algorithm
  local primary = self.eval_spec.primary or (#list == 1 and #ensembles == 0 and list[1].name)
  if primary then
    if not results.models[primary] then error("train.Loop eval: primary '" .. tostring(primary) .. "' was not evaluated", 0) end
    results.primary = primary
    for k, v in pairs(results.models[primary]) do results[k] = v end
  end
  -- results.json last: it marks the run finished (kd.train.stage), so
  -- nothing of the run may be left to write after it
  if self.main then require("kd.train.report").write(self.dir, results) end
  self.log:write_json("results.json", results)
  self.log:close()
  rundir.release(self.dir)
  kd.dist.barrier() -- no rank goes on before rank 0 has written the run's results
  if not self.quiet and #list == 1 and last[list[1].name] then print(last[list[1].name].confusion:table()) end
  results.last = last
  return results
end

return Loop
