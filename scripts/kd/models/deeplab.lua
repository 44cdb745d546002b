-- deeplab: a DeepLabV3+-like teacher. A residual encoder to 1/8 with dilated
-- blocks, atrous spatial pyramid pooling, and a decoder that upsamples to 1/4
-- and fuses the low-level 1/4 features through a skip connection.
-- options: classes (19), width (64: channels at 1/4; 1/8 has twice as many)
local kd = require("kd")
local nn = kd.nn
local class = require("kd.infra.class")
local blocks = require("kd.models.blocks")
local cbr, ResBlock = blocks.conv_bn_relu, blocks.ResBlock

local DeepLab = class("models.deeplabv3plus", nn.Module)

function DeepLab:__init(options)
  nn.Module.__init(self)
  options = options or {}
  local classes, c = options.classes or 19, options.width or 64
  self:add_module("stem", nn.Sequential(cbr(3, c / 2, 3, {stride = 2}), cbr(c / 2, c / 2, 3)))
  self:add_module("low", nn.Sequential(cbr(c / 2, c, 3, {stride = 2}), ResBlock(c, 1), ResBlock(c, 1)))
  self:add_module("high", nn.Sequential(cbr(c, 2 * c, 3, {stride = 2}), ResBlock(2 * c, 1), ResBlock(2 * c, 2),
                                        ResBlock(2 * c, 4), ResBlock(2 * c, 8)))
  self:add_module("aspp", blocks.ASPP(2 * c, c, {3, 6, 9}))
  self:add_module("aspp_project", cbr(5 * c, 2 * c, 1))
  self:add_module("skip", cbr(c, 48, 1))
  self:add_module("decoder", nn.Sequential(cbr(2 * c + 48, 2 * c, 3), cbr(2 * c, 2 * c, 3)))
  self:add_module("classifier", nn.Conv2d(2 * c, classes, 1))
  self.feature_channels = 2 * c
end

function DeepLab:forward_features(x)
  local low = self.low(self.stem(x))
  local high = self.aspp_project(self.aspp(self.high(low)))
  local up = kd.resize_bilinear(high, low.shape[3], low.shape[4], false)
  local fused = self.decoder(kd.concat({up, self.skip(low)}))
  return blocks.upsample_to(self.classifier(fused), x), {features = high, decoder = fused}
end

function DeepLab:forward(x) return (self:forward_features(x)) end

return {deeplabv3plus = DeepLab}
