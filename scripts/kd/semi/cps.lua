-- Cross Pseudo Supervision (Chen et al., 2021): two networks of one design,
-- initialised differently, each trained on the labels and on the other's
-- hard pseudo-labels (argmax) of the unlabeled images. Their mean
-- distribution is the model evaluated.
local common = require("kd.semi.common")

return function(options)
  local env = common.setup(options)
  local cfg = env.cfg
  local a, b = env.model(), env.model()
  local params = a:parameters()
  for _, p in ipairs(b:parameters()) do params[#params + 1] = p end
  local opt = env.optimizer(params)
  for iter = 1, cfg.iterations do
    opt:set_lr(env.schedule(iter - 1))
    local lb, ub = env.labeled:next(), env.unlabeled:next()
    local ua, ub_logits = a(ub.images), b(ub.images)
    local pa, pb = ua:detach():argmax(), ub_logits:detach():argmax()
    local sup = kd.losses.cross_entropy(a(lb.images), lb.labels) + kd.losses.cross_entropy(b(lb.images), lb.labels)
    local cps = kd.losses.cross_entropy(ua, pb) + kd.losses.cross_entropy(ub_logits, pa)
    local loss = sup + cps * env.ramp(iter)
    opt:zero_grad(); loss:backward(); opt:step()
    env.log(iter, {sup = sup:item(), cps = cps:item()})
  end
  -- the pair as one model: the mean of their distributions
  local pair = kd.class("CPSPair", kd.nn.Module)
  function pair:forward(x) return kd.log((kd.softmax(a(x)) + kd.softmax(b(x))) * 0.5 + 1e-8) end
  local model = pair()
  model:add_module("a", a)
  model:add_module("b", b)
  return env.evaluate(model)
end
