-- distill: the loss terms students learn from, and the schedules of their
-- weights. Each term is a function of logits/features; a weight is a number
-- or a function of the iteration (a schedule).
local C = require("kd._C")

local distill = {}

-- Pixel-wise distillation: KL between the softened class distributions of
-- teacher and student at temperature T, scaled by T^2 (Hinton et al.), mean
-- over pixels. With labels (N x H x W, 255 ignored), pixels whose label the
-- teacher's class contradicts are left out (they count 0 in the mean): a
-- fine or coarse label is right where the teacher is wrong.
-- With class_weights (a tensor of one weight per class), each pixel weighs
-- the weight of the teacher's class there, and the mean is over those
-- weights: the same balancing as pseudo_ce's, for the pixels the pseudo-labels
-- leave unlabeled (most of a thin class's, where the teacher is unsure).
function distill.pixel_kd(student_logits, teacher_logits, temperature, labels, class_weights)
  local options = {temperature = temperature or 1, detach_target = true}
  if not labels and not class_weights then return kd.losses.kl_div(student_logits, teacher_logits, options) end
  options.reduction = "none"
  local per_pixel = kd.losses.kl_div(student_logits, teacher_logits, options)
  local teacher_classes = kd.argmax(teacher_logits)
  local agree = labels and C.label_agreement(teacher_classes, labels)
  if not class_weights then return (per_pixel * agree):mean() end
  local weights = C.class_weight_map(teacher_classes, class_weights)
  local total = weights:sum():item()
  if total <= 0 then error("distill.pixel_kd: the class weights of the teacher's classes sum to " .. total, 2) end
  if agree then weights = weights * agree end
  return (per_pixel * weights):sum() * (1 / total)
end

-- Pair-wise (structured) distillation from the teacher's features, the
-- squared difference of the cosine similarities between every pair of nodes.
-- pooling: "grid" (kdseg's; both maps averaged over a grid {h, w} of nodes,
-- kd.terms.pairwise_kd's default is the method's) or "max" (the structured
-- distillation paper's code: the student's map resized to the teacher's,
-- both max-pooled with a kernel and stride of int(size x scale) in ceil
-- mode, the norms taken as constants in the gradient).
function distill.pairwise_kd(student_features, teacher_features, grid, pooling, scale)
  pooling = pooling or "grid"
  if pooling == "grid" then
    if type(grid) ~= "table" then error("distill.pairwise_kd: grid {h, w} is required", 2) end
    return kd.losses.pairwise_distill(student_features, teacher_features:detach(), {grid = grid})
  end
  if pooling ~= "max" then error("distill.pairwise_kd: pooling must be 'grid' or 'max', got " .. tostring(pooling), 2) end
  scale = scale or 0.5
  if type(scale) ~= "number" or scale <= 0 or scale > 1 then error("distill.pairwise_kd: scale must be in (0, 1]", 2) end
  local h, w = teacher_features:size(3), teacher_features:size(4)
  if student_features:size(3) ~= h or student_features:size(4) ~= w then
    student_features = kd.resize_bilinear(student_features, h, w, false)
  end
  local kernel = {math.max(1, math.floor(h * scale)), math.max(1, math.floor(w * scale))}
  local pool = {kernel = kernel, stride = kernel, ceil_mode = true}
  return kd.losses.pairwise_similarity(kd.max_pool2d(student_features, pool),
                                       kd.max_pool2d(teacher_features:detach(), pool), {detach_norm = true})
end

-- Mutual learning (Zhang et al., deep mutual learning): the mean over peers
-- of KL from each peer's detached prediction to this student's.
function distill.mutual(logits, index, temperature)
  local total, count = nil, 0
  for j, peer in ipairs(logits) do
    if j ~= index then
      local term = kd.losses.kl_div(logits[index], peer:detach(), {temperature = temperature or 1, detach_target = true})
      total, count = total and total + term or term, count + 1
    end
  end
  if count == 0 then return nil end
  return count == 1 and total or total * (1 / count)
end

-- Confidence-weighted cross-entropy on pseudo-labels: each pixel's loss
-- times its weight, over the pixels that have a label.
-- class_weights (optional, a tensor of one weight per class) scales each
-- pixel's loss by its label's weight, and the mean is over those weights.
function distill.pseudo_ce(logits, labels, weights, class_weights)
  return kd.losses.cross_entropy(logits, labels, {ignore = 255, pixel_weight = weights, class_weight = class_weights})
end

-- Class weights that even out the pseudo-labels' classes: class c weighs
-- (mean / count_c)^power, mean over the classes that have pixels, at most
-- `cap`; a class without pixels weighs 1. Why: a teacher labels few pixels of
-- thin and rare classes (fences, poles: a tenth of them on SynthCity, the rest
-- ignored as unsure) and confidently labels their surroundings, and a student
-- whose logits are at 1/8 resolution then learns the surroundings there.
-- counts: pixels per class (Dataset:class_pixels()).
function distill.class_balance(counts, power, cap)
  local total, present = 0, 0
  for _, n in ipairs(counts) do
    if n > 0 then total, present = total + n, present + 1 end
  end
  local weights = kd.ones({#counts})
  for c, n in ipairs(counts) do
    if n > 0 then weights:set(c, math.min(cap or math.huge, (total / present / n) ^ power)) end
  end
  return weights
end

-- A term's weight schedules live with the loop that reads them
-- (kd.train.weights); kd.distill.schedules and kd.distill.weight are the same.
local weights = require("kd.train.weights")
distill.schedules = weights.schedules
distill.weight = weights.at

return distill
