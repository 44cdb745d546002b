-- Mean Teacher (Tarvainen & Valpola, 2017): a student trained on the labels
-- and to agree (MSE of class distributions) with a teacher that is the
-- exponential moving average of its weights, on the unlabeled images and
-- (on = "both", the reference's) the labeled ones; the student sees the
-- images colour-perturbed (perturb), the teacher as they are; the
-- consistency weight (100 by default) ramps up over `rampup` iterations.
-- The EMA teacher is the model reported.
local common = require("kd.baselines.common")
local terms = require("kd.train.terms")

return function(options)
  local env = common.setup(options, "mean_teacher")
  local cfg = env.cfg
  local student, teacher = env.model(), env.model()
  local perturb = cfg.perturb and common.colours or false
  local list = {terms.ce({model = "student"}),
                terms.mse_consistency({model = "student", teacher = "teacher", weight = env.ramp, perturb = perturb})}
  if cfg.on == "both" then
    list[#list + 1] = terms.mse_consistency({name = "consistency_labeled", model = "student", teacher = "teacher",
                                             stream = "labeled", weight = env.ramp, perturb = perturb})
  end
  return env.run({
    models = {env.learner("student", student),
              -- its teacher runs in training mode (batch statistics), as the student does
              {name = "teacher", model = teacher, arch = env.arch, forward_mode = "train",
               ema = {of = "student", decay = cfg.ema_decay, warmup = true}}},
    terms = list,
    evaluate = {"student", "teacher"}, result = "teacher",
    probe = {{name = "teacher", model = "teacher", threshold = 0}}, -- its targets: every pixel
  })
end
