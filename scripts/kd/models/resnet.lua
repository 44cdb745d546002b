-- resnet: the ResNet backbones of the segmentation literature (He et al.
-- 2016), with torchvision's parameter names and shapes (conv1, bn1,
-- layer1.0.conv1, layer1.0.downsample.0, ...), so that ImageNet weights
-- converted from torchvision load with strict checking (fc.* dropped: a
-- segmentation network has no classifier over ImageNet's classes).
--   resnet.ResNet(depth, {output_stride = 8 | 16 | 32, deep_stem = false, width = 64})
-- forward(x) -> {c1 = layer1's output (1/4), c3 = layer3's, c4 = layer4's}
--
-- Output stride 8 or 16 replaces the strides of layer3 and layer4 (or of
-- layer4 alone) by dilation, as torchvision's replace_stride_with_dilation
-- does: the first block of a dilated layer keeps the previous dilation, the
-- others take the new one. torchvision refuses dilation in BasicBlock; here
-- it dilates like the Bottleneck (padding = dilation), as the PSPNet and
-- structured-distillation code does for ResNet-18.
-- deep_stem replaces the 7x7 stem by three 3x3 convolutions (64, 64, 128
-- channels; named conv1/bn1, conv2/bn2, conv3/bn3 as in the PSPNet code's
-- "deep base"), which ImageNet weights for torchvision's stem do not fit.
-- width scales every channel count (64 is torchvision's).
local kd = require("kd")
local nn = kd.nn
local class = require("kd.infra.class")

local resnet = {}

local function conv(cin, cout, k, stride, dilation)
  dilation = dilation or 1
  return nn.Conv2d(cin, cout, k, {stride = stride or 1, padding = k == 3 and dilation or 0, dilation = dilation,
                                  bias = false})
end

-- Two 3x3 convolutions (ResNet-18 and -34).
local BasicBlock = class("resnet.BasicBlock", nn.Module)
BasicBlock.expansion = 1

function BasicBlock:__init(cin, planes, stride, dilation, downsample)
  nn.Module.__init(self)
  self:add_module("conv1", conv(cin, planes, 3, stride, dilation))
  self:add_module("bn1", nn.BatchNorm2d(planes))
  self:add_module("conv2", conv(planes, planes, 3, 1, dilation))
  self:add_module("bn2", nn.BatchNorm2d(planes))
  if downsample then self:add_module("downsample", downsample) end
end

function BasicBlock:forward(x)
  local y = self.conv1:forward_bn(x, self.bn1, {relu = true})
  return self.conv2:forward_bn(y, self.bn2, {residual = self.downsample and self.downsample(x) or x, relu = true})
end

-- 1x1 reduce, 3x3 (carrying the stride, as torchvision's "ResNet V1.5"),
-- 1x1 expand by 4 (ResNet-50, -101).
local Bottleneck = class("resnet.Bottleneck", nn.Module)
Bottleneck.expansion = 4

function Bottleneck:__init(cin, planes, stride, dilation, downsample)
  nn.Module.__init(self)
  self:add_module("conv1", conv(cin, planes, 1))
  self:add_module("bn1", nn.BatchNorm2d(planes))
  self:add_module("conv2", conv(planes, planes, 3, stride, dilation))
  self:add_module("bn2", nn.BatchNorm2d(planes))
  self:add_module("conv3", conv(planes, planes * 4, 1))
  self:add_module("bn3", nn.BatchNorm2d(planes * 4))
  if downsample then self:add_module("downsample", downsample) end
end

function Bottleneck:forward(x)
  local y = self.conv1:forward_bn(x, self.bn1, {relu = true})
  y = self.conv2:forward_bn(y, self.bn2, {relu = true})
  return self.conv3:forward_bn(y, self.bn3, {residual = self.downsample and self.downsample(x) or x, relu = true})
end

resnet.depths = {[18] = {BasicBlock, {2, 2, 2, 2}}, [34] = {BasicBlock, {3, 4, 6, 3}},
                 [50] = {Bottleneck, {3, 4, 6, 3}}, [101] = {Bottleneck, {3, 4, 23, 3}}}

-- Which of layer2..layer4 trade their stride for dilation, by output stride.
local dilate_at = {[8] = {false, true, true}, [16] = {false, false, true}, [32] = {false, false, false}}

local ResNet = class("resnet.ResNet", nn.Module)
resnet.ResNet = ResNet

function ResNet:__init(depth, options)
  nn.Module.__init(self)
  options = options or {}
  local spec = resnet.depths[depth]
  if not spec then error("resnet: depth must be 18, 34, 50 or 101, got " .. tostring(depth), 2) end
  local os = options.output_stride or 8
  if not dilate_at[os] then error("resnet: output_stride must be 8, 16 or 32, got " .. tostring(os), 2) end
  local block, counts = spec[1], spec[2]
  local w = options.width or 64
  self.deep_stem = options.deep_stem and true or false
  local cin
  if self.deep_stem then
    self:add_module("conv1", conv(3, w, 3, 2))
    self:add_module("bn1", nn.BatchNorm2d(w))
    self:add_module("conv2", conv(w, w, 3))
    self:add_module("bn2", nn.BatchNorm2d(w))
    self:add_module("conv3", conv(w, 2 * w, 3))
    self:add_module("bn3", nn.BatchNorm2d(2 * w))
    cin = 2 * w
  else
    self:add_module("conv1", nn.Conv2d(3, w, 7, {stride = 2, padding = 3, bias = false}))
    self:add_module("bn1", nn.BatchNorm2d(w))
    cin = w
  end
  local dilation = 1
  for i, count in ipairs(counts) do
    local planes, stride = w * 2 ^ (i - 1), i == 1 and 1 or 2
    local previous = dilation
    if i > 1 and dilate_at[os][i - 1] then dilation, stride = dilation * stride, 1 end
    local downsample = nil
    if stride ~= 1 or cin ~= planes * block.expansion then
      downsample = nn.Sequential(conv(cin, planes * block.expansion, 1, stride), nn.BatchNorm2d(planes * block.expansion))
    end
    local blocks = {block(cin, planes, stride, previous, downsample)}
    cin = planes * block.expansion
    for b = 2, count do blocks[b] = block(cin, planes, 1, dilation) end
    self:add_module("layer" .. i, nn.Sequential(blocks))
  end
  self.channels = {c1 = w * block.expansion, c3 = 4 * w * block.expansion, c4 = cin}
end

function ResNet:forward(x)
  local y = self.conv1:forward_bn(x, self.bn1, {relu = true})
  if self.deep_stem then
    y = self.conv2:forward_bn(y, self.bn2, {relu = true})
    y = self.conv3:forward_bn(y, self.bn3, {relu = true})
  end
  y = kd.max_pool2d(y, {kernel = 3, stride = 2, padding = 1})
  local c1 = self.layer1(y)
  local c3 = self.layer3(self.layer2(c1))
  return {c1 = c1, c3 = c3, c4 = self.layer4(c3)}
end

return resnet
