-- Composability: a topology no built-in script has - two teachers of
-- different designs and three students of different designs, each student
-- distilling from both teachers at its own temperature and from its peers -
-- from the building blocks alone.   kdseg experiments/compose_two_teachers.lua [root] [iterations]
local root, iterations = arg[1] or "data/synthcity", tonumber(arg[2]) or 1000
local classes = kd.data.classes.cityscapes()
local labeled = kd.data.Dataset{root = root, split = "train"}
local val = kd.data.Dataset{root = root, split = "val"}
local teachers = {}
for i, model in ipairs({"bench_teacher", "deeplabv3plus"}) do
  local t = kd.train.Trainer({name = "compose_" .. model, data = {root = root, augment = {crop = {64, 128}}},
                              model = {name = model}, train = {iterations = iterations, eval_every = 0, checkpoint_every = 0}}, {quiet = true})
  t:run()
  teachers[i] = t.model:eval()
end
local students, params = {}, {}
for i, spec in ipairs({{"bench_student", 1}, {"erfnet", 2}, {"mobilenetv2", 4}}) do
  students[i] = {net = kd.models.create(spec[1], {classes = classes.count}), name = spec[1], temperature = spec[2]}
  for _, p in ipairs(students[i].net:parameters()) do params[#params + 1] = p end
end
local opt = kd.optim.SGD(params, {lr = 0.02, momentum = 0.9, weight_decay = 1e-4})
local loader = kd.data.Loader(labeled, {batch_size = 8, workers = 2, shuffle = true, infinite = true, augment = {crop = {64, 128}, hflip = true}})
local ramp = kd.distill.schedules.sigmoid_rampup(1, iterations / 2)
for iter = 1, iterations do
  local batch = loader:next()
  local targets = kd.no_grad(function() return {teachers[1](batch.images), teachers[2](batch.images)} end)
  local logits = {}
  for i, s in ipairs(students) do logits[i] = s.net(batch.images) end
  local loss
  for i, s in ipairs(students) do
    local l = kd.losses.cross_entropy(logits[i], batch.labels)
    for _, t in ipairs(targets) do l = l + kd.distill.pixel_kd(logits[i], t, s.temperature) * (0.5 * ramp(iter)) end
    l = l + kd.distill.mutual(logits, i, s.temperature) * ramp(iter)
    loss = loss and loss + l or l
  end
  opt:zero_grad(); loss:backward(); opt:step()
end
for _, s in ipairs(students) do
  local cm = kd.train.evaluate.run(s.net, kd.data.Loader(val, {batch_size = 4}), classes)
  print(string.format("%-14s T=%d  val mIoU %.2f", s.name, s.temperature, 100 * cm:miou()))
end
