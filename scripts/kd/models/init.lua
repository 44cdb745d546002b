-- kd.models: the model zoo. Every model takes {classes = K, width = ...}
-- and has forward(x) -> logits at the input size and forward_features(x) ->
-- logits, {features = the map before the classifier, ...} for feature
-- distillation. kd.models.create(name, options) builds one by name.
local models = {}
local papers = require("kd.models.papers")
for _, file in ipairs({"kd.models.bench", "kd.models.deeplab", "kd.models.erfnet", "kd.models.mobilenet"}) do
  for name, cls in pairs(require(file)) do models[name] = cls end
end
-- The options each design takes: true for any integer >= 1, or the list of
-- allowed values (the benchmark networks have a fixed width).
local takes = {bench_student = {classes = true}, bench_teacher = {classes = true},
               deeplabv3plus = {classes = true, width = true}, erfnet = {classes = true, width = true},
               mobilenetv2 = {classes = true, width = true, expansion = true}}
for name, cls in pairs(papers.models) do models[name], takes[name] = cls, papers.takes[name] end

function models.names()
  local names = {}
  for name, value in pairs(models) do if type(value) == "table" then names[#names + 1] = name end end
  table.sort(names)
  return names
end

function models.options(name) return takes[name] end

function models.create(name, options)
  local cls = models[name]
  if type(cls) ~= "table" then
    error(string.format("unknown model '%s' (models: %s)", tostring(name), table.concat(models.names(), ", ")), 2)
  end
  options = options or {}
  if type(options) ~= "table" then error("models.create: options must be a table", 2) end
  for key, value in pairs(options) do
    local allowed = takes[name] and takes[name][key]
    if takes[name] and not allowed then
      local known = {}
      for k in pairs(takes[name]) do known[#known + 1] = k end
      table.sort(known)
      error(string.format("model %s takes no option '%s'%s (it takes %s)", name, tostring(key),
                          key == "width" and " (its width is fixed)" or "", table.concat(known, ", ")), 2)
    end
    if type(allowed) == "table" then
      local ok = false
      for _, v in ipairs(allowed) do ok = ok or v == value end
      if not ok then
        error(string.format("model %s: %s must be one of %s, got %s", name, key, table.concat(allowed, ", "),
                            tostring(value)), 2)
      end
    elseif type(value) ~= "number" or value < 1 or value % 1 ~= 0 or (key == "classes" and value > 255) then
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
  local folding = kd.nn.set_folding(false) -- every convolution through kd.conv2d, where it is counted
  local ok, err = pcall(kd.no_grad, function() return net(kd.zeros(shape)) end)
  kd.nn.set_folding(folding)
  kd.conv2d = conv
  net:train(was_training)
  if not ok then error(err, 2) end
  return total
end

-- Forward FLOPs of net at h x w for one image without running it there: the
-- convolutions' work is a*h*w + b whenever h and w are multiples of 32 (every
-- map scales with the input; the pooled branches of ASPP and PSP work on
-- fixed grids, the constant b), so two small forwards give a and b. Other
-- sizes are counted directly. (A forward of PSPNet-R101 at 1024 x 2048 takes
-- minutes and gigabytes here; two at 64 x 64 and 64 x 128 take a second.)
function models.flops_at(net, h, w)
  if h % 32 ~= 0 or w % 32 ~= 0 or h * w <= 64 * 128 then return models.flops(net, {1, 3, h, w}) end
  local f1, f2 = models.flops(net, {1, 3, 64, 64}), models.flops(net, {1, 3, 64, 128})
  local a = (f2 - f1) / (64 * 64)
  return a * h * w + (f1 - a * 64 * 64)
end

-- A model from a spec, the form configs give: a zoo name, or {name = ...,
-- and any option the design takes (width, output_stride, deep_stem, ...),
-- pretrained = a weights file for its backbone}. Returns the model and its
-- arch {name, options}, what checkpoints record to rebuild it (pretrained is
-- not part of it: a checkpoint holds the trained weights).
local function as_spec(spec)
  if type(spec) == "string" then spec = {name = spec} end
  if type(spec) ~= "table" or type(spec.name) ~= "string" then
    error("a model is a zoo name or {name = ..., options...}, got " .. tostring(spec), 3)
  end
  return spec
end

-- The options of a spec, as kd.models.create takes them.
function models.build_options(spec, classes)
  local options = {classes = classes}
  for key, value in pairs(as_spec(spec)) do
    -- false: the design's default (how configs leave an option unset)
    if key ~= "name" and key ~= "pretrained" and value ~= false then options[key] = value end
  end
  return options
end

function models.build(spec, classes)
  spec = as_spec(spec)
  local arch = {name = spec.name, options = models.build_options(spec, classes)}
  local net = models.create(arch.name, arch.options)
  if spec.pretrained and spec.pretrained ~= "" then models.load_pretrained(net, spec.pretrained) end
  return net, arch
end

-- Loads a weights file into net's backbone with strict checking: ImageNet
-- weights from torchvision converted by scripts/torch/convert.py (names as
-- torchvision's, fc.* dropped), with or without "backbone." in front.
function models.load_pretrained(net, path)
  if not net.backbone then
    error(string.format("pretrained %s: model %s has no backbone to load it into (the papers' networks have one)",
                        path, net.__name), 0)
  end
  local tensors = kd.load(path)
  local prefixed, all = {}, true
  for name, t in pairs(tensors) do
    local inner = name:match("^backbone%.(.+)$")
    if inner then prefixed[inner] = t else all = false end
  end
  local ok, err = pcall(net.backbone.load_state_dict, net.backbone, all and next(prefixed) and prefixed or tensors)
  if not ok then
    error(string.format("pretrained %s: %s (convert torchvision's weights with scripts/torch/convert.py to-kdseg, "
                        .. "dropping fc. for a ResNet, features.18. and classifier. for MobileNetV2)", path,
                        tostring(err):gsub("^[^:]*%.lua:%d+: ", "")), 0)
  end
end

return models
