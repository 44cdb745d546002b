-- kd.train: the one training loop and what runs on it: the supervised
-- trainer, the loss terms, evaluation, checkpoints and reports.
local train = {}
train.Loop = require("kd.train.loop")
train.Step = require("kd.train.step")
train.terms = require("kd.train.terms")
train.Trainer = require("kd.train.trainer")
train.stage = require("kd.train.stage")
train.weights = require("kd.train.weights")
train.rundir = require("kd.train.rundir")
train.optimizers = require("kd.train.optimizers")
train.evaluate = require("kd.train.evaluate")
train.checkpoint = require("kd.train.checkpoint")
train.report = require("kd.train.report")

-- kd.train.run(config[, {resume = true} or {overwrite = true}]) -> results
function train.run(cfg, options) return train.Trainer(cfg, options):run() end

return train
