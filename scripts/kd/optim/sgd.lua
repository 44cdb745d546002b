-- SGD with momentum, as torch.optim.SGD.
-- Settings (defaults):
--   lr            learning rate (required)
--   momentum      0      momentum factor
--   dampening     0      dampening for momentum
--   weight_decay  0      L2 penalty added to the gradient
--   nesterov      false  Nesterov momentum (needs momentum > 0 and dampening 0)
-- The update of each parameter is one fused C loop (kd._C.sgd_step).
local kd = require("kd")
local class = require("kd.infra.class")
local Optimizer = require("kd.optim.optimizer")

local SGD = class("optim.SGD", Optimizer)

function SGD:__init(params, options)
  Optimizer.__init(self, "optim.SGD", params, options,
                   {lr = false, momentum = 0, dampening = 0, weight_decay = 0, nesterov = false, lr_scale = 1})
  for gi, g in ipairs(self.param_groups) do
    if type(g.lr) ~= "number" or g.lr < 0 then error(string.format("optim.SGD: group %d needs a learning rate lr >= 0", gi), 2) end
    if g.nesterov and (g.momentum <= 0 or g.dampening ~= 0) then
      error("optim.SGD: nesterov needs momentum > 0 and dampening 0", 2)
    end
  end
end

function SGD:step()
  for _, g in ipairs(self.param_groups) do
    for _, p in ipairs(g.params) do
      local grad = p.grad
      if grad then
        local state = self.state[p]
        local first = false
        if g.momentum ~= 0 and not state then
          state = {momentum_buffer = kd.zeros_like(p)}
          self.state[p] = state
          first = true
        end
        kd._C.sgd_step(p, grad, state and state.momentum_buffer, g.lr, g.momentum, g.dampening,
                       g.weight_decay, g.nesterov, first)
      end
    end
  end
end

return SGD
