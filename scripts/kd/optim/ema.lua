-- EMA: an exponential moving average of a model's weights (a mean teacher).
--   local ema = kd.optim.EMA(teacher, student, {decay = 0.99})
--   ema:update()    -- teacher = decay * teacher + (1 - decay) * student
-- Buffers (batch-norm running statistics) are copied, not averaged, unless
-- average_buffers is set.
local class = require("kd.infra.class")

local EMA = class("optim.EMA")

function EMA:__init(target, source, options)
  options = options or {}
  self.decay = options.decay or 0.999
  if type(self.decay) ~= "number" or self.decay < 0 or self.decay > 1 then
    error("optim.EMA: decay must be in [0, 1]", 2)
  end
  self.average_buffers = options.average_buffers or false
  self.target, self.source = target, source
  local t, s = target:state_dict(), source:state_dict()
  for name, tensor in pairs(t) do
    if not s[name] or table.concat(s[name].shape, "x") ~= table.concat(tensor.shape, "x") then
      error("optim.EMA: the two models differ at '" .. name .. "'", 2)
    end
  end
  self.params, self.buffers = {}, {}
  local src = {}
  for _, pair in ipairs(source:named_parameters()) do src[pair[1]] = pair[2] end
  for _, pair in ipairs(target:named_parameters()) do self.params[#self.params + 1] = {pair[2], src[pair[1]]} end
  local srcb = {}
  for _, pair in ipairs(source:named_buffers()) do srcb[pair[1]] = pair[2] end
  for _, pair in ipairs(target:named_buffers()) do self.buffers[#self.buffers + 1] = {pair[2], srcb[pair[1]]} end
end

function EMA:update(decay)
  decay = decay or self.decay
  for _, pair in ipairs(self.params) do pair[1]:axpby_(decay, pair[2], 1 - decay) end
  for _, pair in ipairs(self.buffers) do
    if self.average_buffers and pair[1].dtype == "float32" then pair[1]:axpby_(decay, pair[2], 1 - decay)
    else pair[1]:copy_(pair[2]) end
  end
end

return EMA
