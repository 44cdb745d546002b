-- kd.baselines: the semi-supervised baselines the method is measured
-- against, each a term list on the one loop:
-- fn({settings = {...}, labeled, unlabeled, val, classes[, resume]}) -> {miou, table}.
return {
  mean_teacher = require("kd.baselines.mean_teacher"),
  cps = require("kd.baselines.cps"),
  unimatch = require("kd.baselines.unimatch"),
  defaults = require("kd.baselines.common").defaults,
}
