-- kd.semi: the semi-supervised baselines the method is measured against,
-- each fn({settings = {...}, labeled, unlabeled, val, classes}) -> {miou, table}.
return {
  mean_teacher = require("kd.semi.mean_teacher"),
  cps = require("kd.semi.cps"),
  unimatch = require("kd.semi.unimatch"),
  defaults = require("kd.semi.common").defaults,
}
