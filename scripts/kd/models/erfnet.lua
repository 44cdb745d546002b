-- erfnet: an ERFNet-like light student (Romera et al. 2017): downsampling
-- convolutions and "non-bottleneck-1D" residual blocks whose 3x3
-- convolutions are factorised into 3x1 and 1x3 pairs, dilated deeper in.
-- options: classes (19), width (64: channels at 1/8)
local kd = require("kd")
local nn = kd.nn
local class = require("kd.infra.class")
local blocks = require("kd.models.blocks")
local cbr = blocks.conv_bn_relu

local NonBottleneck1D = class("NonBottleneck1D", nn.Module)

function NonBottleneck1D:__init(c, d)
  nn.Module.__init(self)
  self.dilation = d
  self:add_module("conv1", nn.Conv2d(c, c, {3, 1}, {padding = {1, 0}}))
  self:add_module("conv2", nn.Conv2d(c, c, {1, 3}, {padding = {0, 1}, bias = false}))
  self:add_module("bn1", nn.BatchNorm2d(c))
  self:add_module("conv3", nn.Conv2d(c, c, {3, 1}, {padding = {d, 0}, dilation = {d, 1}}))
  self:add_module("conv4", nn.Conv2d(c, c, {1, 3}, {padding = {0, d}, dilation = {1, d}, bias = false}))
  self:add_module("bn2", nn.BatchNorm2d(c))
end

function NonBottleneck1D:forward(x)
  local y = self.bn1:forward_relu(self.conv2(kd.relu(self.conv1(x))))
  y = self.bn2(self.conv4(kd.relu(self.conv3(y))))
  return kd.relu(y + x)
end

local ERFNet = class("models.erfnet", nn.Module)

function ERFNet:__init(options)
  nn.Module.__init(self)
  options = options or {}
  local classes, c = options.classes or 19, options.width or 64
  self:add_module("down1", cbr(3, c / 4, 3, {stride = 2}))
  self:add_module("down2", cbr(c / 4, c / 2, 3, {stride = 2}))
  self:add_module("stage1", nn.Sequential(NonBottleneck1D(c / 2, 1), NonBottleneck1D(c / 2, 1)))
  self:add_module("down3", cbr(c / 2, c, 3, {stride = 2}))
  self:add_module("stage2", nn.Sequential(NonBottleneck1D(c, 2), NonBottleneck1D(c, 4), NonBottleneck1D(c, 8),
                                          NonBottleneck1D(c, 2)))
  self:add_module("classifier", nn.Conv2d(c, classes, 1))
  self.feature_channels = c
end

function ERFNet:forward_features(x)
  local f = self.stage2(self.down3(self.stage1(self.down2(self.down1(x)))))
  return blocks.upsample_to(self.classifier(f), x), {features = f}
end

function ERFNet:forward(x) return (self:forward_features(x)) end

-- The logits from (possibly perturbed) features, for feature-perturbation consistency.
function ERFNet:decode(features, x) return blocks.upsample_to(self.classifier(features), x) end

return {erfnet = ERFNet}
