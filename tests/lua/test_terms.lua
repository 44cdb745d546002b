-- The one loop's loss terms (kd.terms): each constructor's value worked out
-- by hand on a tiny batch, its gradient checked against finite differences,
-- its settings checked; the loop's spec checked; a term written in a script
-- (an MSE between two students' features) trained without touching the
-- library, and the loop's run folder.
local h = require("harness")
local cjson = require("cjson")
local T = {}
local Step = require("kd.train.step")
local ln2, ln3 = math.log(2), math.log(3)

-- A model that gives back its input as logits and as features (or, with a
-- fixed output, that output whatever the input): a term's value is then a
-- function of the batch alone.
local Pass = kd.class("TestPass", kd.nn.Module)
function Pass:__init(fixed) kd.nn.Module.__init(self); self.fixed = fixed end
function Pass:forward_features(x) local y = self.fixed or x; return y, {features = y} end
function Pass:forward(x) return (self:forward_features(x)) end
function Pass:decode(features) return features end

-- A step whose batches are `batches` (name -> {images, labels, weights}),
-- with the learning models `learners` and frozen ones `fixed` (name -> logits).
local function step_of(batches, learners, fixed, views)
  local loop = {by_name = {}, views = views or {}}
  for _, name in ipairs(learners) do loop.by_name[name] = {trainable = true, model = Pass()} end
  for name, logits in pairs(fixed or {}) do loop.by_name[name] = {trainable = false, model = Pass(logits)} end
  return Step(loop, batches, 1)
end

-- 1 image, 2 classes, 1 x 2 pixels: pixel 1 logits (0, 0), pixel 2 (ln 3, 0).
local function logits() return kd.tensor({{{{0, ln3}}, {{0, 0}}}}) end
local function value(term, step)
  if term.views then for name, fn in pairs(term.views) do step.loop.views[name] = fn end end
  return term.fn(step, term):item()
end

function T.cross_entropy_by_hand()
  -- labels (0, 0): -log 1/2 and -log 3/4; (0, 1): ln 2 and ln 4
  local batch = {images = logits(), labels = kd.tensor({{{0, 1}}}, "int32"), weights = kd.tensor({{{1, 0.5}}})}
  h.near(value(kd.terms.ce({model = "a"}), step_of({labeled = batch}, {"a"})), 1.5 * ln2, 1e-6, "ce: (ln 2 + ln 4) / 2")
  h.near(value(kd.terms.ce({model = "a", pixel_weights = true}), step_of({labeled = batch}, {"a"})), ln2, 1e-6,
         "ce with pixel weights 1, 0.5: (ln 2 + 0.5 ln 4) / 2")
  batch.labels = kd.tensor({{{0, 255}}}, "int32")
  h.near(value(kd.terms.ce({model = "a"}), step_of({labeled = batch}, {"a"})), ln2, 1e-6, "ce: the ignored pixel counts nowhere")
  local pseudo = {images = logits(), labels = kd.tensor({{{0, 1}}}, "int32"), weights = kd.tensor({{{1, 0.5}}})}
  h.near(value(kd.terms.pseudo_ce({model = "a"}), step_of({pseudo = pseudo}, {"a"})), ln2, 1e-6,
         "pseudo_ce: confidence-weighted, (ln 2 + 0.5 ln 4) / 2")
  h.near(value(kd.terms.pseudo_ce({model = "a", class_weights = kd.tensor({1, 3})}), step_of({pseudo = pseudo}, {"a"})),
         (ln2 + 3 * 0.5 * 2 * ln2) / 4, 1e-6, "pseudo_ce with class weights 1, 3: a weighted mean")
end

function T.distillation_by_hand()
  -- student uniform (logits 0); teacher (ln 3, 0) at pixel 1 and 2: (3/4, 1/4)
  local student = kd.zeros({1, 2, 1, 2})
  local teacher = kd.tensor({{{{ln3, ln3}}, {{0, 0}}}})
  local kl = 0.75 * math.log(1.5) + 0.25 * math.log(0.5)
  local batches = {labeled = {images = student, labels = kd.tensor({{{0, 1}}}, "int32")}, pseudo = {images = student}}
  local function step() return step_of(batches, {"a"}, {t = teacher}) end
  h.near(value(kd.terms.pixel_kd({model = "a", teacher = "t"}), step()), kl, 1e-6, "pixel_kd: KL(teacher || student) per pixel")
  h.near(value(kd.terms.pixel_kd({model = "a", teacher = "t", streams = {"labeled", "pseudo"}}), step()), 2 * kl, 1e-6,
         "pixel_kd over two streams: the sum")
  h.near(value(kd.terms.pixel_kd({model = "a", teacher = "t", respect_labels = true}), step()), kl / 2, 1e-6,
         "pixel_kd respecting labels: pixel 2 (label 1, teacher 0) left out of the mean")
  -- T = 2: teacher (sqrt 3, 1) / (sqrt 3 + 1), times T^2
  local p = math.sqrt(3) / (math.sqrt(3) + 1)
  h.near(value(kd.terms.pixel_kd({model = "a", teacher = "t", temperature = 2}), step()),
         4 * (p * math.log(2 * p) + (1 - p) * math.log(2 * (1 - p))), 1e-6, "pixel_kd at T 2, T^2-scaled")
  h.near(value(kd.terms.mse_consistency({model = "a", teacher = "t", stream = "labeled"}), step()), 0.0625, 1e-7,
         "mse_consistency: ((3/4 - 1/2)^2 + (1/4 - 1/2)^2) / 2")
  h.near(value(kd.terms.cross_pseudo({model = "a", peer = "t", stream = "labeled"}), step()), ln2, 1e-6,
         "cross_pseudo: the uniform student against the peer's class 0")
  -- mutual: student b learns from a (detached); a = teacher's logits here
  local mb = {labeled = {images = student}}
  local s = step_of(mb, {"b"}, {a = teacher})
  h.near(value(kd.terms.mutual({model = "b", peers = {"a", "b"}}), s), kl, 1e-6, "mutual: KL(peer || self), one peer")
  -- pairwise over a 1 x 2 grid: student nodes (1, 0) and (0, 1) are orthogonal,
  -- the teacher's both (1, 0): the two off-diagonal similarities differ by 1
  local sf = kd.tensor({{{{1, 0}}, {{0, 1}}}})
  local tf = kd.tensor({{{{1, 1}}, {{0, 0}}}})
  h.near(value(kd.terms.pairwise_kd({model = "a", teacher = "t", grid = {1, 2}}),
               step_of({labeled = {images = sf}}, {"a"}, {t = tf})), 0.5, 1e-6, "pairwise: (1 + 1) / 2^2")
end

function T.weak_to_strong_by_hand()
  -- without boxes (p 0) the strong view is the weak one: cutmix with the
  -- stream's pseudo-labels is pseudo_ce, with the model's own confident
  -- labels it is the CE to its argmax (class 0 at pixel 2: -log 3/4)
  local pseudo = {images = logits(), labels = kd.tensor({{{0, 1}}}, "int32"), weights = kd.tensor({{{1, 0.5}}})}
  h.near(value(kd.terms.cutmix({model = "a", p = 0}), step_of({pseudo = pseudo}, {"a"})), ln2, 1e-6, "cutmix, no box: pseudo_ce")
  local own = value(kd.terms.cutmix({model = "a", p = 0, source = "a", threshold = 0, stream = "pseudo"}), step_of({pseudo = pseudo}, {"a"}))
  h.near(own, (ln2 + math.log(4 / 3)) / 2, 1e-6, "cutmix from the model's own prediction (threshold 0)")
  local sure = value(kd.terms.cutmix({model = "a", p = 0, source = "a", threshold = 0.6, stream = "pseudo"}), step_of({pseudo = pseudo}, {"a"}))
  h.near(sure, math.log(4 / 3), 1e-6, "threshold 0.6: pixel 1 (confidence 1/2) unlabelled")
  h.near(value(kd.terms.feature_perturbation({model = "a", stream = "pseudo", p = 0, threshold = 0.6}), step_of({pseudo = pseudo}, {"a"})),
         math.log(4 / 3), 1e-6, "feature perturbation without dropout: CE to its confident labels")
  -- UniMatch's rule (unconfident = "zero"): the unconfident pixel counts as
  -- a zero in the mean over the image's two pixels, not left out of it
  h.near(value(kd.terms.cutmix({model = "a", p = 0, source = "a", threshold = 0.6, stream = "pseudo", unconfident = "zero"}),
               step_of({pseudo = pseudo}, {"a"})), math.log(4 / 3) / 2, 1e-6, "unconfident as zero: (0 + log 4/3) / 2")
  h.near(value(kd.terms.feature_perturbation({model = "a", stream = "pseudo", p = 0, threshold = 0.6, unconfident = "zero"}),
               step_of({pseudo = pseudo}, {"a"})), math.log(4 / 3) / 2, 1e-6, "feature perturbation, unconfident as zero")
  -- a padding pixel (valid 0) counts nowhere, confident or not
  local padded = {images = logits(), labels = kd.tensor({{{0, 1}}}, "int32"), valid = kd.tensor({{{1, 0}}}, "uint8")}
  h.near(value(kd.terms.cutmix({model = "a", p = 0, source = "a", threshold = 0, stream = "pseudo", unconfident = "zero"}),
               step_of({pseudo = padded}, {"a"})), ln2, 1e-6, "unconfident as zero: padding counts nowhere")
  h.raises(function() value(kd.terms.cutmix({model = "a", p = 0, source = "a", stream = "pseudo", unconfident = "drop"}),
                            step_of({pseudo = pseudo}, {"a"})) end, "unconfident must be 'ignore' or 'zero'")
end

-- The confident labels of a prediction (kd._C.confident_labels, what
-- cutmix and feature_perturbation read) against their naive twin, the loop
-- over the pixels in Lua they replace: both rules, with and without padding,
-- at thresholds on and between the confidences; wrong maps are refused.
function T.confident_labels_naive_twin()
  local function same_list(got, want, what)
    h.eq(#got, #want, what .. ": length")
    for i = 1, #want do h.eq(got[i], want[i], what .. " at " .. i) end
  end
  kd.manual_seed(3)
  local conf, labels = kd.max(kd.softmax(kd.randn({2, 5, 7, 9}) * 3))
  local valid = kd.zeros({2, 7, 9}, "uint8")
  for i = 1, valid:numel() do valid:set(i, i % 5 == 0 and 0 or 1) end
  conf:set(4, 0.5) -- a confidence exactly at a threshold below
  local c, l = conf:flat(), labels:flat()
  for _, threshold in ipairs({0, 0.5, c[7], 0.8, 1.1}) do
    for _, pad in ipairs({false, true}) do
      local v = pad and valid:flat() or nil
      local want_labels, want_weights = {}, {}
      for i = 1, #c do -- ignore: unconfident pixels get 255 (padding is not looked at)
        want_labels[i] = c[i] < threshold and 255 or l[i]
      end
      local got = kd._C.confident_labels(labels, conf, threshold, false, pad and valid or nil, 255)
      same_list(got:flat(), want_labels, "ignore rule, threshold " .. threshold .. (pad and ", padded" or ""))
      for i = 1, #c do -- zero: every label kept, weight 1 where confident; padding 255 and 0
        if v and v[i] == 0 then want_labels[i], want_weights[i] = 255, 0
        else want_labels[i], want_weights[i] = l[i], c[i] >= threshold and 1 or 0 end
      end
      local got_labels, got_weights = kd._C.confident_labels(labels, conf, threshold, true, pad and valid or nil, 255)
      same_list(got_labels:flat(), want_labels, "zero rule's labels, threshold " .. threshold .. (pad and ", padded" or ""))
      same_list(got_weights:flat(), want_weights, "zero rule's weights, threshold " .. threshold .. (pad and ", padded" or ""))
    end
  end
  h.raises(function() kd._C.confident_labels(labels, conf:narrow(1, 1), 0.5, false) end, "differ")
  h.raises(function() kd._C.confident_labels(conf, conf, 0.5, false) end, "labels")
  h.raises(function() kd._C.confident_labels(labels, conf, 0.5, true, kd.zeros({2, 7, 9})) end, "map")
  h.raises(function() kd._C.confident_labels(labels, conf, 0.5, "zero") end, "boolean expected")
  h.raises(function() kd._C.confident_labels(labels, conf, "high", false) end, "number expected")
end

-- kd.data.photometric: without options only the 8-bit rounding; with them
-- the colours change, the same for the same seed; geometry is refused.
function T.photometric_batch()
  kd.manual_seed(4)
  local images = kd.rand({2, 3, 6, 8}) * 2 - 1 -- normalised pixels of images inside [0, 1]
  local same = kd.data.photometric(images, {})
  h.truthy(math.sqrt((same - images):sum_squares() / images:numel()) < 0.01, "no options: only 8-bit rounding")
  local colours = {brightness = 0.5, contrast = 0.5, saturation = 0.5, hue = 0.25, jitter_p = 1, grayscale_p = 0.2,
                   blur_p = 0.5}
  kd.manual_seed(9)
  local a = kd.data.photometric(images, colours)
  kd.manual_seed(9)
  local b = kd.data.photometric(images, colours)
  h.eq((a - b):sum_squares(), 0, "the same seed, the same colours")
  h.truthy((a - images):sum_squares() > 1, "the colours change")
  -- a batch large enough to be changed in parallel gives what its images
  -- one at a time give, drawn in the same order from the same seed
  local many = kd.rand({8, 3, 40, 50}) * 2 - 1
  kd.manual_seed(11)
  local batch = kd.data.photometric(many, colours)
  kd.manual_seed(11)
  for k = 1, 8 do
    local one = kd.data.photometric(many:narrow(k, 1), colours)
    h.eq((batch:narrow(k, 1) - one):sum_squares(), 0, "image " .. k .. " of the batch, alone")
  end
  local gray = kd.data.photometric(images, {grayscale_p = 1})
  local r, g = kd.slice_channels(gray, 1, 1), kd.slice_channels(gray, 2, 1)
  local std = require("kd.data.normalize").std
  local mean = require("kd.data.normalize").mean
  h.near(((r * std[1] + mean[1]) - (g * std[2] + mean[2])):sum_squares(), 0, 1e-9, "grayscale: equal channels")
  h.raises(function() kd.data.photometric(images, {crop = {2, 2}}) end, "crop is geometry")
  h.raises(function() kd.data.photometric(kd.zeros({1, 1, 2, 2}), {}) end, "must have 3 channels")
  h.raises(function() kd.data.photometric(images, true) end, "the options must be a table, got boolean")
  h.raises(function() kd.data.photometric(images, {blur_p = "often"}) end, "blur_p")
  h.raises(function() kd.terms.cutmix({model = "a", photometric = true}) end, "photometric must be false or")
end

-- Mean Teacher's perturbed student input: the student sees other images
-- than the teacher, so the consistency of a model with itself is not 0.
function T.perturbed_consistency()
  local batch = {images = kd.randn({1, 3, 4, 4})}
  local plain = value(kd.terms.mse_consistency({model = "a", teacher = "t", stream = "unlabeled"}),
                      step_of({unlabeled = batch}, {"a"}, {t = batch.images}))
  kd.manual_seed(2)
  local perturbed = value(kd.terms.mse_consistency({model = "a", teacher = "t", stream = "unlabeled",
                                                    perturb = {brightness = 0.5, jitter_p = 1}}),
                          step_of({unlabeled = batch}, {"a"}, {t = batch.images}))
  h.near(plain, 0, 1e-12, "the same input: no difference")
  h.truthy(perturbed > 1e-8, "a perturbed student input: a difference")
  h.raises(function() kd.terms.mse_consistency({model = "a", teacher = "t", perturb = true}) end, "perturb must be false")
end

local function gradcheck(name, term, batches, fixed, tolerance)
  local ok, report = kd.gradcheck(function(x)
    local b = {}
    for k, v in pairs(batches) do b[k] = {images = x, labels = v.labels, weights = v.weights} end
    local s = step_of(b, {"a"}, fixed)
    if term.views then for n, fn in pairs(term.views) do s.loop.views[n] = fn end end
    return term.fn(s, term)
  end, {kd.randn({2, 3, 4, 4})}, {tolerance = tolerance or 1e-2})
  if not ok then error(name .. ": " .. report, 2) end
end

function T.term_gradients()
  kd.manual_seed(11)
  local labels = kd.zeros({2, 4, 4}, "int32")
  for i = 1, labels:numel() do labels:set(i, i % 7 == 0 and 255 or i % 3) end
  local b = {labels = labels, weights = kd.rand({2, 4, 4})}
  local teacher, peer = kd.randn({2, 3, 4, 4}), kd.randn({2, 3, 4, 4})
  gradcheck("ce", kd.terms.ce({model = "a", pixel_weights = true}), {labeled = b})
  gradcheck("pseudo_ce", kd.terms.pseudo_ce({model = "a", class_weights = kd.tensor({1, 2, 0.5})}), {pseudo = b})
  gradcheck("pixel_kd", kd.terms.pixel_kd({model = "a", teacher = "t", temperature = 2, streams = {"labeled", "pseudo"},
                                           class_weights = kd.tensor({1, 2, 0.5})}), {labeled = b, pseudo = b}, {t = teacher})
  gradcheck("pairwise_kd", kd.terms.pairwise_kd({model = "a", teacher = "t", grid = {2, 2}}), {labeled = b}, {t = teacher}, 2e-2)
  gradcheck("mutual", kd.terms.mutual({model = "a", peers = {"a", "t"}, temperature = 3}), {labeled = b}, {t = peer})
  gradcheck("mse_consistency", kd.terms.mse_consistency({model = "a", teacher = "t"}), {unlabeled = b}, {t = teacher})
  gradcheck("cross_pseudo", kd.terms.cross_pseudo({model = "a", peer = "t"}), {unlabeled = b}, {t = peer})
  -- the strong view is an input (no gradient through the mixing): its term's
  -- gradient reaches the model's weights, here a per-channel scale
  local cut = kd.terms.cutmix({model = "a", p = 1})
  local images = kd.randn({2, 3, 4, 4})
  local ok, report = kd.gradcheck(function(scale)
    kd.manual_seed(5) -- the same boxes at every evaluation
    local s = step_of({pseudo = {images = images, labels = labels, weights = b.weights}}, {"a"}, nil, {strong_view = cut.views.strong_view})
    local model = s.loop.by_name.a.model
    function model:forward_features(x) local y = x * scale; return y, {features = y} end
    return cut.fn(s, cut)
  end, {kd.rand({3}) + 0.5}, {tolerance = 1e-2})
  if not ok then error("cutmix: " .. report) end
  local fp = kd.terms.feature_perturbation({model = "a", threshold = 0.3, p = 0})
  gradcheck("feature_perturbation", fp, {unlabeled = b})
end

function T.term_settings_checked()
  h.raises(function() kd.terms.ce({model = "a", strem = "x"}) end, "terms.ce: unknown setting 'strem'")
  h.raises(function() kd.terms.pixel_kd({teacher = "t"}) end, "terms.pixel_kd: model (the name of the model that learns) is required")
  h.raises(function() kd.terms.ce("a") end, "terms.ce: a table of settings is required")
  local s = step_of({labeled = {images = logits()}}, {"a"})
  h.raises(function() value(kd.terms.pixel_kd({model = "a"}), s) end, "terms.pixel_kd: teacher (a model's name) is required")
  h.raises(function() value(kd.terms.ce({model = "a", stream = "nope"}), s) end, "step: no stream or view named 'nope'")
end

-- A small run of the loop around a spec's parts; returns the spec.
local tmp = os.tmpname()
os.remove(tmp)
local function dataset()
  if not kd.data.files.exists(tmp .. "/data/.done") then
    kd.data.synthcity.write({root = tmp .. "/data", train = 6, coarse = 0, val = 2, height = 32, width = 64, seed = 3})
    kd._C.write_atomic(tmp .. "/data/.done", "")
  end
  return kd.data.Dataset{root = tmp .. "/data", split = "train"}, kd.data.Dataset{root = tmp .. "/data", split = "val"}
end

local function spec(extra)
  local train, val = dataset()
  kd.manual_seed(2)
  local arch = {name = "bench_student", options = {classes = 19}}
  local s = {name = "loop", runs_dir = tmp .. "/runs", iterations = 4, log_every = 2, quiet = true,
             classes = kd.data.classes.cityscapes(),
             models = {{name = "a", model = kd.models.create(arch.name, arch.options), arch = arch, optim = {lr = 0.01}},
                       {name = "b", model = kd.models.create(arch.name, arch.options), arch = arch, optim = {lr = 0.01}}},
             streams = {{name = "labeled", dataset = train, batch_size = 2, workers = 1, augment = {crop = {32, 64}}}},
             terms = {kd.terms.ce({model = "a"}), kd.terms.ce({model = "b"})},
             eval = {dataset = val, workers = 1, ensembles = {{name = "both", models = {"a", "b"}}}}}
  for k, v in pairs(extra or {}) do s[k] = v end
  return s
end

function T.loop_spec_checked()
  h.raises(function() kd.train.Loop(spec({terms = {}})) end, "train.Loop: terms must be a non-empty list")
  h.raises(function() kd.train.Loop(spec({terms = {kd.terms.ce({model = "c"})}})) end, "model 'c' is not one of the loop's")
  local s = spec()
  s.models[2] = {name = "b", model = s.models[2].model, frozen = true}
  s.terms = {kd.terms.ce({model = "a"}), kd.terms.ce({model = "b"})}
  h.raises(function() kd.train.Loop(s) end, "model 'b' does not learn (frozen or EMA)")
  s = spec()
  s.models[2].ema = {of = "x"}
  h.raises(function() kd.train.Loop(s) end, "ema of unknown model 'x'")
  h.raises(function() kd.train.Loop(spec({iterations = 0})) end, "iterations must be a positive integer, got 0")
  h.raises(function() kd.train.Loop(spec({name = "../out"})) end, "name must be a plain relative path")
  s = spec()
  s.models[1].optimiser = {}
  h.raises(function() kd.train.Loop(s) end, "train.Loop model 1: unknown key 'optimiser'")
  h.raises(function() kd.train.Loop(spec({terms = {{name = "x", model = "a"}}})) end, "fn must be a function(step, term)")
  -- a run killed before its first checkpoint resumes from the beginning
  local fresh = kd.train.Loop(spec({name = "never_ran", quiet = true}), {resume = true})
  h.eq(fresh.iteration, 0, "resuming a run with no checkpoint starts at iteration 0")
  h.eq(fresh.resumed, nil, "and is not a resumed run")
  fresh:close()
end

-- A term a script writes: b's features pulled towards a's (detached), the
-- library untouched. It is logged, it moves b's weights, and the run folder
-- has every model's checkpoints, the ensemble's score and the per-term curves.
function T.a_term_of_ones_own()
  local feature_mse = {name = "feature_mse", model = "b", weight = 0.5, fn = function(step)
    local _, fa = step:output("a", "labeled")
    local _, fb = step:output("b", "labeled")
    return kd.losses.mse(fb.features, fa.features:detach())
  end}
  local s = spec({terms = {kd.terms.ce({model = "a"}), kd.terms.ce({model = "b"}), feature_mse}})
  local loop = kd.train.Loop(s)
  local seen
  loop:on("step", function(_, info) seen = info.terms["b.feature_mse"] end)
  local results = loop:run()
  h.truthy(type(seen) == "number" and seen > 0, "the script's term is computed and logged: " .. tostring(seen))
  h.truthy(results.models.a.final_miou and results.models.b.final_miou and results.models.both.final_miou, "every model and the ensemble scored")
  local written = cjson.decode(kd.data.files.read(tmp .. "/runs/loop/results.json"))
  h.eq(written.engine.threads, kd.get_threads(), "results.json records the thread count")
  h.eq(written.engine.conv_precision, kd.conv_precision(), "and the convolutions' precision")
  h.eq(written.engine.conv_algorithm, kd.conv_algorithm(), "and their algorithm")
  for _, f in ipairs({"a/last.safetensors", "a/best.safetensors", "b/last.safetensors", "state.safetensors"}) do
    h.truthy(kd.data.files.exists(tmp .. "/runs/loop/checkpoints/" .. f), f .. " written")
  end
  local metrics = kd.data.files.read(tmp .. "/runs/loop/metrics.jsonl")
  h.truthy(metrics:find('"b.feature_mse"', 1, true), "metrics.jsonl logs the term per model")
  local report = kd.data.files.read(tmp .. "/runs/loop/report.html")
  h.truthy(report:find("b.feature_mse", 1, true), "report.html has the term's curve")
  -- a model mean of several: the EMA of a and b at decay 0 is their mean
  local s2 = spec({name = "mean"})
  s2.models[3] = {name = "m", model = kd.models.create("bench_student", {classes = 19}), ema = {of = {"a", "b"}, decay = 0}}
  local loop2 = kd.train.Loop(s2)
  loop2:step()
  local wa, wb, wm = s2.models[1].model:state_dict(), s2.models[2].model:state_dict(), s2.models[3].model:state_dict()
  local key = "layer1.1.weight"
  h.truthy(wm[key], "the mean model has " .. key)
  h.near(wm[key]:get(5), (wa[key]:get(5) + wb[key]:get(5)) / 2, 1e-6, "EMA of two models at decay 0: their mean")
  loop2:close()
  os.execute("rm -rf " .. tmp)
end

return T
