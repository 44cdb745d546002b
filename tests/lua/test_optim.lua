-- kd.optim: SGD and AdamW against updates worked out by hand, parameter
-- groups, schedules, EMA.
local h = require("harness")
local T = {}

local function param(values)
  local p = kd.tensor(values)
  p.requires_grad = true
  return p
end

function T.sgd_by_hand()
  -- p = 1, grad 2 each step, lr 0.1, momentum 0.9, weight decay 0.5:
  -- step 1: g = 2 + 0.5*1 = 2.5, buf = 2.5, p = 1 - 0.25 = 0.75
  -- step 2: g = 2 + 0.375 = 2.375, buf = 0.9*2.5 + 2.375 = 4.625, p = 0.75 - 0.4625 = 0.2875
  local p = param({1})
  local opt = kd.optim.SGD({p}, {lr = 0.1, momentum = 0.9, weight_decay = 0.5})
  for _ = 1, 2 do
    p.grad = kd.tensor({2})
    opt:step()
  end
  h.near(p:get(1), 0.2875, 1e-6, "sgd momentum + weight decay")
  -- nesterov, one step: buf = g = 2, update = g + 0.9 * buf = 3.8
  local q = param({1})
  local nesterov = kd.optim.SGD({q}, {lr = 0.1, momentum = 0.9, nesterov = true})
  q.grad = kd.tensor({2})
  nesterov:step()
  h.near(q:get(1), 1 - 0.38, 1e-6, "nesterov")
end

function T.adamw_by_hand()
  -- one step from m = v = 0 with grad g: m_hat = g, v_hat = g^2, update = lr * g / (|g| + eps)
  -- and decoupled decay p *= 1 - lr * wd: 1 * (1 - 0.01*0.1) - 0.01 = 0.989
  local p = param({1})
  local opt = kd.optim.AdamW({p}, {lr = 0.01, weight_decay = 0.1})
  p.grad = kd.tensor({3})
  opt:step()
  h.near(p:get(1), 0.999 - 0.01 * 3 / (3 + 1e-8), 1e-6, "adamw step 1")
end

function T.parameter_groups()
  local a, b = param({1}), param({1})
  local opt = kd.optim.SGD({{params = {a}}, {params = {b}, weight_decay = 0, lr = 0.5}}, {lr = 0.1, weight_decay = 1})
  a.grad, b.grad = kd.tensor({0}), kd.tensor({1})
  opt:step()
  h.near(a:get(1), 0.9, 1e-6, "group 1: decay only")
  h.near(b:get(1), 0.5, 1e-6, "group 2: own lr, no decay")
  opt:zero_grad()
  h.eq(a.grad, nil, "zero_grad clears")
  h.raises(function() kd.optim.SGD({a}, {lr = 0.1, momentun = 0.9}) end, "unknown setting 'momentun'")
  h.raises(function() kd.optim.SGD({a}, {}) end, "needs a learning rate")
  h.raises(function() kd.optim.SGD({}, {lr = 1}) end, "non-empty list")
end

function T.schedules()
  local s = kd.optim.schedules
  local poly = s.poly({base = 0.01, total = 100, power = 0.9})
  h.near(poly(0), 0.01, 1e-12, "poly start")
  h.near(poly(50), 0.01 * 0.5 ^ 0.9, 1e-9, "poly middle")
  h.eq(poly(100), 0, "poly end")
  local cos = s.cosine({base = 1, total = 10})
  h.near(cos(5), 0.5, 1e-9, "cosine middle")
  local step = s.step({base = 1, every = 10, gamma = 0.5})
  h.eq(step(25), 0.25, "step")
  local warm = s.warmup(poly, {iterations = 10, start_factor = 0})
  h.near(warm(5), poly(5) * 0.5, 1e-12, "linear warm-up")
  h.eq(warm(20), poly(20), "after warm-up")
  local p = param({1})
  local opt = kd.optim.SGD({p}, {lr = 1})
  opt:set_lr(0.25)
  h.eq(opt.param_groups[1].lr, 0.25, "set_lr")
end

function T.ema()
  local a, b = kd.nn.Conv2d(2, 2, 1), kd.nn.Conv2d(2, 2, 1)
  a.weight:fill_(1); b.weight:fill_(3)
  local ema = kd.optim.EMA(a, b, {decay = 0.75})
  ema:update()
  h.near(a.weight:get(1), 0.75 * 1 + 0.25 * 3, 1e-6, "ema")
  h.raises(function() kd.optim.EMA(a, kd.nn.Conv2d(3, 2, 1)) end, "differ at 'weight'")
end

return T
