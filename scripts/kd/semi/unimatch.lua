-- A UniMatch-style weak-to-strong consistency baseline (Yang et al., 2023):
-- the weak view's confident predictions (confidence >= threshold) supervise
-- two strong views (CutMix with another image of the batch, each with its own
-- box, plus brightness/contrast jitter) and a feature-perturbed decoding of
-- the weak view (channel dropout on the features before the classifier).
local common = require("kd.semi.common")

-- per image: x * a + b, a in [0.6, 1.4], b in [-0.4, 0.4] (on normalised pixels)
local function jitter(images)
  local out = images:clone()
  for k = 1, images:size(1) do
    local r = kd.rand({2}):flat()
    out:narrow(k, 1):copy_(kd.affine(images:narrow(k, 1), 0.6 + 0.8 * r[1], 0.8 * r[2] - 0.4))
  end
  return out
end

return function(options)
  local env = common.setup(options)
  local cfg = env.cfg
  local model = env.model()
  if not model.decode then error("unimatch: model " .. cfg.model .. " has no decode(features) for feature perturbation", 0) end
  local opt = env.optimizer(model:parameters())
  for iter = 1, cfg.iterations do
    opt:set_lr(env.schedule(iter - 1))
    local lb, ub = env.labeled:next(), env.unlabeled:next()
    -- pseudo-labels of the weak view, ignored below the threshold
    local probs = kd.no_grad(function() return kd.softmax(model(ub.images)) end)
    local conf, pseudo = kd.max(probs)
    local c, p = conf:flat(), pseudo:clone()
    for i = 1, #c do if c[i] < cfg.threshold then p:set(i, 255) end end
    local other_images, other_labels = kd.data.roll(ub.images), kd.data.roll(p)
    local unsup = nil
    for _ = 1, 2 do -- two strong views, each with its own boxes
      local masks = kd.data.box_masks(ub.images, {p = 0.5})
      local mixed, mixed_labels = kd.data.cutmix(jitter(ub.images), p, jitter(other_images), other_labels, masks)
      local term = kd.losses.cross_entropy(model(mixed), mixed_labels)
      unsup = unsup and unsup + term * 0.25 or term * 0.25
    end
    local _, features = model:forward_features(ub.images)
    local fp = kd.losses.cross_entropy(model:decode(kd.dropout2d(features.features, 0.5), ub.images), p)
    unsup = unsup + fp * 0.5
    local sup = kd.losses.cross_entropy(model(lb.images), lb.labels)
    local loss = sup + unsup * env.ramp(iter)
    opt:zero_grad(); loss:backward(); opt:step()
    env.log(iter, {sup = sup:item(), unsup = unsup:item()})
  end
  return env.evaluate(model)
end
