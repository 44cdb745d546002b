-- Composability: a topology no built-in script has, as data on the one loop.
-- Two teachers of different designs; three students from one initialisation
-- (so the mean of their weights is a model), each distilling from both
-- teachers at its own temperature and learning from its peers; and an EMA
-- teacher of the mean of the students' weights, which teaches them too.
-- Logging, evaluation of every model and of the students' ensemble,
-- checkpoints and --resume come from the loop.
--   kdseg experiments/compose_two_teachers.lua [root=data/synthcity] [classes=cityscapes|table.yaml] [iterations=1000]
--                                              [crop=[64,128]] [--resume|--overwrite]
local cfg = {root = "data/synthcity", classes = "cityscapes", iterations = 1000, crop = {64, 128}}
local flags = kd.config.arguments(arg, cfg, {"resume", "overwrite"})
local root, iterations, crop = cfg.root, cfg.iterations, cfg.crop
local classes = kd.data.classes.get(cfg.classes)
local function teacher(design) -- trained once, read back when resuming
  local dir = "runs/compose_" .. design
  kd.train.stage(dir, flags, function(again)
    kd.train.run({name = "compose_" .. design, data = {root = root, classes = cfg.classes, augment = {crop = crop}}, model = {name = design},
                  train = {iterations = iterations, eval_every = 0, checkpoint_every = 20}}, {quiet = true, resume = again})
  end)
  return (kd.train.checkpoint.load_model(dir .. "/checkpoints/last.safetensors"))
end
local models = {{name = "teacher_a", model = teacher("bench_teacher"), frozen = true},
                {name = "teacher_b", model = teacher("deeplabv3plus"), frozen = true}}
local arch = {name = "bench_student", options = {classes = classes.count}}
kd.manual_seed(1)
local init = kd.models.create(arch.name, arch.options):state_dict()
local students, terms = {"s1", "s2", "s3"}, {}
local ramp = kd.distill.schedules.sigmoid_rampup(1, iterations / 2)
local function half_ramp(it) return 0.5 * ramp(it) end
for i, temperature in ipairs({1, 2, 4}) do
  local name = students[i]
  local net = kd.models.create(arch.name, arch.options)
  net:load_state_dict(init)
  models[#models + 1] = {name = name, model = net, arch = arch, optim = {lr = 0.02}}
  terms[#terms + 1] = kd.terms.ce({model = name})
  for _, t in ipairs({"teacher_a", "teacher_b", "mean"}) do
    terms[#terms + 1] = kd.terms.pixel_kd({name = "kd_" .. t, model = name, teacher = t, temperature = temperature,
                                           weight = half_ramp})
  end
  terms[#terms + 1] = kd.terms.mutual({model = name, peers = students, temperature = temperature, weight = ramp})
end
models[#models + 1] = {name = "mean", model = kd.models.create(arch.name, arch.options), arch = arch,
                       ema = {of = students, decay = 0.99}}
kd.train.stage("runs/compose", flags, function(again)
  kd.train.Loop({
    name = "compose", seed = 1, iterations = iterations, log_every = 10, checkpoint_every = 20, classes = classes,
    models = models, terms = terms,
    streams = {{name = "labeled", dataset = kd.data.Dataset{root = root, split = "train", classes = classes},
                augment = {crop = crop, hflip = true}}},
    eval = {dataset = kd.data.Dataset{root = root, split = "val", classes = classes}, ensembles = {{name = "students", models = students}}},
  }, {resume = again}):run()
end)
