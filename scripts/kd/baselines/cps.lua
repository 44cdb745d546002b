-- Cross Pseudo Supervision (Chen et al., 2021): two networks of one design,
-- initialised differently, each trained on the labels and on the other's
-- hard pseudo-labels (argmax) of the unlabeled images. Their mean
-- distribution is the model reported.
local common = require("kd.baselines.common")
local terms = require("kd.train.terms")

return function(options)
  local env = common.setup(options)
  local a, b = env.model(), env.model()
  return env.run({
    models = {env.learner("a", a), env.learner("b", b)},
    -- the unlabeled batch first: each network sees its batches in the reference's order
    terms = {terms.cross_pseudo({model = "a", peer = "b", weight = env.ramp}),
             terms.cross_pseudo({model = "b", peer = "a", weight = env.ramp}),
             terms.ce({model = "a"}), terms.ce({model = "b"})},
    evaluate = {"a", "b"}, ensembles = {{name = "pair", models = {"a", "b"}}}, result = "pair",
  })
end
