-- kd.train: supervised training, evaluation, checkpoints and reports.
local train = {}
train.Trainer = require("kd.train.trainer")
train.evaluate = require("kd.train.evaluate")
train.checkpoint = require("kd.train.checkpoint")
train.report = require("kd.train.report")

-- kd.train.run(config[, {resume = true}]) -> results
function train.run(cfg, options) return train.Trainer(cfg, options):run() end

return train
