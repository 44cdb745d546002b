-- papers: the segmentation networks of the distillation and semi-supervised
-- literature, as backbone + head, with torchvision's names under backbone.:
--   pspnet_resnet{18,50,101}         PSPNet (structured distillation's
--                                    PSPNet-R101 teacher and R18 student)
--   deeplabv3plus_resnet{18,50,101}  DeepLabV3+ (UniMatch, CPS)
--   deeplabv3plus_mobilenetv2        DeepLabV3+ on MobileNetV2
-- options: classes (19); output_stride (8 or 16; PSPNet 8, DeepLabV3+ 16, as
-- in their papers); deep_stem (0 or 1, ResNets only: the three-convolution
-- stem of the PSPNet code; 0 by default, the stem torchvision's ImageNet
-- weights are for); width (the stem's channels: 64 for the ResNets, 32 for
-- MobileNetV2; the heads scale with it, so a narrow network is a faithful
-- miniature for tests and small data).
-- tests/fixtures/torch holds PyTorch's names and shapes of every one, and
-- scripts/torch/kdseg_models.py the same networks in PyTorch.
local kd = require("kd")
local nn = kd.nn
local class = require("kd.infra.class")
local resnet = require("kd.models.resnet")
local heads = require("kd.models.heads")
local MobileNetV2 = require("kd.models.mobilenetv2_backbone")

local papers = {}

-- backbone + head; the logits are resized to the input (PSPNet's code aligns
-- corners there, DeepLab's does not).
local function segmenter(name, make_backbone, make_head, align_corners)
  local cls = class("models." .. name, nn.Module)
  function cls:__init(options)
    nn.Module.__init(self)
    options = options or {}
    self:add_module("backbone", make_backbone(options))
    self:add_module("head", make_head(self.backbone.channels, options))
    self.feature_channels = self.head.feature_channels
  end
  function cls:forward_features(x)
    local logits, extra = self.head(self.backbone(x))
    return kd.resize_bilinear(logits, x.shape[3], x.shape[4], align_corners), extra
  end
  function cls:forward(x) return (self:forward_features(x)) end
  papers[name] = cls
end

local function resnet_backbone(depth, default_stride)
  return function(o)
    return resnet.ResNet(depth, {output_stride = o.output_stride or default_stride, deep_stem = (o.deep_stem or 0) == 1,
                                 width = o.width or 64})
  end
end

-- The heads' widths follow the backbone's: 256 ASPP channels and 48 for the
-- low-level reduction at a stem of 64 (32 for MobileNetV2), PSP's 512.
local function scale(o, base) return (o.width or base) / base end

local function deeplab_head(base, default_stride)
  return function(channels, o)
    local s = scale(o, base)
    return heads.DeepLabV3PlusHead(channels.c1, channels.c4, o.classes or 19, o.output_stride or default_stride,
                                   {aspp = math.max(8, math.floor(256 * s)), low = math.max(4, math.floor(48 * s))})
  end
end

local function psp_head(channels, o)
  return heads.PSPHead(channels.c4, o.classes or 19, {channels = math.max(8, math.floor(512 * scale(o, 64)))})
end

for _, depth in ipairs({18, 50, 101}) do
  segmenter("pspnet_resnet" .. depth, resnet_backbone(depth, 8), psp_head, true)
  segmenter("deeplabv3plus_resnet" .. depth, resnet_backbone(depth, 16), deeplab_head(64, 16), false)
end
segmenter("deeplabv3plus_mobilenetv2",
          function(o) return MobileNetV2({output_stride = o.output_stride or 16, width = o.width}) end,
          deeplab_head(32, 16), false)

-- The options each takes: true for any integer >= 1, or the allowed values.
local takes = {}
for name in pairs(papers) do
  takes[name] = {classes = true, width = true, output_stride = {8, 16}, deep_stem = not name:find("mobilenet") and {0, 1} or nil}
end

return {models = papers, takes = takes}
