-- Mean Teacher (Tarvainen & Valpola, 2017): a student trained on the labels
-- and to agree (MSE of class distributions) with a teacher that is the
-- exponential moving average of its weights, on unlabeled images; the
-- consistency weight ramps up. The EMA teacher is the model evaluated.
local common = require("kd.semi.common")

return function(options)
  local env = common.setup(options)
  local cfg = env.cfg
  local student, teacher = env.model(), env.model()
  teacher:load_state_dict(student:state_dict())
  local opt = env.optimizer(student:parameters())
  local ema = kd.optim.EMA(teacher, student, {decay = cfg.ema_decay})
  for iter = 1, cfg.iterations do
    opt:set_lr(env.schedule(iter - 1))
    local lb, ub = env.labeled:next(), env.unlabeled:next()
    local target = kd.no_grad(function() teacher:train(); return kd.softmax(teacher(ub.images)) end)
    local ce = kd.losses.cross_entropy(student(lb.images), lb.labels)
    local consistency = kd.losses.mse(kd.softmax(student(ub.images)), target)
    local loss = ce + consistency * env.ramp(iter)
    opt:zero_grad(); loss:backward(); opt:step()
    ema:update(math.min(cfg.ema_decay, 1 - 1 / (iter + 1)))
    env.log(iter, {ce = ce:item(), consistency = consistency:item()})
  end
  return env.evaluate(teacher)
end
