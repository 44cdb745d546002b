-- Cross Pseudo Supervision (Chen et al., 2021): two networks of one design,
-- initialised differently, each trained on the labels and on the other's
-- hard pseudo-labels (argmax) of the unlabeled images and (on = "both",
-- the reference's) of the labeled ones, weighted 6 by default. Their mean
-- distribution is the model reported.
local common = require("kd.baselines.common")
local terms = require("kd.train.terms")

return function(options)
  local env = common.setup(options, "cps")
  local a, b = env.model(), env.model()
  -- the unlabeled batch first: each network sees its batches in the reference's order
  local list = {terms.cross_pseudo({model = "a", peer = "b", weight = env.ramp}),
                terms.cross_pseudo({model = "b", peer = "a", weight = env.ramp})}
  if env.cfg.on == "both" then
    list[#list + 1] = terms.cross_pseudo({name = "cps_labeled", model = "a", peer = "b", stream = "labeled", weight = env.ramp})
    list[#list + 1] = terms.cross_pseudo({name = "cps_labeled", model = "b", peer = "a", stream = "labeled", weight = env.ramp})
  end
  list[#list + 1] = terms.ce({model = "a"})
  list[#list + 1] = terms.ce({model = "b"})
  return env.run({
    models = {env.learner("a", a), env.learner("b", b)},
    terms = list,
    evaluate = {"a", "b"}, ensembles = {{name = "pair", models = {"a", "b"}}}, result = "pair",
    probe = {{name = "a", model = "a", threshold = 0}, {name = "b", model = "b", threshold = 0}}, -- each the other's labels
  })
end
