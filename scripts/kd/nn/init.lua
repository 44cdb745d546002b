-- kd.nn: modules as Lua classes that own their parameters (after torch/nn).
local nn = {}
nn.Module = require("kd.nn.module")
for _, file in ipairs({"kd.nn.containers", "kd.nn.layers", "kd.nn.activations", "kd.nn.spectral"}) do
  for name, cls in pairs(require(file)) do nn[name] = cls end
end
return nn
