-- kdseg models: the model zoo with exact parameter counts and forward FLOPs.
--   kdseg models [--size 128x256] [--classes 19]
local argparse = require("argparse")

return function(...)
  local parser = argparse("kdseg models", "List the model zoo: parameters and forward FLOPs.")
  parser:option("--size", "Input size HxW for the FLOPs.", "128x256")
  parser:option("--classes", "Number of classes.", "19"):convert(tonumber)
  local args = parser:parse({...})
  local h, w = require("kd.cli").parse_size(args.size, "kdseg models: --size")
  print(string.format("%-16s %12s %14s", "model", "parameters", "GFLOPs/image"))
  for _, name in ipairs(kd.models.names()) do
    local net = kd.models.create(name, {classes = args.classes})
    local flops = kd.models.flops(net, {1, 3, tonumber(h), tonumber(w)})
    print(string.format("%-16s %12d %14.3f", name, net:num_parameters(), flops / 1e9))
  end
  print(string.format("(forward FLOPs at %sx%s: 2 x the multiply-adds of the convolutions)", h, w))
end
