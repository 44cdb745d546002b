-- A UniMatch-style weak-to-strong consistency baseline (Yang et al., 2023):
-- the weak view's confident predictions (confidence >= threshold, 0 by
-- default as in the reference's Cityscapes configuration) supervise two
-- strong views (CutMix with another image of the batch, each with its own
-- box, after the reference's colour jitter, grayscale and blur: strong =
-- "photometric") and a feature-perturbed decoding of the weak view (channel
-- dropout on the features before the classifier); unconfident pixels count
-- as zeros in the means (unconfident = "zero", the reference's rule). The
-- shares are the reference's: 0.25, 0.25 and 0.5 of the unsupervised weight.
local common = require("kd.baselines.common")
local terms = require("kd.train.terms")

return function(options)
  local env = common.setup(options, "unimatch")
  local cfg = env.cfg
  local model = env.model()
  if not model.decode then error("unimatch: model " .. cfg.model .. " has no decode(features) for feature perturbation", 0) end
  local function scaled(share) -- the unsupervised terms' shares of the ramped weight
    if type(env.ramp) == "number" then return env.ramp * share end
    return function(iteration) return env.ramp(iteration) * share end
  end
  if cfg.strong ~= "photometric" and cfg.strong ~= "affine" then
    error("unimatch: strong must be 'photometric' or 'affine', got " .. tostring(cfg.strong), 0)
  end
  local weak = {model = "model", stream = "unlabeled", source = "model", threshold = cfg.threshold,
                unconfident = cfg.unconfident, jitter = cfg.strong == "affine",
                photometric = cfg.strong == "photometric" and common.colours or false}
  local function with(t, extra) local out = {} for k, v in pairs(t) do out[k] = v end for k, v in pairs(extra) do out[k] = v end return out end
  return env.run({
    models = {env.learner("model", model)},
    terms = {terms.cutmix(with(weak, {name = "strong1", weight = scaled(0.25)})),
             terms.cutmix(with(weak, {name = "strong2", weight = scaled(0.25)})),
             terms.feature_perturbation({model = "model", stream = "unlabeled", threshold = cfg.threshold, p = 0.5,
                                         unconfident = cfg.unconfident, weight = scaled(0.5)}),
             terms.ce({model = "model"})},
    evaluate = {"model"}, result = "model",
    probe = {{name = "weak", model = "model", threshold = cfg.threshold}}, -- the weak view's confident labels
  })
end
