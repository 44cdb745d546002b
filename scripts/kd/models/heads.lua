-- heads: the segmentation heads of the papers, on any backbone that returns
-- {c1 = 1/4 features, c4 = the deepest features}.
--
-- ASPP (Chen et al. 2017) with torchvision's names (convs.0 the 1x1 branch,
-- convs.1-3 the atrous branches, convs.4 the image pooling, project), so
-- torchvision's DeepLabV3 classifier.0 weights fit it. torchvision's project
-- ends in Dropout(0.5), which kdseg has no elementwise version of; it has no
-- parameters and is left out.
-- DeepLabV3+ decoder (Chen et al. 2018): ASPP at the backbone's stride, x4
-- bilinear up, concatenated with a 48-channel 1x1 reduction of c1, two 3x3
-- convolutions, a 1x1 classifier.
-- PSP head (Zhao et al. 2017), named as the PSPNet code (semseg) names it:
-- ppm.features.i = pool to bins(i) x bins(i), 1x1 conv to c/4, BN, ReLU;
-- cls = 3x3 conv to 512, BN, ReLU, Dropout2d(0.1), 1x1 classifier. Its
-- resizes align corners, as that code's do.
local kd = require("kd")
local nn = kd.nn
local class = require("kd.infra.class")

local heads = {}

local function cbr(cin, cout, k, dilation)
  dilation = dilation or 1
  return nn.Sequential(nn.Conv2d(cin, cout, k, {padding = k == 3 and dilation or 0, dilation = dilation, bias = false}),
                       nn.BatchNorm2d(cout), nn.ReLU())
end

-- Average pooling to a fixed grid (PyTorch's AdaptiveAvgPool2d).
local AdaptiveAvgPool2d = class("nn.AdaptiveAvgPool2d", nn.Module)
function AdaptiveAvgPool2d:__init(size) nn.Module.__init(self); self.size = size end
function AdaptiveAvgPool2d:forward(x) return kd.adaptive_avg_pool2d(x, self.size, self.size) end
function AdaptiveAvgPool2d:extra_repr() return tostring(self.size) end

local ASPP = class("heads.ASPP", nn.Module)
heads.ASPP = ASPP

function ASPP:__init(cin, cout, rates)
  nn.Module.__init(self)
  local convs = {cbr(cin, cout, 1)}
  for i, rate in ipairs(rates) do convs[i + 1] = cbr(cin, cout, 3, rate) end
  convs[#convs + 1] = nn.Sequential(AdaptiveAvgPool2d(1), nn.Conv2d(cin, cout, 1, {bias = false}),
                                    nn.BatchNorm2d(cout), nn.ReLU())
  self:add_module("convs", nn.Sequential(convs))
  self:add_module("project", cbr(cout * #convs, cout, 1))
end

function ASPP:forward(x)
  local outs, n = {}, self.convs:size()
  for i = 1, n - 1 do outs[i] = self.convs:get(i)(x) end
  outs[n] = kd.resize_bilinear(self.convs:get(n)(x), x.shape[3], x.shape[4], false)
  return self.project(kd.concat(outs))
end

-- ASPP's rates for the backbone's output stride (the DeepLabV3 paper's).
heads.aspp_rates = {[8] = {12, 24, 36}, [16] = {6, 12, 18}, [32] = {3, 6, 9}}

-- DeepLabV3+'s head: options aspp (channels, 256), low (the c1 reduction, 48).
local DeepLabV3PlusHead = class("heads.DeepLabV3PlusHead", nn.Module)
heads.DeepLabV3PlusHead = DeepLabV3PlusHead

function DeepLabV3PlusHead:__init(c1, c4, classes, output_stride, options)
  nn.Module.__init(self)
  local c, low = options.aspp or 256, options.low or 48
  self:add_module("aspp", ASPP(c4, c, heads.aspp_rates[output_stride]))
  self:add_module("reduce", cbr(c1, low, 1))
  self:add_module("fuse", nn.Sequential(cbr(c + low, c, 3), cbr(c, c, 3)))
  self:add_module("classifier", nn.Conv2d(c, classes, 1))
  self.feature_channels = c
end

-- logits at 1/4, {features = ASPP's output, decoder = the fused 1/4 map}
function DeepLabV3PlusHead:forward(f)
  local high = self.aspp(f.c4)
  local up = kd.resize_bilinear(high, f.c1.shape[3], f.c1.shape[4], false)
  local fused = self.fuse(kd.concat({up, self.reduce(f.c1)}))
  return self.classifier(fused), {features = high, decoder = fused}
end

local PSPHead = class("heads.PSPHead", nn.Module)
heads.PSPHead = PSPHead

heads.psp_bins = {1, 2, 3, 6}

function PSPHead:__init(c4, classes, options)
  nn.Module.__init(self)
  local reduction, c = c4 / #heads.psp_bins, options.channels or 512
  local ppm = nn.Module()
  local features = {}
  for i, bins in ipairs(heads.psp_bins) do
    features[i] = nn.Sequential(AdaptiveAvgPool2d(bins), nn.Conv2d(c4, reduction, 1, {bias = false}),
                                nn.BatchNorm2d(reduction), nn.ReLU())
  end
  ppm:add_module("features", nn.Sequential(features))
  self:add_module("ppm", ppm)
  self:add_module("cls", nn.Sequential(nn.Conv2d(2 * c4, c, 3, {padding = 1, bias = false}), nn.BatchNorm2d(c),
                                       nn.ReLU(), nn.Dropout2d(0.1), nn.Conv2d(c, classes, 1)))
  self.feature_channels = c
end

-- logits at the backbone's stride, {features = the map before the classifier}
function PSPHead:forward(f)
  local x = f.c4
  local outs = {x}
  for i = 1, #heads.psp_bins do
    outs[i + 1] = kd.resize_bilinear(self.ppm.features:get(i)(x), x.shape[3], x.shape[4], true)
  end
  local y = kd.concat(outs)
  for i = 1, 3 do y = self.cls:get(i)(y) end
  local features = y
  y = self.cls:get(5)(self.cls:get(4)(y))
  return y, {features = features}
end

return heads
