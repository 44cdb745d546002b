-- pseudo: self-correcting pseudo-labels. A teacher's class distributions for
-- coarse and unlabeled images become labels through refinement rules - named,
-- configurable functions applied in order - and confidence weights; over
-- cycles the distributions are averaged (soft labels) and the teacher retrained.
--
-- A rule is fn(state, options, cycle) -> labels, where state holds, for a
-- batch of images: probs (N x C x H x W), pred (int32 N x H x W classes),
-- conf (float N x H x W), coarse (int32 labels or nil), labels (the labels so
-- far), classes (K) and thresholds (per class, when computed for the set).
-- A threshold in options may be a number, a function of the cycle (a
-- schedule), or "per_class" (the set's per-class percentile thresholds).
local C = require("kd._C")
local evaluate = require("kd.train.evaluate")

local pseudo = {}

local IGNORE = 255

local function threshold_for(value, state, cycle)
  if type(value) == "function" then return value(cycle) end
  if value == "per_class" then
    if not state.thresholds then error("pseudo: 'per_class' thresholds need pseudo.class_thresholds first", 0) end
    return state.thresholds
  end
  if type(value) ~= "number" then error("pseudo: a threshold must be a number, a schedule or 'per_class'", 0) end
  return value
end

pseudo.rules = {}

-- A coarse label is kept unless the teacher disagrees with confidence above
-- options.threshold (0.9; 1 keeps every one). Images without coarse labels
-- start all ignored. options.weight: the weight of a kept coarse label (an
-- annotator's label, trusted) instead of the teacher's belief in it.
function pseudo.rules.keep_coarse(state, options, cycle)
  local t = threshold_for(options.threshold or 0.9, state, cycle)
  if not state.coarse then return state.labels end
  state.coarse_weight = options.weight
  return C.pseudo_keep_coarse(state.coarse, state.pred, state.conf, type(t) == "table" and 1 or t, IGNORE)
end

-- Unlabeled pixels (gaps in coarse labels, unlabeled images) take the
-- teacher's class where its confidence is above options.threshold (0.9).
function pseudo.rules.fill(state, options, cycle)
  local t = threshold_for(options.threshold or 0.9, state, cycle)
  return C.pseudo_fill(state.labels, state.pred, state.conf, t, state.classes, IGNORE)
end

-- Pixels whose weight (the teacher's confidence in their label) is below
-- options.min_weight become ignored.
function pseudo.rules.drop_unsure(state, options)
  local w = C.pseudo_weights(state.probs, state.labels, IGNORE)
  local labels, weights = state.labels:clone(), w:flat()
  local min = options.min_weight or 0.5
  for i = 1, #weights do if weights[i] < min then labels:set(i, IGNORE) end end
  return labels
end

-- Thresholds per class: the given percentile of the confidences of the
-- pixels predicted as each class over the whole set, clamped to [min, max]:
-- a rare class that the teacher is less sure of still gets pseudo-labels.
-- (kd.semisup's cycles take their percentile, min and max from these.)
pseudo.threshold_defaults = {percentile = 50, min = 0.5, max = 0.95}

function pseudo.class_thresholds(pred, conf, classes, options)
  local o = {}
  for k, v in pairs(pseudo.threshold_defaults) do o[k] = (options or {})[k] or v end
  local t = C.class_percentiles(pred, conf, classes, o.percentile, o.max)
  for c = 1, classes do t[c] = math.min(o.max, math.max(o.min, t[c])) end
  return t
end

-- Threshold schedules over cycles (cycle counts from 1).
pseudo.schedules = {
  linear = function(from, to, cycles)
    return function(cycle) return from + (to - from) * math.min(1, (cycle - 1) / math.max(1, cycles - 1)) end
  end,
  step = function(values) return function(cycle) return values[math.min(cycle, #values)] end end,
}

-- Applies the rule list {{"keep_coarse", threshold = 0.9}, {"fill", threshold = "per_class"}, ...}
-- to a state; returns labels (int32) and weights (float: the teacher's probability
-- of each kept label, or keep_coarse's weight for a kept coarse label; 0 where
-- ignored).
function pseudo.refine(state, rules, cycle)
  state.labels = state.coarse and state.coarse:clone() or kd.full(state.pred.shape, IGNORE, "int32")
  state.coarse_weight = nil
  for i, spec in ipairs(rules) do
    local name = spec[1] or spec.rule
    local fn = type(name) == "function" and name or pseudo.rules[name]
    if not fn then error(string.format("pseudo.refine: rule %d '%s' is unknown", i, tostring(name)), 0) end
    state.labels = fn(state, spec, cycle)
  end
  local weights = C.pseudo_weights(state.probs, state.labels, IGNORE)
  if state.coarse and state.coarse_weight then
    C.pseudo_trust_coarse(weights, state.labels, state.coarse, state.coarse_weight, IGNORE)
  end
  return state.labels, weights
end

-- The teacher's class distributions for a normalised batch (no grad, eval
-- mode). With flip, from the mean of the logits of the images and of their
-- mirror images (mirrored back): evaluate.predict_logits's flip.
function pseudo.predict(teacher, images, temperature, flip)
  local was = teacher.training
  teacher:eval()
  local probs = kd.no_grad(function()
    return kd.softmax(evaluate.predict_logits(teacher, images, nil, nil, flip), temperature or 1)
  end)
  teacher:train(was)
  return probs
end

-- pred and conf of a probability map
function pseudo.decide(probs)
  local conf, pred = kd.max(probs)
  return pred, conf
end

-- Statistics of refined labels: coverage, and where true labels exist, the
-- pixels labelled right (correct), their share (accuracy) and the accuracy
-- per class (correct / pseudo-labelled as it).
function pseudo.stats(labels, truth, classes)
  local l = labels:flat()
  local covered, correct_total = 0, 0
  local per_class = {}
  for c = 1, classes do per_class[c] = {labelled = 0, correct = 0} end
  local t = truth and truth:flat() or nil
  for i = 1, #l do
    if l[i] ~= IGNORE then
      covered = covered + 1
      local pc = per_class[l[i] + 1]
      pc.labelled = pc.labelled + 1
      if t and t[i] == l[i] then pc.correct, correct_total = pc.correct + 1, correct_total + 1 end
    end
  end
  return {pixels = #l, covered = covered, coverage = covered / math.max(#l, 1), correct = t and correct_total or nil,
          accuracy = t and covered > 0 and correct_total / covered or nil, per_class = per_class}
end

return pseudo
