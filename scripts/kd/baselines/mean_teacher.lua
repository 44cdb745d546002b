-- Mean Teacher (Tarvainen & Valpola, 2017): a student trained on the labels
-- and to agree (MSE of class distributions) with a teacher that is the
-- exponential moving average of its weights, on unlabeled images; the
-- consistency weight ramps up. The EMA teacher is the model reported.
local common = require("kd.baselines.common")
local terms = require("kd.train.terms")

return function(options)
  local env = common.setup(options)
  local student, teacher = env.model(), env.model()
  return env.run({
    models = {env.learner("student", student),
              -- its teacher runs in training mode (batch statistics), as the student does
              {name = "teacher", model = teacher, arch = env.arch, forward_mode = "train",
               ema = {of = "student", decay = env.cfg.ema_decay, warmup = true}}},
    terms = {terms.ce({model = "student"}),
             terms.mse_consistency({model = "student", teacher = "teacher", weight = env.ramp})},
    evaluate = {"student", "teacher"}, result = "teacher",
  })
end
