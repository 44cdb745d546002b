-- kdseg models: the model zoo with exact parameter counts and forward FLOPs
-- (by default at Cityscapes' full resolution, 1024 x 2048).
--   kdseg models [--size 1024x2048] [--classes 19] [--option output_stride=8 ...]
local argparse = require("argparse")

return function(...)
  local parser = argparse("kdseg models", "List the model zoo: parameters and forward FLOPs per image.")
  parser:option("--size", "Input size HxW for the FLOPs (Cityscapes' full resolution by default).", "1024x2048")
  parser:option("--classes", "Number of classes.", "19"):convert(tonumber)
  parser:option("--option", "A model option key=value, for the models that take it (output_stride=8, "
                .. "deep_stem=1, width=32); repeatable."):args(1):count("*")
  local args = parser:parse({...})
  local h, w = require("kd.cli").parse_size(args.size, "kdseg models: --size")
  h, w = tonumber(h), tonumber(w)
  local extra = {}
  for _, o in ipairs(args.option or {}) do
    local key, value = o:match("^([%w_]+)=(%d+)$")
    if not key then error("kdseg models: --option must be key=integer, got '" .. o .. "'", 0) end
    extra[key] = tonumber(value)
  end
  print(string.format("%-26s %-28s %12s %12s", "model", "options", "parameters", "GFLOPs/image"))
  for _, name in ipairs(kd.models.names()) do
    local options, shown = {classes = args.classes}, {}
    local takes = kd.models.options(name) or {}
    for key, value in pairs(extra) do
      if takes[key] then options[key] = value; shown[#shown + 1] = key .. "=" .. value end
    end
    table.sort(shown)
    local net = kd.models.create(name, options)
    local flops = kd.models.flops_at(net, h, w)
    print(string.format("%-26s %-28s %12d %12.1f", name, table.concat(shown, ","), net:num_parameters(), flops / 1e9))
    net = nil
    collectgarbage()
  end
  print(string.format("(forward FLOPs at %dx%d: 2 x the multiply-adds of the convolutions; the papers' networks at"
                      .. " their default output stride: PSPNet 8, DeepLabV3+ 16)", h, w))
end
