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
  ["kd.crop2d"] = "kd.crop2d(x, top, left, h, w): a window of N x C x H x W (0-based offsets), zeros past the border; no grad",
  ["kd.add_window"] = "kd.add_window(dst, window, top, left): dst's window += window, in place, no grad (sliding-window sums)",
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
  ["kd.losses.pairwise_similarity"] = "pairwise_similarity(student_nodes, teacher_nodes[, {detach_norm = false}])",
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

-- The dotted name of obj inside kd ("kd" for kd itself), or nil.
local function find_name(obj)
  local kd = require("kd")
  if obj == kd then return "kd" end
  for name, value in pairs(kd) do if value == obj then return "kd." .. name end end
  for sub, t in pairs(kd) do
    if type(t) == "table" and sub ~= "_C" then
      for name, value in pairs(t) do if value == obj then return "kd." .. sub .. "." .. name end end
    end
  end
end

-- The value at a dotted name ("kd.nn.Conv2d"), or nil.
local function resolve(name)
  local value = require("kd")
  for part in name:gmatch("[^%.]+") do
    if part ~= "kd" or value ~= require("kd") then
      if type(value) ~= "table" then return nil end
      value = rawget(value, part) or (getmetatable(value) == nil and nil) or value[part]
    end
  end
  return value
end

-- The comment at the top of the Lua file of a module ("kd.train" ->
-- scripts/kd/train/init.lua; "kd.train.Loop" -> scripts/kd/train/loop.lua;
-- "kd.config" -> scripts/kd/infra/config.lua, "kd.pseudo" -> method/pseudo.lua).
local function module_comment(name)
  local last = name:match("([^%.]+)$")
  for _, candidate in ipairs({name, name:lower(), "kd.infra." .. last, "kd.method." .. last}) do
    local path = package.searchpath(candidate, package.path)
    if path then
      local lines = {}
      for line in io.lines(path) do
        local text = line:match("^%-%- ?(.*)$")
        if not text then break end
        lines[#lines + 1] = text
      end
      if #lines > 0 then return table.concat(lines, "\n") end
    end
  end
end

-- The names in a table, modules and classes first, as "name/" for tables.
local function fields(t)
  local list = {}
  for k, v in pairs(t) do
    if type(k) == "string" and not k:match("^_") then list[#list + 1] = k .. (type(v) == "table" and "/" or "") end
  end
  table.sort(list)
  return table.concat(list, ", ")
end

-- help(obj or "name") -> text (also printed): the entry above, else the
-- module's own comment, else what the table holds.
return function(obj)
  local name = type(obj) == "string" and obj or find_name(obj)
  if name and name ~= "kd" and not name:match("^kd%.") then name = "kd." .. name end
  local text = name and entries[name]
  if not text and name then
    local value = resolve(name)
    local parts = {module_comment(name)}
    if type(value) == "table" then
      parts[#parts + 1] = name .. " holds: " .. fields(value)
      if name == "kd" then parts[#parts + 1] = "help('kd.NAME') or ?kd.NAME for any of them" end
    elseif value ~= nil and #parts == 0 then
      parts[#parts + 1] = name .. " is a " .. type(value) .. " with no help text of its own"
    end
    if #parts > 0 then text = table.concat(parts, "\n") end
  end
  text = text or ("no help for " .. tostring(name or obj) .. "; try help('kd'), help('kd.nn'), help('kd.train')")
  print(text)
  return text
end
