-- Step: what one iteration of the loop hands its terms. Outputs are made on
-- first request and shared, so a model runs once per input per iteration
-- whatever number of terms read it.
--   step:batch(input)            a stream's batch, or a view made from the step
--   step:output(model, input)    logits, extras ({features = ...}) of a model on an input:
--                                with gradient for a learning model, without for the others
--   step:target(model, input[, T]) softmax probabilities at temperature T, no gradient
--                                (a learning model runs once more, unrecorded, as a teacher would)
--   step.iteration (from 1), step.loop, step:model(name)
local class = require("kd.infra.class")

local Step = class("train.Step")

function Step:__init(loop, batches, iteration)
  self.loop, self.batches, self.iteration = loop, batches, iteration
  self.views, self.outputs, self.targets = {}, {}, {}
end

function Step:model(name)
  local m = self.loop.by_name[name]
  if not m then error("step: no model named '" .. tostring(name) .. "'", 2) end
  return m.model
end

function Step:batch(input)
  local b = self.batches[input] or self.views[input]
  if b then return b end
  local make = self.loop.views[input]
  if not make then error("step: no stream or view named '" .. tostring(input) .. "'", 2) end
  b = make(self)
  self.views[input] = b
  return b
end

function Step:output(model, input)
  local key = model .. "\0" .. input
  local cached = self.outputs[key]
  if cached then return cached[1], cached[2] end
  local m = self.loop.by_name[model]
  if not m then error("step: no model named '" .. tostring(model) .. "'", 2) end
  local images = self:batch(input).images
  local logits, extras
  if m.trainable then logits, extras = m.model:forward_features(images)
  else logits, extras = kd.no_grad(m.model.forward_features, m.model, images) end
  self.outputs[key] = {logits, extras}
  return logits, extras
end

function Step:target(model, input, temperature)
  temperature = temperature or 1
  local key = model .. "\0" .. input .. "\0" .. temperature
  if self.targets[key] then return self.targets[key] end
  local m = self.loop.by_name[model]
  if not m then error("step: no model named '" .. tostring(model) .. "'", 2) end
  local probs
  if m.trainable then
    local images = self:batch(input).images
    probs = kd.no_grad(function() return kd.softmax(m.model(images), temperature) end)
  else
    probs = kd.no_grad(function() return kd.softmax(self:output(model, input), temperature) end)
  end
  self.targets[key] = probs
  return probs
end

return Step
