-- The method with the papers' networks (a benchmark, not a test): a
-- DeepLabV3+-ResNet-50 teacher and two DeepLabV3+-ResNet-18 students (the
-- pairs of UniMatch and CPS; pspnet_resnet101 / pspnet_resnet18 are those of
-- structured distillation) on SynthCity at 256 x 512, 1/8 of the training
-- images finely labeled, plus the coarse and unlabeled tiers; the fine-only
-- and all-labels baselines train the student design with the same budget.
-- Networks from scratch (no ImageNet weights can be downloaded here; give
-- converted ones with teacher_pretrained= / student_pretrained=).
--   kdseg experiments/papers_benchmark.lua [iterations=N] [teacher_iterations=N] [--resume | --overwrite]
-- About 45 minutes on 2 cores with the defaults below; runs/papers_benchmark/method/results.md.
local semisup = require("kd.method.semisup")

local cfg = {name = "papers_benchmark", root = "data/papers_benchmark", seed = 1, lr = 0.01,
             iterations = 200,         -- each student's and baseline's
             teacher_iterations = 200, -- the teacher's first training; the retraining cycle half of it
             batch_size = 8, workers = 2, crop = {128, 256}, scale = {0.5, 2.0},
             teacher = "deeplabv3plus_resnet50", student = "deeplabv3plus_resnet18",
             teacher_pretrained = false, student_pretrained = false,
             size = {train = 96, coarse = 96, val = 32, height = 256, width = 512}}
local flags = kd.config.arguments(arg, cfg, {"resume", "overwrite"})
local root = cfg.root

kd.dist.on_main(function() -- data-parallel: one rank generates, the others wait
  if kd.data.files.exists(root .. "/.complete") then return end
  print("== generating SynthCity in " .. root)
  local size = cfg.size
  kd.data.synthcity.write({root = root, train = size.train, coarse = size.coarse, val = size.val, height = size.height,
                           width = size.width, seed = 1})
  kd.data.splits.write({root = root, fractions = {"1/8"}, seed = 0})
  kd._C.write_atomic(root .. "/.complete", "")
end)

local student = {name = cfg.student, pretrained = cfg.student_pretrained}
semisup.run({
  name = cfg.name, runs_dir = "runs", seed = cfg.seed, batch_size = cfg.batch_size, workers = cfg.workers,
  data = {root = root, classes = "cityscapes", labeled = "splits/1_8/labeled.txt", unlabeled = "splits/1_8/unlabeled.txt"},
  augment = {crop = cfg.crop, scale = cfg.scale},
  teacher = {model = cfg.teacher, model_options = {pretrained = cfg.teacher_pretrained},
             iterations = cfg.teacher_iterations, lr = cfg.lr,
             retrain_iterations = math.floor(cfg.teacher_iterations / 2), retrain_lr = cfg.lr / 2},
  cycles = {count = 1},
  students = {models = {student, student}, iterations = cfg.iterations, lr = cfg.lr},
}, {resume = flags.resume, overwrite = flags.overwrite})
