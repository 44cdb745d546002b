-- The model zoo, configs and overrides, overfitting one batch, and the
-- trainer end to end on a small SynthCity.
local h = require("harness")
local C = kd._C
local T = {}

local tmp = (os.getenv("TMPDIR") or "/tmp") .. "/kdseg-lua-models-" .. C.getpid()

-- The papers' networks at a narrow width (their real widths are checked
-- against PyTorch in test_papers.lua): the same code, a fraction of the time.
local function small(name, options)
  local takes = kd.models.options(name)
  if name:find("_resnet") or name:find("_mobilenetv2") then options.width = takes.width and 8 end
  return options
end

function T.zoo_counts_shapes_features()
  h.eq(kd.models.bench_student({classes = 19}):num_parameters(), 210019, "bench_student parameters")
  h.eq(kd.models.bench_teacher({classes = 19}):num_parameters(), 1401395, "bench_teacher parameters")
  local x = kd.randn({2, 3, 64, 96})
  for _, name in ipairs(kd.models.names()) do
    local net = kd.models.create(name, small(name, {classes = 5}))
    local logits, extra = net:forward_features(x)
    h.eq(table.concat(logits.shape, "x"), "2x5x64x96", name .. " logits at the input size")
    h.eq(extra.features:size(2), net.feature_channels, name .. " feature channels")
    h.truthy(kd.models.flops(net, {1, 3, 64, 96}) > 1e6, name .. " FLOPs")
  end
  -- bench_student's FLOPs by hand at 128 x 256 (2 x multiply-adds of its convolutions)
  local by_hand = 2 * (16 * 27 * 64 * 128 + 32 * 144 * 32 * 64 + 4 * 32 * 288 * 32 * 64 + 64 * 288 * 16 * 32
                       + 4 * 64 * 576 * 16 * 32 + 19 * 64 * 16 * 32)
  h.eq(kd.models.flops(kd.models.bench_student(), {1, 3, 128, 256}), by_hand, "bench_student FLOPs")
  h.raises(function() kd.models.create("resnet9000") end, "unknown model 'resnet9000'")
  -- kdseg models' count at full resolution from two small forwards is the direct count
  for _, name in ipairs({"pspnet_resnet18", "deeplabv3plus_mobilenetv2", "deeplabv3plus", "erfnet"}) do
    local net = kd.models.create(name, small(name, {classes = 5}))
    h.eq(kd.models.flops_at(net, 160, 224), kd.models.flops(net, {1, 3, 160, 224}), name .. " FLOPs by two small forwards")
  end
end

function T.state_dict_round_trip_through_safetensors()
  os.execute("mkdir -p " .. tmp)
  for _, name in ipairs(kd.models.names()) do
    kd.manual_seed(1)
    local a = kd.models.create(name, small(name, {classes = 4}))
    a:forward(kd.randn({2, 3, 32, 32})) -- moves BN statistics away from their start
    kd.save(tmp .. "/m.safetensors", a:state_dict())
    kd.manual_seed(2)
    local b = kd.models.create(name, small(name, {classes = 4}))
    b:load_state_dict((kd.load(tmp .. "/m.safetensors")))
    a:eval(); b:eval()
    local x = kd.randn({1, 3, 32, 32})
    h.eq((kd.no_grad(a, x) - kd.no_grad(b, x)):sum_squares(), 0, name .. " outputs equal after loading")
  end
  os.execute("rm -rf " .. tmp)
end

function T.config_merge_and_overrides()
  local cfg = kd.train.Trainer.resolve({name = "x", optim = {lr = 0.5}})
  h.eq(cfg.optim.lr, 0.5, "config value")
  h.eq(cfg.optim.momentum, 0.9, "default kept")
  kd.config.override(cfg, "optim.lr=0.02")
  kd.config.override(cfg, "data.augment.crop=[64, 128]")
  kd.config.override(cfg, "train.clip_grad=1.5")
  kd.config.override(cfg, "model.name=erfnet")
  kd.config.override(cfg, "data.augment.hflip=false")
  h.eq(cfg.optim.lr, 0.02, "override a number")
  h.eq(cfg.data.augment.crop[2], 128, "override a list")
  h.eq(cfg.model.name, "erfnet", "override a string")
  h.eq(cfg.data.augment.hflip, false, "override a boolean")
  h.raises(function() kd.config.override(cfg, "optim.learning_rate=1") end, "unknown config key 'optim.learning_rate'")
  h.raises(function() kd.config.override(cfg, "optimm.lr=1") end, "unknown config key 'optimm.lr'")
  h.raises(function() kd.config.override(cfg, "no equals sign") end, "must look like key=value")
  h.raises(function() kd.train.Trainer.resolve({optim = {lrr = 1}}, "my.lua") end, "my.lua: unknown config key 'optim.lrr'")
  -- kinds: each value has its default's; an empty table (JSON {} or []) for
  -- a section changes nothing in it
  local empty = kd.train.Trainer.resolve({model = {}, data = {augment = {}}})
  h.eq(empty.model.name, "bench_student", "model = {} keeps the model's defaults")
  h.eq(empty.data.augment.crop[1], 128, "augment = {} keeps the crop")
  h.raises(function() kd.train.Trainer.resolve({model = {1}}, "c.json") end, "c.json: 'model' must be a section, got a list")
  h.raises(function() kd.train.Trainer.resolve({data = {batch_size = "two"}}, "c.yaml") end,
           "c.yaml: 'data.batch_size' must be a number, got 'two'")
  h.raises(function() kd.train.Trainer.resolve({data = {augment = {crop = 64}}}, "c.yaml") end,
           "c.yaml: 'data.augment.crop' must be a list, got 64")
  h.raises(function() kd.train.Trainer.resolve({optim = {lr = 0 / 0}}, "c.lua") end, "'optim.lr' must be a finite number")
  h.raises(function() kd.train.Trainer.resolve({train = {iterations = 0}}, "c.lua") end,
           "c.lua: 'train.iterations' must be an integer >= 1, got 0")
  h.raises(function() kd.train.Trainer.resolve({data = {augment = {hflip = "yes"}}}, "c.lua") end,
           "'data.augment.hflip' must be true or false")
  local path = os.tmpname()
  C.write_atomic(path .. ".yaml", "name: from_yaml\noptim:\n  lr: 0.03\n")
  local y = kd.train.Trainer.resolve(kd.config.load(path .. ".yaml"))
  h.eq(y.name, "from_yaml", "YAML config")
  h.eq(y.optim.lr, 0.03, "YAML nested value")
  os.remove(path .. ".yaml"); os.remove(path)
end

local function small_synthcity(root)
  kd.data.synthcity.write({root = root, train = 16, coarse = 0, val = 8, height = 64, width = 128, seed = 21})
end

function T.overfits_one_batch()
  local root = tmp .. "/overfit" -- at the bench size: at 64 x 128 the 1/8 output grid is too coarse for thin objects
  kd.data.synthcity.write({root = root, train = 2, coarse = 0, val = 0, height = 128, width = 256, seed = 21})
  local ds = kd.data.Dataset({root = root, split = "train"})
  local batch = kd.data.Loader(ds, {batch_size = 2}):next()
  kd.manual_seed(5)
  local net = kd.models.bench_student({classes = 19})
  local opt = kd.optim.AdamW(net:parameters(), {lr = 0.01, weight_decay = 0})
  for _ = 1, 120 do
    local loss = kd.losses.cross_entropy(net(batch.images), batch.labels)
    opt:zero_grad(); loss:backward(); opt:step()
  end
  local prediction = kd.no_grad(function() return net(batch.images):argmax() end)
  local right, counted, p, l = 0, 0, prediction:flat(), batch.labels:flat()
  for i = 1, #p do
    if l[i] ~= 255 then counted = counted + 1; if p[i] == l[i] then right = right + 1 end end
  end
  h.truthy(right / counted >= 0.95, string.format("overfit pixel accuracy %.3f, must be >= 0.95", right / counted))
  os.execute("rm -rf " .. root)
end

function T.trains_bench_student_above_chance()
  local root = tmp .. "/e2e"
  small_synthcity(root)
  local results = kd.train.run({
    name = "e2e", runs_dir = tmp .. "/runs", seed = 2,
    data = {root = root, batch_size = 8, workers = 2, augment = {crop = {64, 128}, scale = {0.75, 1.25}}},
    model = {name = "bench_student"}, optim = {lr = 0.02},
    train = {iterations = 250, log_every = 50, eval_every = 125, checkpoint_every = 125, grids = 2},
  }, {quiet = true})
  -- chance: 19 classes, the commonest (road) covers about a third of the pixels
  h.truthy(results.final_miou > 0.2, string.format("validation mIoU %.3f after 250 iterations, must be > 0.2", results.final_miou))
  for _, f in ipairs({"config.json", "metrics.jsonl", "results.json", "report.html", "checkpoints/best.safetensors",
                      "checkpoints/last.safetensors", "checkpoints/state.safetensors", "grids/iter_0000250.png"}) do
    h.truthy(kd.data.files.exists(tmp .. "/runs/e2e/" .. f), "run writes " .. f)
  end
  local html = kd.data.files.read(tmp .. "/runs/e2e/report.html")
  h.truthy(html:find("<svg", 1, true) and html:find("data:image/png;base64,", 1, true), "report: inline SVG and images")
  h.truthy(not html:find("src=['\"]https?:") and not html:find("<link", 1, true), "report: nothing fetched from a network")
  h.truthy(html:find("road", 1, true), "report: per-class table")
  os.execute("rm -rf " .. tmp)
end

-- The trainer trains in training mode whatever mode the model came in, and
-- with train.freeze_bn keeps the batch norms' running statistics (their
-- weights still learn).
function T.trainer_modes_and_freeze_bn()
  local root = tmp .. "/modes"
  small_synthcity(root)
  local function trainer(freeze)
    kd.manual_seed(4)
    local model = kd.models.bench_student({classes = 19}):eval() -- as a loaded checkpoint comes
    local tr = kd.train.Trainer({name = "modes_" .. tostring(freeze), runs_dir = tmp .. "/runs", seed = 4,
                                 data = {root = root, batch_size = 4, workers = 1, augment = {crop = {32, 64}}},
                                 train = {iterations = 2, eval_every = 0, checkpoint_every = 0, freeze_bn = freeze}},
                                {quiet = true, model = model})
    local first = model.layer1:children() -- conv, batch norm, ReLU
    return tr, first[2], first[1]
  end
  for _, freeze in ipairs({false, true}) do
    local tr, bn, conv = trainer(freeze)
    local mean, gamma, w = bn.running_mean:clone(), bn.weight:clone(), conv.weight:clone()
    tr:step()
    tr.train_loader:close()
    local function differs(a, b)
      local x, y = a:flat(), b:flat()
      for i = 1, #x do if x[i] ~= y[i] then return true end end
      return false
    end
    local moved = differs(bn.running_mean, mean)
    h.eq(moved, not freeze, "freeze_bn " .. tostring(freeze) .. ": running mean moved " .. tostring(moved))
    h.eq(bn.training, not freeze, "freeze_bn " .. tostring(freeze) .. ": the batch norm's mode")
    h.truthy(conv.training, "freeze_bn " .. tostring(freeze) .. ": the convolution trains")
    h.truthy(differs(bn.weight, gamma), "the batch norm's weight learns")
    h.truthy(differs(conv.weight, w), "the convolution's weight learns")
  end
  os.execute("rm -rf " .. tmp)
end

return T
