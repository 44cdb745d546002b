-- A UniMatch-style weak-to-strong consistency baseline (Yang et al., 2023):
-- the weak view's confident predictions (confidence >= threshold) supervise
-- two strong views (CutMix with another image of the batch, each with its own
-- box, plus brightness/contrast jitter) and a feature-perturbed decoding of
-- the weak view (channel dropout on the features before the classifier).
local common = require("kd.baselines.common")
local terms = require("kd.train.terms")

return function(options)
  local env = common.setup(options)
  local cfg = env.cfg
  local model = env.model()
  if not model.decode then error("unimatch: model " .. cfg.model .. " has no decode(features) for feature perturbation", 0) end
  local function scaled(share) -- the unsupervised terms' shares of the ramped weight
    if type(env.ramp) == "number" then return env.ramp * share end
    return function(iteration) return env.ramp(iteration) * share end
  end
  local weak = {model = "model", stream = "unlabeled", source = "model", threshold = cfg.threshold}
  local function with(t, extra) local out = {} for k, v in pairs(t) do out[k] = v end for k, v in pairs(extra) do out[k] = v end return out end
  return env.run({
    models = {env.learner("model", model)},
    terms = {terms.cutmix(with(weak, {name = "strong1", jitter = true, weight = scaled(0.25)})),
             terms.cutmix(with(weak, {name = "strong2", jitter = true, weight = scaled(0.25)})),
             terms.feature_perturbation({model = "model", stream = "unlabeled", threshold = cfg.threshold, p = 0.5,
                                         weight = scaled(0.5)}),
             terms.ce({model = "model"})},
    evaluate = {"model"}, result = "model",
  })
end
