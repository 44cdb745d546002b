-- evaluate: a model on a dataset, whole images or by sliding window, into a
-- confusion matrix; and the prediction of one batch for pictures.
local kd = require("kd")

local evaluate = {}

-- Logits for images (N x 3 x H x W): whole, or averaged over windows of
-- crop = {h, w} moved by stride when the image is larger than the crop.
function evaluate.predict_logits(model, images, crop, stride, flip)
  if flip then -- the mean of the logits of the image and of its mirror image, mirrored back
    local mirrored = evaluate.predict_logits(model, images:flip_width(), crop, stride)
    return (evaluate.predict_logits(model, images, crop, stride) + mirrored:flip_width()) * 0.5
  end
  local H, W = images:size(3), images:size(4)
  if not crop or (H <= crop[1] and W <= crop[2]) then return model(images) end
  local ch, cw = crop[1], crop[2]
  stride = stride or {math.max(1, math.floor(ch * 2 / 3)), math.max(1, math.floor(cw * 2 / 3))}
  local function starts(size, window, step)
    local list, at = {}, 0
    while true do
      list[#list + 1] = at
      if at + window >= size then break end
      at = math.min(at + step, size - window)
    end
    return list
  end
  local sum, count
  for _, top in ipairs(starts(H, ch, stride[1])) do
    for _, left in ipairs(starts(W, cw, stride[2])) do
      local window = model(kd.crop2d(images, top, left, ch, cw))
      if not sum then
        sum, count = kd.zeros({images:size(1), window:size(2), H, W}), kd.zeros({images:size(1), window:size(2), H, W})
      end
      kd.add_window(sum, window, top, left)
      kd.add_window(count, kd.ones(window.shape), top, left)
    end
  end
  return sum / count
end

-- Runs model over every batch of loader (epoch mode); returns the confusion
-- matrix and the first `keep` samples' {image, truth, prediction}.
-- options: crop, stride, flip (predict_logits), keep, on_batch(batch,
-- prediction) called after each batch.
function evaluate.run(model, loader, classes, options)
  options = options or {}
  local was_training = model.training
  model:eval()
  local confusion = kd.data.Confusion(classes)
  local kept = {}
  kd.no_grad(function()
    for batch in loader:epoch() do
      local logits = evaluate.predict_logits(model, batch.images, options.crop, options.stride, options.flip)
      local prediction = logits:argmax()
      confusion:update(prediction, batch.labels)
      if options.on_batch then options.on_batch(batch, prediction) end
      for i = 1, batch.images:size(1) do
        if #kept >= (options.keep or 0) then break end
        local h, w = batch.images:size(3), batch.images:size(4)
        kept[#kept + 1] = {image = batch.images:narrow(i, 1), truth = batch.labels:narrow(i, 1):view(h, w),
                           prediction = prediction:narrow(i, 1):view(h, w)}
      end
    end
  end)
  model:train(was_training)
  return confusion, kept
end

-- Several models voting: the mean of their class distributions.
function evaluate.ensemble(models, loader, classes)
  local states = {}
  for i, m in ipairs(models) do states[i] = m.training; m:eval() end
  local confusion = kd.data.Confusion(classes)
  kd.no_grad(function()
    for batch in loader:epoch() do
      local sum
      for _, m in ipairs(models) do
        local p = kd.softmax(m(batch.images))
        sum = sum and sum + p or p
      end
      confusion:update(sum:argmax(), batch.labels)
    end
  end)
  for i, m in ipairs(models) do m:train(states[i]) end
  return confusion
end

-- Every model and ensemble of a finished loop run (its results.json: the
-- weights of each model, the members of each ensemble), from their last
-- weights, on another dataset: a held-out test split after settings were
-- chosen on validation. Returns name -> {miou, pixel_accuracy, iou}.
-- options: batch_size (4), workers (2), crop, stride (sliding window).
function evaluate.run_folder(dir, dataset, classes, options)
  options = options or {}
  local results_path = dir .. "/results.json"
  if not kd.data.files.exists(results_path) then error("evaluate: " .. results_path .. " is missing (an unfinished run?)", 0) end
  local results = kd.config.load(results_path)
  local checkpoint = require("kd.train.checkpoint")
  local function loader(model_config)
    return kd.data.Loader(dataset, {batch_size = options.batch_size or 4, workers = options.workers or 2,
                                    augment = {mean = model_config.mean, std = model_config.std}})
  end
  local function scores(confusion)
    local s = confusion:scores()
    return {miou = s.miou, pixel_accuracy = s.pixel_accuracy, iou = confusion:named_iou(s, nil)}
  end
  local models, configs, out = {}, {}, {}
  local names = {}
  for name in pairs(results.models or {}) do names[#names + 1] = name end
  table.sort(names)
  for _, name in ipairs(names) do
    local entry = results.models[name]
    if entry.weights then
      models[name], configs[name] = checkpoint.load_model(dir .. "/" .. entry.weights)
      local l = loader(configs[name])
      out[name] = scores(evaluate.run(models[name], l, classes, {crop = options.crop, stride = options.stride}))
      l:close()
    end
  end
  for _, name in ipairs(names) do
    local members = results.models[name].members
    if members then
      local list = {}
      for k, member in ipairs(members) do
        list[k] = models[member] or error("evaluate: ensemble " .. name .. "'s member " .. member .. " has no weights", 0)
      end
      local l = loader(configs[members[1]])
      out[name] = scores(evaluate.ensemble(list, l, classes))
      l:close()
    end
  end
  return out
end

return evaluate
