-- pseudo_probe: how good the pseudo-labels a semi-supervised run learns
-- from are, measured while it trains. Every `every` iterations each source
-- (a model of the loop, and the confidence from which its predictions count
-- as pseudo-labels: a UniMatch-style threshold, 0 for Mean Teacher's and
-- CPS's targets, which cover every pixel) labels a fixed set of unlabeled
-- images whose true labels the run never sees (SynthCity's hidden truth);
-- a "pseudo" line in metrics.jsonl gives its coverage (share of pixels
-- labelled), accuracy (share of those labelled right; kd.method.pseudo's
-- stats, the method's own pseudo-label figures) and the mIoU of its
-- predictions on those images. This is the evidence for why a baseline
-- gains or loses over supervised training, next to the method's cycles.
--   pseudo_probe.attach(loop, {dataset = d, every = 400,
--                              sources = {{name = "teacher", model = "teacher", threshold = 0}}})
local kd = require("kd")
local pseudo = require("kd.method.pseudo")

local pseudo_probe = {}

local IGNORE = 255

local function check(options)
  if type(options) ~= "table" then error("pseudo_probe: options must be a table", 0) end
  if type(options.dataset) ~= "table" or type(options.dataset.items) ~= "table" then
    error("pseudo_probe: dataset must be a kd.data.Dataset of images with their true labels", 0)
  end
  local every = options.every
  if type(every) ~= "number" or every < 1 or every % 1 ~= 0 then
    error("pseudo_probe: every must be a whole number of iterations >= 1, got " .. tostring(every), 0)
  end
  if type(options.sources) ~= "table" or #options.sources == 0 then
    error("pseudo_probe: sources must be a list of {name, model, threshold}", 0)
  end
  for i, s in ipairs(options.sources) do
    if type(s) ~= "table" or type(s.model) ~= "string" then
      error("pseudo_probe: source " .. i .. " needs a model (the name of a model of the loop)", 0)
    end
    local t = s.threshold or 0
    if type(t) ~= "number" or t < 0 or t > 1 then
      error("pseudo_probe: source " .. i .. "'s threshold must be a number in [0, 1], got " .. tostring(s.threshold), 0)
    end
  end
end

-- One source's figures over the dataset: {coverage, accuracy, miou}.
function pseudo_probe.measure(model, dataset, classes, threshold, options)
  options = options or {}
  local shard = kd.dist.shard_dataset(dataset)
  local covered, pixels, correct = 0, 0, 0
  local confusion = kd.data.Confusion(classes)
  if #shard.items > 0 then
    local loader = kd.data.Loader(shard, {batch_size = options.batch_size or 4, workers = options.workers or 2,
                                          augment = {mean = options.mean, std = options.std}})
    for batch in loader:epoch() do
      local probs = pseudo.predict(model, batch.images)
      local pred, conf = pseudo.decide(probs)
      confusion:update(pred, batch.labels)
      local labels = kd._C.pseudo_fill(kd.full(pred.shape, IGNORE, "int32"), pred, conf, threshold, classes.count, IGNORE)
      local st = pseudo.stats(labels, batch.labels, classes.count)
      covered, pixels, correct = covered + st.covered, pixels + st.pixels, correct + st.correct
    end
    loader:close()
  end
  local sums = kd.dist.all_reduce_numbers({covered, pixels, correct})
  kd.dist.all_reduce(confusion.matrix)
  covered, pixels, correct = sums[1], sums[2], sums[3]
  return {coverage = covered / math.max(pixels, 1), accuracy = covered > 0 and correct / covered or 0,
          miou = confusion:scores().miou}
end

-- Measures every `every` iterations (and at the last), logging one line per source.
function pseudo_probe.attach(loop, options)
  check(options)
  local mean, std = loop:normalization()
  for _, s in ipairs(options.sources) do
    if not loop.by_name[s.model] then error("pseudo_probe: the loop has no model '" .. s.model .. "'", 0) end
  end
  loop:on("step", function(self)
    local it = self.iteration
    if it % options.every ~= 0 and it ~= self.cfg.iterations then return end
    for _, s in ipairs(options.sources) do
      local r = pseudo_probe.measure(self.by_name[s.model].model, options.dataset, self.classes, s.threshold or 0,
                                     {mean = mean, std = std, workers = options.workers})
      self.log:log({type = "pseudo", iteration = it, source = s.name or s.model, threshold = s.threshold or 0,
                    images = #options.dataset.items, coverage = r.coverage, accuracy = r.accuracy, miou = r.miou})
    end
  end)
  return loop
end

-- A run folder's probe lines: source -> list of {iteration, coverage,
-- accuracy, miou, threshold}, in the order logged (a resumed run logs a
-- probe again: the later line wins).
function pseudo_probe.history(dir)
  local path, out = dir .. "/metrics.jsonl", {}
  if not kd.data.files.exists(path) then return out end
  local cjson = require("cjson")
  for line in io.lines(path) do
    local ok, e = pcall(cjson.decode, line)
    if ok and type(e) == "table" and e.type == "pseudo" and type(e.iteration) == "number" then
      local list = out[tostring(e.source)] or {}
      out[tostring(e.source)] = list
      while #list > 0 and list[#list].iteration >= e.iteration do list[#list] = nil end
      list[#list + 1] = {iteration = e.iteration, coverage = e.coverage, accuracy = e.accuracy, miou = e.miou,
                         threshold = e.threshold}
    end
  end
  return out
end

return pseudo_probe
