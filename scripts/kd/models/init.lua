-- kd.models: the model zoo. Every model takes {classes = K, width = ...}
-- and has forward(x) -> logits at the input size and forward_features(x) ->
-- logits, {features = the map before the classifier, ...} for feature
-- distillation. kd.models.create(name, options) builds one by name.
local models = {}
for _, file in ipairs({"kd.models.bench", "kd.models.deeplab", "kd.models.erfnet", "kd.models.mobilenet"}) do
  for name, cls in pairs(require(file)) do models[name] = cls end
end

function models.names()
  local names = {}
  for name, value in pairs(models) do if type(value) == "table" then names[#names + 1] = name end end
  table.sort(names)
  return names
end

-- The options each design takes (the benchmark networks have a fixed width).
local takes = {bench_student = {classes = true}, bench_teacher = {classes = true},
               deeplabv3plus = {classes = true, width = true}, erfnet = {classes = true, width = true},
               mobilenetv2 = {classes = true, width = true, expansion = true}}

function models.create(name, options)
  local cls = models[name]
  if type(cls) ~= "table" then
    error(string.format("unknown model '%s' (models: %s)", tostring(name), table.concat(models.names(), ", ")), 2)
  end
  options = options or {}
  if type(options) ~= "table" then error("models.create: options must be a table", 2) end
  for key, value in pairs(options) do
    if takes[name] and not takes[name][key] then
      error(string.format("model %s takes no option '%s'%s", name, tostring(key),
                          key == "width" and " (its width is fixed)" or ""), 2)
    end
    if type(value) ~= "number" or value < 1 or value % 1 ~= 0 or (key == "classes" and value > 255) then
      error(string.format("model %s: %s must be an integer >= 1%s, got %s", name, tostring(key),
                          key == "classes" and " and <= 255" or "", tostring(value)), 2)
    end
  end
  return cls(options)
end

-- Forward FLOPs of net on an input of shape {n, 3, h, w}: multiply-adds of
-- every convolution counted twice (the rest - BN, ReLU, resizes - is a few
-- percent and left out), measured by running one forward with kd.conv2d
-- counting.
function models.flops(net, shape)
  local kd = require("kd")
  local conv, total = kd.conv2d, 0
  kd.conv2d = function(x, w, b, options)
    local y = conv(x, w, b, options)
    total = total + 2 * y:numel() * w.shape[2] * w.shape[3] * w.shape[4]
    return y
  end
  local was_training = net.training
  net:eval()
  local ok, err = pcall(kd.no_grad, function() return net(kd.zeros(shape)) end)
  kd.conv2d = conv
  net:train(was_training)
  if not ok then error(err, 2) end
  return total
end

return models
