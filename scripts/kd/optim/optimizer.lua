-- Optimizer: parameter groups and state, shared by SGD and AdamW.
-- params is a list of tensors, or a list of groups {params = {...}, lr = ...,
-- weight_decay = ...} whose settings override the optimizer's defaults
-- (for example no weight decay on batch-norm and bias parameters).
local kd = require("kd")
local class = require("kd.infra.class")

local Optimizer = class("optim.Optimizer")

function Optimizer:__init(name, params, options, defaults)
  self.name = name
  options = options or {}
  for key in pairs(options) do
    if defaults[key] == nil then error(string.format("%s: unknown setting '%s'", name, tostring(key)), 3) end
  end
  if type(params) ~= "table" or #params == 0 then error(name .. ": params must be a non-empty list", 3) end
  local groups = kd.is_tensor(params[1]) and {{params = params}} or params
  self.param_groups, self.state = {}, {}
  for gi, group in ipairs(groups) do
    if type(group) ~= "table" or type(group.params) ~= "table" then
      error(string.format("%s: group %d must be a table with a params list", name, gi), 3)
    end
    local g = {params = group.params}
    for key, default in pairs(defaults) do
      local v = group[key]
      if v == nil then v = options[key] end
      if v == nil then v = default end
      g[key] = v
    end
    for key in pairs(group) do
      if key ~= "params" and defaults[key] == nil then
        error(string.format("%s: group %d has unknown setting '%s'", name, gi, tostring(key)), 3)
      end
    end
    for pi, p in ipairs(g.params) do
      if not kd.is_tensor(p) then error(string.format("%s: group %d parameter %d is not a tensor", name, gi, pi), 3) end
    end
    self.param_groups[gi] = g
  end
end

function Optimizer:zero_grad()
  for _, g in ipairs(self.param_groups) do
    for _, p in ipairs(g.params) do p.grad = nil end
  end
end

-- The learning rate of every group, set by schedules.
function Optimizer:set_lr(lr)
  for _, g in ipairs(self.param_groups) do
    g.base_lr = g.base_lr or g.lr
    g.lr = lr * (g.lr_scale or 1)
  end
end

-- State for saving: per parameter (by position), a table of tensors and numbers.
function Optimizer:state_dict()
  local out = {}
  local i = 0
  for _, g in ipairs(self.param_groups) do
    for _, p in ipairs(g.params) do
      i = i + 1
      out[i] = self.state[p]
    end
  end
  return out
end

function Optimizer:load_state_dict(saved)
  local i = 0
  for _, g in ipairs(self.param_groups) do
    for _, p in ipairs(g.params) do
      i = i + 1
      if saved[i] then self.state[p] = saved[i] end
    end
  end
end

return Optimizer
