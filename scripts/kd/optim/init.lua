-- kd.optim: optimizers (one per file), learning-rate schedules, EMA.
local optim = {}
optim.Optimizer = require("kd.optim.optimizer")
optim.SGD = require("kd.optim.sgd")
optim.AdamW = require("kd.optim.adamw")
optim.schedules = require("kd.optim.schedules")
optim.EMA = require("kd.optim.ema")
return optim
