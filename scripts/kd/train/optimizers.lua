-- optimizers: an optimizer and a learning-rate schedule from settings, as
-- configs and the loop's model entries give them.
--   optimizers.build(params, {name = "sgd", lr = 0.01, momentum = 0.9, weight_decay = 1e-4,
--                             nesterov = false, betas = {0.9, 0.999}, no_decay_bn_bias = true})
--   optimizers.schedule({name = "poly", power = 0.9, warmup = 0}, base_lr, total_iterations)
-- A schedule is a function of the iteration counted from 0 (the rate of the
-- first update is schedule(0)).
local optimizers = {}

-- Declared here once: kdseg train's configs, the students and the
-- baselines take their optimizer settings from these.
optimizers.defaults = {name = "sgd", lr = 0.01, momentum = 0.9, weight_decay = 1e-4, nesterov = false,
                       betas = {0.9, 0.999}, no_decay_bn_bias = false}
optimizers.schedule_defaults = {name = "poly", power = 0.9, warmup = 0}

-- An optimizer over params (a list of tensors); no_decay_bn_bias puts the 1-D
-- parameters (batch-norm weights, biases) in a group without weight decay.
function optimizers.build(params, settings)
  local o = kd.config.merge(optimizers.defaults, settings or {}, "optim")
  local decay, no_decay = {}, {}
  for _, p in ipairs(params) do
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

-- The learning rate at each iteration: poly, cosine or constant from base
-- over total iterations, after a linear warmup if warmup > 0. A function is
-- taken as the schedule itself.
function optimizers.schedule(settings, base, total)
  if type(settings) == "function" then return settings end
  local s = kd.config.merge(optimizers.schedule_defaults, settings or {}, "schedule")
  local inner
  if s.name == "poly" then inner = kd.optim.schedules.poly({base = base, total = total, power = s.power})
  elseif s.name == "cosine" then inner = kd.optim.schedules.cosine({base = base, total = total})
  elseif s.name == "constant" then inner = function() return base end
  else error("config: schedule.name must be 'poly', 'cosine' or 'constant', got " .. tostring(s.name), 0) end
  if s.warmup and s.warmup > 0 then return kd.optim.schedules.warmup(inner, {iterations = s.warmup}) end
  return inner
end

return optimizers
