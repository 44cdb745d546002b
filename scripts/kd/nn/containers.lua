-- Containers: Sequential runs its children in order; an error inside a child
-- says which one ("In 3 module of nn.Sequential: ..."), as in torch/nn.
-- Children are named "0", "1", ... as in PyTorch's nn.Sequential, so that
-- state dicts carry PyTorch's names ("stem.0.weight"); get(i) counts from 1
-- as Lua does.
local class = require("kd.infra.class")
local Module = require("kd.nn.module")

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

function Sequential:forward(x)
  for i, name in ipairs(self._module_names) do
    local ok, result = pcall(self[name].forward, self[name], x)
    if not ok then
      error(string.format("In %d module of nn.Sequential (%s): %s", i, self[name].__name, tostring(result)), 0)
    end
    x = result
  end
  return x
end

return {Sequential = Sequential}
