-- help: short help on the kd API, for help(obj) and `?name` in the REPL.
local entries = {
  ["kd.tensor"] = "kd.tensor(nested_table[, dtype]) -> tensor; dtype 'float32' (default), 'int32', 'uint8', 'int64'",
  ["kd.zeros"] = "kd.zeros(shape[, dtype]); shape is {n, c, h, w} or up to 4 sizes",
  ["kd.ones"] = "kd.ones(shape[, dtype])",
  ["kd.full"] = "kd.full(shape, value[, dtype])",
  ["kd.randn"] = "kd.randn(shape[, mean, std]) from the global generator (kd.manual_seed)",
  ["kd.rand"] = "kd.rand(shape[, low, high]) uniform in [low, high)",
  ["kd.arange"] = "kd.arange(stop) or kd.arange(start, stop[, step][, dtype])",
  ["kd.conv2d"] = "kd.conv2d(x, weight[, bias][, {stride, padding, dilation, groups}]); x N x Cin x H x W, weight Cout x Cin/groups x kh x kw",
  ["kd.batch_norm"] = "kd.batch_norm(x, weight, bias, running_mean, running_var[, {training = true, momentum = 0.1, eps = 1e-5}])",
  ["kd.max_pool2d"] = "kd.max_pool2d(x, {kernel, stride = kernel, padding = 0})",
  ["kd.avg_pool2d"] = "kd.avg_pool2d(x, {kernel, stride = kernel, padding = 0}); padding counts in the mean",
  ["kd.resize_bilinear"] = "kd.resize_bilinear(x, h, w[, align_corners = false])",
  ["kd.resize_nearest"] = "kd.resize_nearest(labels, h, w): any dtype, no grad",
  ["kd.softmax"] = "kd.softmax(x[, temperature = 1]) over channels",
  ["kd.log_softmax"] = "kd.log_softmax(x[, temperature = 1]) over channels",
  ["kd.sum"] = "kd.sum(x[, dims][, keepdim]); dims 1-based, a number or a table",
  ["kd.mean"] = "kd.mean(x[, dims][, keepdim])",
  ["kd.concat"] = "kd.concat({a, b, ...}) along channels",
  ["kd.max"] = "kd.max(x) -> values, indices over channels (indices are 0-based class ids)",
  ["kd.no_grad"] = "kd.no_grad(fn, ...) runs fn recording nothing on the tape",
  ["kd.save"] = "kd.save(path, {name = tensor}[, metadata]) writes safetensors atomically",
  ["kd.load"] = "kd.load(path) -> {name = tensor}, metadata",
  ["kd.losses.cross_entropy"] = "cross_entropy(logits, target[, {ignore = 255, class_weight, pixel_weight, reduction = 'mean'|'sum'|'none'}])",
  ["kd.losses.kl_div"] = "kl_div(student_logits, teacher_logits[, {temperature = 1, detach_target = true, reduction}]); T^2-scaled",
  ["kd.losses.mse"] = "mse(a, b[, {reduction}])",
  ["kd.losses.pairwise_distill"] = "pairwise_distill(student_features, teacher_features[, {grid = {h, w}}])",
  ["kd.nn.Conv2d"] = "nn.Conv2d(cin, cout, kernel[, {stride, padding, dilation, groups, bias = true}])",
  ["kd.nn.BatchNorm2d"] = "nn.BatchNorm2d(channels[, {eps, momentum, affine, track_running_stats}])",
  ["kd.nn.Sequential"] = "nn.Sequential(m1, m2, ...) or nn.Sequential({m1, m2})",
  ["kd.optim.SGD"] = "optim.SGD(params or groups, {lr, momentum = 0, dampening = 0, weight_decay = 0, nesterov = false})",
  ["kd.optim.AdamW"] = "optim.AdamW(params or groups, {lr = 1e-3, betas = {0.9, 0.999}, eps = 1e-8, weight_decay = 1e-2})",
  ["kd.optim.EMA"] = "optim.EMA(target_model, source_model, {decay = 0.999}); ema:update()",
  ["kd.set_threads"] = "kd.set_threads(n): threads of OpenBLAS and the core's loops",
  ["kd.manual_seed"] = "kd.manual_seed(n): seeds the global generator",
  ["kd.memory"] = "kd.memory() -> {live_bytes, peak_bytes, cached_bytes, live_tensors}",
}

local function find_name(obj)
  local kd = require("kd")
  for name, value in pairs(kd) do if value == obj then return "kd." .. name end end
  for _, sub in ipairs({"losses", "nn", "optim"}) do
    for name, value in pairs(kd[sub] or {}) do if value == obj then return "kd." .. sub .. "." .. name end end
  end
end

-- help(obj or "name") -> text (also printed)
return function(obj)
  local name = type(obj) == "string" and obj or find_name(obj)
  if name and not name:match("^kd%.") then name = "kd." .. name end
  local text = name and entries[name]
  if not text and name then
    local prefix, found = name .. ".", {}
    for k in pairs(entries) do if k:sub(1, #prefix) == prefix then found[#found + 1] = k end end
    table.sort(found)
    if #found > 0 then text = name .. ": " .. table.concat(found, ", ") end
  end
  text = text or ("no help for " .. tostring(name or obj) .. "; try help('kd'), help('kd.nn'), help('kd.losses')")
  print(text)
  return text
end
