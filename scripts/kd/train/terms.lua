-- terms: the loss terms kdseg ships for the loop (kd.train.Loop). Each
-- constructor takes a table of settings and returns a plain term table
-- {name, model, weight, fn}; fn(step, term) returns the term's value, a
-- one-element tensor. A script passes its own term the same way:
--   {name = "feature_mse", model = "a", weight = 0.1, fn = function(step)
--      local _, fa = step:output("a", "labeled"); local _, fb = step:output("b", "labeled")
--      return kd.losses.mse(fa.features, fb.features:detach()) end}
-- Every setting's default is declared here, with the term that uses it.
local distill = require("kd.method.distill")
local holistic = require("kd.method.holistic")
local mix = require("kd.data.mix")

local terms = {}

-- Every term's settings and their defaults, declared here once (the
-- method's settings refer to them: kd.students' grid and strong_p).
terms.defaults = {
  ce = {stream = "labeled", pixel_weights = false, class_weights = false, ignore = 255},
  pseudo_ce = {stream = "pseudo", class_weights = false},
  pixel_kd = {teacher = false, streams = {"labeled"}, temperature = 1, respect_labels = false, class_weights = false},
  pairwise_kd = {teacher = false, streams = {"labeled"}, grid = {4, 8}, feature = "features", pooling = "grid", scale = 0.5},
  mutual = {peers = false, stream = "labeled", temperature = 1},
  mse_consistency = {teacher = false, stream = "unlabeled", perturb = false},
  cross_pseudo = {peer = false, stream = "unlabeled"},
  cutmix = {stream = "pseudo", source = false, threshold = 0.95, p = 0.5, jitter = false, photometric = false,
            unconfident = "ignore", class_weights = false, view = false},
  feature_perturbation = {stream = "unlabeled", source = false, threshold = 0.95, p = 0.5, unconfident = "ignore"},
  critic = {teacher = false, students = false, stream = "labeled"},
  holistic_kd = {critic = false, stream = "labeled"},
}

-- A term table from settings, the defaults filled in and unknown keys refused.
local function make(kind, settings, defaults, fn)
  if type(settings) ~= "table" then error("terms." .. kind .. ": a table of settings is required", 3) end
  local t = {}
  for key, value in pairs(defaults) do t[key] = type(value) == "table" and {unpack(value)} or value end
  for key, value in pairs(settings) do
    if defaults[key] == nil and key ~= "model" and key ~= "name" and key ~= "weight" then
      error(string.format("terms.%s: unknown setting '%s'", kind, tostring(key)), 3)
    end
    t[key] = value
  end
  if type(t.model) ~= "string" then error("terms." .. kind .. ": model (the name of the model that learns) is required", 3) end
  t.name = t.name or kind
  if t.weight == nil then t.weight = 1 end
  t.fn = fn
  return t
end

local function sum_over(list, fn)
  local total
  for _, x in ipairs(list) do
    local v = fn(x)
    total = total and total + v or v
  end
  return total
end

-- Cross-entropy on a stream's labels; pixel_weights: each pixel's loss times
-- the batch's weight map (pseudo-labelled images carry one); class_weights:
-- a tensor of one weight per class.
function terms.ce(settings)
  local t = make("ce", settings, terms.defaults.ce,
    function(step, t)
      local batch = step:batch(t.stream)
      return kd.losses.cross_entropy(step:output(t.model, t.stream), batch.labels,
                                     {ignore = t.ignore, pixel_weight = t.pixel_weights and batch.weights or nil,
                                      class_weight = t.class_weights or nil})
    end)
  t.labels_from = t.stream -- the loop checks that the stream's images have labels
  return t
end

-- Confidence-weighted cross-entropy on pseudo-labels (kd.distill.pseudo_ce):
-- the stream's labels and per-pixel weights, optionally class-weighted.
function terms.pseudo_ce(settings)
  local t = make("pseudo", settings, terms.defaults.pseudo_ce,
    function(step, t)
      local batch = step:batch(t.stream)
      return distill.pseudo_ce(step:output(t.model, t.stream), batch.labels, batch.weights, t.class_weights or nil)
    end)
  t.labels_from = t.stream
  return t
end

-- Pixel-wise distillation from any model at a temperature (kd.distill.pixel_kd),
-- summed over streams; respect_labels leaves out pixels whose label the
-- teacher contradicts; class_weights weighs each pixel by the teacher's class.
function terms.pixel_kd(settings)
  return make("pixel_kd", settings, terms.defaults.pixel_kd,
    function(step, t)
      if not t.teacher then error("terms.pixel_kd: teacher (a model's name) is required", 0) end
      return sum_over(t.streams, function(s)
        local labels = t.respect_labels and step:batch(s).labels or nil
        return distill.pixel_kd(step:output(t.model, s), step:output(t.teacher, s), t.temperature, labels,
                                t.class_weights or nil)
      end)
    end)
end

-- Pair-wise (structured) distillation from any model's named features
-- (kd.distill.pairwise_kd), summed over streams.
function terms.pairwise_kd(settings)
  return make("pairwise", settings, terms.defaults.pairwise_kd,
    function(step, t)
      if not t.teacher then error("terms.pairwise_kd: teacher (a model's name) is required", 0) end
      return sum_over(t.streams, function(s)
        local _, student = step:output(t.model, s)
        local _, teacher = step:output(t.teacher, s)
        local a, b = student and student[t.feature], teacher and teacher[t.feature]
        if not a or not b then error("terms.pairwise_kd: a model gives no '" .. t.feature .. "' features", 0) end
        return distill.pairwise_kd(a, b, t.grid, t.pooling, t.scale)
      end)
    end)
end

-- Mutual learning: the mean KL from each peer's detached prediction
-- (kd.distill.mutual). peers: the models learning together (the model itself
-- may be among them; it is left out of its own mean).
function terms.mutual(settings)
  return make("mutual", settings, terms.defaults.mutual,
    function(step, t)
      if type(t.peers) ~= "table" then error("terms.mutual: peers (a list of model names) is required", 0) end
      local logits, index = {}, nil
      for _, name in ipairs(t.peers) do
        if name == t.model then index = #logits + 1 end
        logits[#logits + 1] = step:output(name, t.stream)
      end
      if not index then logits[#logits + 1] = step:output(t.model, t.stream); index = #logits end
      return distill.mutual(logits, index, t.temperature)
    end)
end

-- Mean Teacher's consistency: the squared difference of the model's class
-- distribution and the teacher's (no gradient to the teacher). perturb: the
-- model sees the stream's images with these colour changes
-- (kd.data.photometric's options), the teacher the images as they are.
function terms.mse_consistency(settings)
  local t = make("consistency", settings, terms.defaults.mse_consistency,
    function(step, t)
      if not t.teacher then error("terms.mse_consistency: teacher (a model's name) is required", 0) end
      local input = t.perturb and t.perturbed or t.stream
      return kd.losses.mse(kd.softmax((step:output(t.model, input))), step:target(t.teacher, t.stream))
    end)
  if t.perturb then
    if type(t.perturb) ~= "table" then error("terms.mse_consistency: perturb must be false or kd.data.photometric's options", 2) end
    t.perturbed = t.stream .. "_perturbed"
    t.views = {[t.perturbed] = function(step)
      return {images = kd.data.photometric(step:batch(t.stream).images, t.perturb)}
    end}
  end
  return t
end

-- Cross pseudo supervision: cross-entropy to the peer's hard prediction
-- (argmax of its detached logits) on the same images.
function terms.cross_pseudo(settings)
  return make("cps", settings, terms.defaults.cross_pseudo,
    function(step, t)
      if not t.peer then error("terms.cross_pseudo: peer (a model's name) is required", 0) end
      return kd.losses.cross_entropy(step:output(t.model, t.stream), step:output(t.peer, t.stream):detach():argmax())
    end)
end

-- The source model's prediction on a stream as hard labels, 255 where its
-- confidence is under threshold; made once per step. With unconfident =
-- "zero" (UniMatch's rule) the labels are kept everywhere on the image and
-- a weight map says which are confident (1) or not (0): a mean over the
-- image's pixels, the unconfident counting as zeros, where "ignore" leaves
-- them out of the mean. Returns labels and the weight map (or nil).
local function confident_labels(step, source, stream, threshold, unconfident)
  unconfident = unconfident or "ignore"
  if unconfident ~= "ignore" and unconfident ~= "zero" then
    error("terms: unconfident must be 'ignore' or 'zero', got " .. tostring(unconfident), 0)
  end
  local key = "labels\0" .. source .. "\0" .. stream .. "\0" .. threshold .. "\0" .. unconfident
  if step.views[key] then return step.views[key][1], step.views[key][2] end
  local conf, predicted = kd.max(step:target(source, stream))
  -- in C (a loop over the pixels here took 16-26 ms a step at batch 8 x 64 x 128):
  -- valid marks padding, no pixel of the image (labels 255, weight 0)
  local labels, weights = kd._C.confident_labels(predicted, conf, threshold, unconfident == "zero",
                                                 step:batch(stream).valid, 255)
  step.views[key] = {labels, weights}
  return labels, weights
end
terms.confident_labels = confident_labels

-- Per image: x * a + b, a in [0.6, 1.4], b in [-0.4, 0.4] (on normalised
-- pixels), the strong view's colour change.
local function jitter(images)
  local out = images:clone()
  for k = 1, images:size(1) do
    local r = kd.rand({2}):flat()
    out:narrow(k, 1):copy_(kd.affine(images:narrow(k, 1), 0.6 + 0.8 * r[1], 0.8 * r[2] - 0.4))
  end
  return out
end

-- CutMix weak-to-strong consistency: each image of the stream's batch mixed
-- with the next one (the last with the first) inside random boxes (p: the
-- chance of a box per image), supervised by the mixed labels of the weak view.
-- The labels are the stream's own (pseudo-labels, with their weights) unless
-- source names a model, whose confident prediction (>= threshold) on the weak
-- view is used (unconfident pixels: "ignore" or "zero", confident_labels);
-- jitter adds kdseg's affine colour change to the strong view, photometric
-- kd.data.photometric's (UniMatch's: colour jitter, grayscale, blur), drawn
-- for each image before mixing. The strong
-- view is made once per step and per term name (so several students share
-- it); view names it to share it between terms of other names.
function terms.cutmix(settings)
  local t = make("strong", settings, terms.defaults.cutmix,
    function(step, t)
      local view = step:batch(t.view)
      return distill.pseudo_ce(step:output(t.model, t.view), view.labels, view.weights, t.class_weights or nil)
    end)
  if t.photometric and type(t.photometric) ~= "table" then
    error("terms.cutmix: photometric must be false or kd.data.photometric's options", 2)
  end
  t.view = t.view or (t.name .. "_view")
  t.views = {[t.view] = function(step)
    local batch = step:batch(t.stream)
    local labels, confident = batch.labels, nil
    if t.source then labels, confident = confident_labels(step, t.source, t.stream, t.threshold, t.unconfident) end
    local masks = kd.data.box_masks(batch.images, {p = t.p})
    local images, other_images = batch.images, mix.roll(batch.images)
    if t.jitter then images, other_images = jitter(images), jitter(other_images) end
    if t.photometric then
      images, other_images = kd.data.photometric(images, t.photometric), kd.data.photometric(other_images, t.photometric)
    end
    local mixed, mixed_labels = mix.cutmix(images, labels, other_images, mix.roll(labels), masks)
    local pixel_weights = confident or (not t.source and batch.weights) or nil
    local weights = nil
    if pixel_weights then
      weights = pixel_weights:clone()
      kd._C.mix_where(weights, mix.roll(pixel_weights), masks)
    end
    return {images = mixed, labels = mixed_labels, weights = weights}
  end}
  return t
end

-- Feature-perturbation consistency (UniMatch): the model's features on the
-- stream with channel dropout (p), decoded again (model:decode), supervised
-- by the source model's confident prediction (>= threshold) on the images.
function terms.feature_perturbation(settings)
  local t = make("fp", settings, terms.defaults.feature_perturbation,
    function(step, t)
      local model = step:model(t.model)
      if not model.decode then error("terms.feature_perturbation: model " .. t.model .. " has no decode(features, images)", 0) end
      local labels, weights = confident_labels(step, t.source or t.model, t.stream, t.threshold, t.unconfident)
      local _, extras = step:output(t.model, t.stream)
      local decoded = model:decode(kd.dropout2d(extras.features, t.p), step:batch(t.stream).images)
      return kd.losses.cross_entropy(decoded, labels, {pixel_weight = weights})
    end)
  return t
end

-- Holistic distillation's critic (kd.method.holistic): the model of this
-- term is the critic; it learns to score the teacher's maps above the
-- students' (detached) on a stream. Give it its own optimizer (the paper's
-- is Adam at 4e-4) and save = false, evaluate = false in the loop.
function terms.critic(settings)
  return make("critic", settings, terms.defaults.critic,
    function(step, t)
      if not t.teacher then error("terms.critic: teacher (a model's name) is required", 0) end
      if type(t.students) ~= "table" or #t.students == 0 then error("terms.critic: students (model names) are required", 0) end
      local list = {}
      for i, name in ipairs(t.students) do list[i] = step:output(name, t.stream) end
      return holistic.critic_loss(step:model(t.model), step:batch(t.stream).images, step:output(t.teacher, t.stream), list)
    end)
end

-- Holistic distillation, a student's side: minus the critic's score of its
-- map (the critic's weights get no gradient from it).
function terms.holistic_kd(settings)
  return make("holistic", settings, terms.defaults.holistic_kd,
    function(step, t)
      if not t.critic then error("terms.holistic_kd: critic (a model's name) is required", 0) end
      return holistic.student_loss(step:model(t.critic), step:batch(t.stream).images, step:output(t.model, t.stream))
    end)
end

return terms
