-- AdamW (Loshchilov & Hutter), as torch.optim.AdamW.
-- Settings (defaults):
--   lr            1e-3
--   betas         {0.9, 0.999}  decay rates of the first and second moments
--   eps           1e-8          added to the denominator
--   weight_decay  1e-2          decoupled: p = p * (1 - lr * weight_decay)
local kd = require("kd")
local class = require("kd.infra.class")
local Optimizer = require("kd.optim.optimizer")

local AdamW = class("optim.AdamW", Optimizer)

function AdamW:__init(params, options)
  Optimizer.__init(self, "optim.AdamW", params, options,
                   {lr = 1e-3, betas = {0.9, 0.999}, eps = 1e-8, weight_decay = 1e-2, lr_scale = 1})
  for gi, g in ipairs(self.param_groups) do
    if type(g.betas) ~= "table" or #g.betas ~= 2 then error(string.format("optim.AdamW: group %d betas must be {beta1, beta2}", gi), 2) end
  end
end

function AdamW:step()
  for _, g in ipairs(self.param_groups) do
    for _, p in ipairs(g.params) do
      if p.grad then
        local state = self.state[p]
        if not state then
          state = {step = 0, exp_avg = kd.zeros_like(p), exp_avg_sq = kd.zeros_like(p)}
          self.state[p] = state
        end
        state.step = state.step + 1
        kd._C.adamw_step(p, p.grad, state.exp_avg, state.exp_avg_sq, g.lr, g.betas[1], g.betas[2],
                         g.eps, g.weight_decay, state.step)
      end
    end
  end
end

return AdamW
