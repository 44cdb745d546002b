-- The two benchmark networks, exactly as ../shared/bench/NETS.md writes them
-- (bench_student 210019 parameters, bench_teacher 1401395 with 19 classes).
-- forward(x) gives logits at the input size; forward_features(x) gives the
-- logits and {features = the last feature map before the classifier}.
local kd = require("kd")
local nn = kd.nn
local class = require("kd.infra.class")
local blocks = require("kd.models.blocks")
local cbr, ResBlock = blocks.conv_bn_relu, blocks.ResBlock

local BenchStudent = class("models.bench_student", nn.Module)

function BenchStudent:__init(options)
  nn.Module.__init(self)
  local classes = options and options.classes or 19
  self:add_module("layer1", cbr(3, 16, 3, {stride = 2}))
  self:add_module("layer2", cbr(16, 32, 3, {stride = 2}))
  self:add_module("layer3", nn.Sequential(ResBlock(32, 1), ResBlock(32, 1)))
  self:add_module("layer4", cbr(32, 64, 3, {stride = 2}))
  self:add_module("layer5", nn.Sequential(ResBlock(64, 2), ResBlock(64, 4)))
  self:add_module("classifier", nn.Conv2d(64, classes, 1))
  self.feature_channels = 64
end

function BenchStudent:forward_features(x)
  local f = self.layer5(self.layer4(self.layer3(self.layer2(self.layer1(x)))))
  return blocks.upsample_to(self.classifier(f), x), {features = f}
end

function BenchStudent:forward(x) return (self:forward_features(x)) end

-- The logits from (possibly perturbed) features, for feature-perturbation consistency.
function BenchStudent:decode(features, x) return blocks.upsample_to(self.classifier(features), x) end

local BenchTeacher = class("models.bench_teacher", nn.Module)

function BenchTeacher:__init(options)
  nn.Module.__init(self)
  local classes = options and options.classes or 19
  self:add_module("layer1", cbr(3, 32, 3, {stride = 2}))
  self:add_module("layer2", cbr(32, 64, 3, {stride = 2}))
  self:add_module("layer3", nn.Sequential(ResBlock(64, 1), ResBlock(64, 1), ResBlock(64, 1)))
  self:add_module("layer4", cbr(64, 128, 3, {stride = 2}))
  self:add_module("layer5", nn.Sequential(ResBlock(128, 1), ResBlock(128, 2), ResBlock(128, 4)))
  self:add_module("aspp", blocks.ASPP(128, 64, {2, 4}))
  self:add_module("project", cbr(256, 128, 1))
  self:add_module("classifier", nn.Conv2d(128, classes, 1))
  self.feature_channels = 128
end

function BenchTeacher:forward_features(x)
  local f = self.project(self.aspp(self.layer5(self.layer4(self.layer3(self.layer2(self.layer1(x)))))))
  return blocks.upsample_to(self.classifier(f), x), {features = f}
end

function BenchTeacher:forward(x) return (self:forward_features(x)) end

function BenchTeacher:decode(features, x) return blocks.upsample_to(self.classifier(features), x) end

return {bench_student = BenchStudent, bench_teacher = BenchTeacher}
