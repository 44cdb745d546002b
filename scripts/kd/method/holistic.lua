-- holistic: holistic (adversarial) distillation, the third term of
-- structured knowledge distillation (Liu et al., CVPR 2019): a critic D
-- scores a segmentation map together with its image, and learns to tell
-- the teacher's maps from the students' as a Wasserstein critic,
--   critic loss   mean D(image, student map) - mean D(image, teacher map)
--   student term  - mean D(image, student map)
-- The paper keeps D 1-Lipschitz with a gradient penalty, which needs
-- gradients of gradients; here every layer of D is spectrally normalised
-- (kd.nn.SNConv2d, Miyato et al. 2018) instead, the documented alternative
-- (SAGAN-style critics use both). Maps are class distributions (softmax) at
-- the student's logits' size; the teacher's are resized to it, the image
-- is resized to it and concatenated.
--   local critic = kd.holistic.Critic(19, {width = 32})
--   terms: kd.terms.critic{model = "critic", teacher = "teacher", students = {"s1", "s2"}},
--          kd.terms.holistic_kd{model = "s1", critic = "critic", weight = 0.1}
local kd = require("kd")
local class = require("kd.infra.class")
local Module = require("kd.nn.module")

local holistic = {}

-- The critic: 3x3 spectrally normalised convolutions, stride 2 (so it never
-- runs out of pixels), widths w, 2w, 4w, each followed by LeakyReLU(0.2),
-- then a 1x1 convolution to one score per position, averaged per image.
local Critic = class("holistic.Critic", Module)
holistic.Critic = Critic

function Critic:__init(classes, options)
  Module.__init(self)
  options = options or {}
  for key in pairs(options) do
    if key ~= "width" and key ~= "depth" then error("holistic.Critic: unknown option '" .. tostring(key) .. "'", 2) end
  end
  if type(classes) ~= "number" or classes < 1 or classes % 1 ~= 0 then
    error("holistic.Critic: classes must be a positive integer", 2)
  end
  local width, depth = options.width or 32, options.depth or 3
  if type(width) ~= "number" or width < 1 or width % 1 ~= 0 then error("holistic.Critic: width must be a positive integer", 2) end
  if type(depth) ~= "number" or depth < 0 or depth % 1 ~= 0 then error("holistic.Critic: depth must be an integer >= 0", 2) end
  self.classes, self.depth = classes, depth
  local channels = classes + 3
  self.layers = {}
  for i = 1, depth do
    local out = width * 2 ^ (i - 1)
    self.layers[i] = self:add_module("conv" .. i, kd.nn.SNConv2d(channels, out, 3, {stride = 2, padding = 1}))
    channels = out
  end
  self:add_module("score", kd.nn.SNConv2d(channels, 1, 1))
end

-- Scores (N x 1 x 1 x 1) of critic inputs (holistic.input); detach: no
-- gradient to the critic's weights.
function Critic:forward(x, options)
  if x.ndim ~= 4 or x:size(2) ~= self.classes + 3 then
    error(string.format("holistic.Critic: input must be N x %d x H x W (image and %d class maps), got %s",
                        self.classes + 3, self.classes, table.concat(x.shape, "x")), 2)
  end
  for _, layer in ipairs(self.layers) do x = kd.leaky_relu(layer(x, options), 0.2) end
  return kd.global_avg_pool(self.score(x, options))
end

-- The critic's input: the image resized to the logits' size, then the
-- class distribution of the logits (resized first to `size` = {h, w} when given).
function holistic.input(images, logits, size)
  if size and (logits:size(3) ~= size[1] or logits:size(4) ~= size[2]) then
    logits = kd.resize_bilinear(logits, size[1], size[2])
  end
  local h, w = logits:size(3), logits:size(4)
  return kd.concat({kd.resize_bilinear(images, h, w), kd.softmax(logits)})
end

-- The critic's loss: mean score of the students' (detached) maps minus the
-- teacher's.
function holistic.critic_loss(critic, images, teacher_logits, student_logits_list)
  local fake
  for _, logits in ipairs(student_logits_list) do
    local s = critic(holistic.input(images, logits:detach())):mean()
    fake = fake and fake + s or s
  end
  local size = {student_logits_list[1]:size(3), student_logits_list[1]:size(4)}
  local real = critic(holistic.input(images, teacher_logits:detach(), size)):mean()
  return fake * (1 / #student_logits_list) - real
end

-- A student's adversarial term: minus the critic's mean score of its map,
-- the critic's weights held fixed.
function holistic.student_loss(critic, images, student_logits)
  return -critic(holistic.input(images, student_logits), {detach = true}):mean()
end

return holistic
