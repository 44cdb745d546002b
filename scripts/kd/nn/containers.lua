-- Containers: Sequential runs its children in order; an error inside a child
-- says which one ("In 3 module of nn.Sequential: ..."), as in torch/nn.
-- Children are named "0", "1", ... as in PyTorch's nn.Sequential, so that
-- state dicts carry PyTorch's names ("stem.0.weight"); get(i) counts from 1
-- as Lua does.
local class = require("kd.infra.class")
local Module = require("kd.nn.module")
local BatchNorm2d, Conv2d = require("kd.nn.layers").BatchNorm2d, require("kd.nn.layers").Conv2d
local ReLU = require("kd.nn.activations").ReLU

local Sequential = class("nn.Sequential", Module)

function Sequential:__init(...)
  Module.__init(self)
  local modules = {...}
  if #modules == 1 and type(modules[1]) == "table" and not class.is_instance(modules[1], Module) then
    modules = modules[1]
  end
  for _, m in ipairs(modules) do self:add(m) end
end

function Sequential:add(module)
  self:add_module(tostring(#self._module_names), module)
  return self
end

function Sequential:size() return #self._module_names end

function Sequential:get(i) return self[tostring(i - 1)] end

-- A BatchNorm2d followed by a ReLU runs as one op (BatchNorm2d:forward_relu:
-- the same values and gradients, one pass and one tensor fewer), and a
-- Conv2d followed by them as Conv2d:forward_bn (at inference, one
-- convolution with the batch norm folded in; else the same ops).
-- (`is` is not a closure made at each forward: LuaJIT does not compile
-- the making of one, and the whole training step ran interpreted.)
local function is(self, k, cls)
  local name = self._module_names[k]
  return name and getmetatable(self[name]) == cls
end

function Sequential:forward(x)
  local names, i = self._module_names, 1
  while i <= #names do
    local m, ok, result, taken = self[names[i]], nil, nil, 1
    if is(self, i, Conv2d) and is(self, i + 1, BatchNorm2d) then
      taken = is(self, i + 2, ReLU) and 3 or 2
      ok, result = pcall(m.forward_bn, m, x, self[names[i + 1]], {relu = taken == 3})
    elseif is(self, i, BatchNorm2d) and is(self, i + 1, ReLU) then
      taken = 2
      ok, result = pcall(m.forward_relu, m, x)
    else
      ok, result = pcall(m.forward, m, x)
    end
    if not ok then
      error(string.format("In %d module of nn.Sequential (%s): %s", i, m.__name, tostring(result)), 0)
    end
    x, i = result, i + taken
  end
  return x
end

return {Sequential = Sequential}
