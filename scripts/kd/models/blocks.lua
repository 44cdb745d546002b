-- blocks: the building blocks the model zoo is made of.
local kd = require("kd")
local nn = kd.nn
local class = require("kd.infra.class")

local blocks = {}

-- conv (k, stride, dilation, padding d*(k-1)/2, no bias) - BN - ReLU
function blocks.conv_bn_relu(cin, cout, k, options)
  options = options or {}
  local d = options.dilation or 1
  local layers = {nn.Conv2d(cin, cout, k, {stride = options.stride or 1, dilation = d,
                                           padding = d * (k - 1) / 2, bias = false}),
                  nn.BatchNorm2d(cout)}
  if options.relu ~= false then layers[#layers + 1] = nn.ReLU() end
  return nn.Sequential(layers)
end

-- ResBlock(c, d): conv3x3 d - BN - ReLU - conv3x3 d - BN, + input, ReLU
local ResBlock = class("ResBlock", nn.Module)
blocks.ResBlock = ResBlock

function ResBlock:__init(c, d)
  nn.Module.__init(self)
  self.dilation = d
  self:add_module("conv1", nn.Conv2d(c, c, 3, {padding = d, dilation = d, bias = false}))
  self:add_module("bn1", nn.BatchNorm2d(c))
  self:add_module("conv2", nn.Conv2d(c, c, 3, {padding = d, dilation = d, bias = false}))
  self:add_module("bn2", nn.BatchNorm2d(c))
end

function ResBlock:forward(x)
  local y = self.conv1:forward_bn(x, self.bn1, {relu = true})
  return self.conv2:forward_bn(y, self.bn2, {residual = x, relu = true})
end

-- ASPP: parallel branches on one input, concatenated on channels:
-- a 1x1 conv, 3x3 convs at the given dilations (each with BN, ReLU), and the
-- image pool (global average, 1x1 conv, ReLU, broadcast back). image_pool_bn
-- adds BN to the pooled branch (the bench teacher has none).
local ASPP = class("ASPP", nn.Module)
blocks.ASPP = ASPP

function ASPP:__init(cin, cout, dilations, options)
  nn.Module.__init(self)
  options = options or {}
  self:add_module("branch1", blocks.conv_bn_relu(cin, cout, 1))
  for i, d in ipairs(dilations) do self:add_module("branch" .. (i + 1), blocks.conv_bn_relu(cin, cout, 3, {dilation = d})) end
  self.branches = #dilations + 1
  self:add_module("pool_conv", nn.Conv2d(cin, cout, 1, {bias = false}))
end

function ASPP:forward(x)
  local outs = {}
  for i = 1, self.branches do outs[i] = self["branch" .. i](x) end
  local pooled = kd.relu(self.pool_conv(kd.global_avg_pool(x)))
  outs[#outs + 1] = kd.resize_bilinear(pooled, x.shape[3], x.shape[4])
  return kd.concat(outs)
end

-- The upsampling of logits back to the input size (bilinear, align_corners false).
function blocks.upsample_to(logits, x)
  return kd.resize_bilinear(logits, x.shape[3], x.shape[4], false)
end

return blocks
