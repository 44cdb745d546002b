-- mobilenetv2_backbone: torchvision's MobileNetV2 (Sandler et al. 2018) as a
-- segmentation backbone, with its parameter names (features.0.0.weight,
-- features.1.conv.0.0.weight, ...), so ImageNet weights converted from
-- torchvision load with strict checking (its last 1x1 convolution,
-- features.18, and its classifier are not part of it: drop them when
-- converting). ReLU6 as in torchvision.
--   MobileNetV2({output_stride = 16, width = 32})
-- forward(x) -> {c1 = features.3's output (24 channels, 1/4), c4 = features.17's (320, 1/output_stride)}
-- width is the stem's channels (torchvision's 32 x width_mult); every
-- channel count scales with it and is rounded to a multiple of 8 as
-- torchvision's _make_divisible rounds it. Beyond the output stride, strided
-- blocks become dilated ones: the first block of a stage keeps the previous
-- dilation, the rest take the new one (as for the ResNets).
local kd = require("kd")
local nn = kd.nn
local class = require("kd.infra.class")

-- torchvision's _make_divisible: the nearest multiple of 8, never 10% below v.
local function divisible(v)
  local new = math.max(8, math.floor(v + 4) - math.floor(v + 4) % 8)
  if new < 0.9 * v then new = new + 8 end
  return new
end

local function conv_bn_relu6(cin, cout, k, stride, dilation, groups)
  return nn.Sequential(nn.Conv2d(cin, cout, k, {stride = stride or 1, padding = k == 3 and (dilation or 1) or 0,
                                                dilation = dilation or 1, groups = groups or 1, bias = false}),
                       nn.BatchNorm2d(cout), nn.ReLU6())
end

local InvertedResidual = class("mobilenetv2.InvertedResidual", nn.Module)

function InvertedResidual:__init(cin, cout, stride, dilation, expand)
  nn.Module.__init(self)
  local hidden = math.floor(cin * expand + 0.5)
  self.residual = stride == 1 and cin == cout
  local layers = {}
  if expand ~= 1 then layers[#layers + 1] = conv_bn_relu6(cin, hidden, 1) end
  layers[#layers + 1] = conv_bn_relu6(hidden, hidden, 3, stride, dilation, hidden)
  layers[#layers + 1] = nn.Conv2d(hidden, cout, 1, {bias = false})
  layers[#layers + 1] = nn.BatchNorm2d(cout)
  self:add_module("conv", nn.Sequential(layers))
end

function InvertedResidual:forward(x)
  local y = self.conv(x)
  if self.residual then return y + x end
  return y
end

-- expansion t, channels c, repeats n, stride s: torchvision's table
local settings = {{1, 16, 1, 1}, {6, 24, 2, 2}, {6, 32, 3, 2}, {6, 64, 4, 2}, {6, 96, 3, 1}, {6, 160, 3, 2}, {6, 320, 1, 1}}

local MobileNetV2 = class("mobilenetv2.Backbone", nn.Module)

function MobileNetV2:__init(options)
  nn.Module.__init(self)
  options = options or {}
  local os = options.output_stride or 16
  if os ~= 8 and os ~= 16 and os ~= 32 then error("mobilenetv2: output_stride must be 8, 16 or 32, got " .. tostring(os), 2) end
  local mult = (options.width or 32) / 32
  local cin = divisible(32 * mult)
  local layers = {conv_bn_relu6(3, cin, 3, 2)}
  local stride_so_far, dilation = 2, 1
  for _, s in ipairs(settings) do
    local t, c, n, stride = s[1], divisible(s[2] * mult), s[3], s[4]
    local previous = dilation
    if stride > 1 and stride_so_far >= os then dilation, stride = dilation * stride, 1
    else stride_so_far = stride_so_far * stride end
    for i = 1, n do
      layers[#layers + 1] = InvertedResidual(cin, c, i == 1 and stride or 1, i == 1 and previous or dilation, t)
      cin = c
    end
  end
  self:add_module("features", nn.Sequential(layers))
  self.channels = {c1 = divisible(24 * mult), c4 = cin}
end

function MobileNetV2:forward(x)
  local y, c1 = x, nil
  for i = 1, self.features:size() do
    y = self.features:get(i)(y)
    if i == 4 then c1 = y end -- features.3: the last block at 1/4
  end
  return {c1 = c1, c4 = y}
end

return MobileNetV2
