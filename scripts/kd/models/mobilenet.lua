-- mobilenet: a MobileNetV2-like light student (Sandler et al. 2018):
-- inverted residual blocks (1x1 expansion, 3x3 depthwise, 1x1 linear
-- projection; a residual where shapes allow), dilated instead of strided
-- beyond 1/8, and a light ASPP-free head.
-- options: classes (19), width (48: channels at 1/8), expansion (4)
local kd = require("kd")
local nn = kd.nn
local class = require("kd.infra.class")
local blocks = require("kd.models.blocks")
local cbr = blocks.conv_bn_relu

local InvertedResidual = class("InvertedResidual", nn.Module)

function InvertedResidual:__init(cin, cout, options)
  nn.Module.__init(self)
  local stride, d, t = options.stride or 1, options.dilation or 1, options.expansion or 4
  local hidden = cin * t
  self.residual = stride == 1 and cin == cout
  self:add_module("expand", cbr(cin, hidden, 1))
  self:add_module("depthwise", nn.Sequential(
    nn.Conv2d(hidden, hidden, 3, {stride = stride, padding = d, dilation = d, groups = hidden, bias = false}),
    nn.BatchNorm2d(hidden), nn.ReLU()))
  self:add_module("project", cbr(hidden, cout, 1, {relu = false}))
end

function InvertedResidual:forward(x)
  local y = self.project(self.depthwise(self.expand(x)))
  if self.residual then return y + x end
  return y
end

local MobileNet = class("models.mobilenetv2", nn.Module)

function MobileNet:__init(options)
  nn.Module.__init(self)
  options = options or {}
  local classes, c, t = options.classes or 19, options.width or 48, options.expansion or 4
  local function ir(cin, cout, stride, d) return InvertedResidual(cin, cout, {stride = stride, dilation = d, expansion = t}) end
  self:add_module("stem", cbr(3, c / 2, 3, {stride = 2}))
  self:add_module("stage1", nn.Sequential(ir(c / 2, c / 2, 2, 1), ir(c / 2, c / 2, 1, 1)))
  self:add_module("stage2", nn.Sequential(ir(c / 2, c, 2, 1), ir(c, c, 1, 1), ir(c, c, 1, 2), ir(c, c, 1, 4)))
  self:add_module("head", cbr(c, 2 * c, 1))
  self:add_module("classifier", nn.Conv2d(2 * c, classes, 1))
  self.feature_channels = 2 * c
end

function MobileNet:forward_features(x)
  local f = self.head(self.stage2(self.stage1(self.stem(x))))
  return blocks.upsample_to(self.classifier(f), x), {features = f}
end

function MobileNet:forward(x) return (self:forward_features(x)) end

-- The logits from (possibly perturbed) features, for feature-perturbation consistency.
function MobileNet:decode(features, x) return blocks.upsample_to(self.classifier(features), x) end

return {mobilenetv2 = MobileNet}
