-- The method's building blocks: each refinement rule on hand-made probability
-- maps and coarse labels, per-class thresholds, weights and statistics; the
-- weight schedules; gradient checks of every loss term through the Lua API.
local h = require("harness")
local T = {}
local P = kd.pseudo

-- 1 image of 1 x 4 pixels, 3 classes; probabilities per pixel (columns):
--   pixel 1: (0.98, 0.01, 0.01)  pixel 2: (0.02, 0.03, 0.95)
--   pixel 3: (0.1, 0.85, 0.05)   pixel 4: (0.4, 0.35, 0.25)
local function maps()
  local probs = kd.tensor({{{{0.98, 0.02, 0.1, 0.4}}, {{0.01, 0.03, 0.85, 0.35}}, {{0.01, 0.95, 0.05, 0.25}}}})
  local pred, conf = P.decide(probs)
  return probs, pred, conf
end

local function labels_of(t) return table.concat(t:flat(), ",") end

function T.decide()
  local _, pred, conf = maps()
  h.eq(labels_of(pred), "0,2,1,0", "argmax per pixel")
  h.near(conf:get(3), 0.85, 1e-6, "confidence")
end

-- With flip, the teacher's distributions of a mirrored image are those of
-- the image, mirrored: true of the mean over both views whatever the model,
-- and false of a plain convolution with an asymmetric kernel.
function T.predict_with_flip_is_mirror_symmetric()
  kd.manual_seed(3)
  local teacher = kd.nn.Conv2d(3, 4, 3, {padding = 1})
  local x = kd.randn({1, 3, 5, 6})
  local function gap(flip)
    local a = P.predict(teacher, x, 1, flip)
    local b = P.predict(teacher, x:flip_width(), 1, flip):flip_width()
    local worst = 0
    for i, v in ipairs(a:flat()) do worst = math.max(worst, math.abs(v - b:flat()[i])) end
    return worst
  end
  h.truthy(gap(true) < 1e-6, "flip: mirror-symmetric, gap " .. gap(true))
  h.truthy(gap(false) > 1e-3, "without flip the model alone: not symmetric, gap " .. gap(false))
  h.near(P.predict(teacher, x, 1, true):sum():item(), 30, 1e-4, "distributions over 4 classes at 30 pixels")
end

function T.keep_coarse_unless_confident()
  local probs, pred, conf = maps()
  -- coarse says 1 at pixel 1 (teacher: 0 at 0.98 -> overruled), 0 at pixel 2
  -- (teacher: 2 at 0.95 -> overruled at threshold 0.9, kept at 0.97), gap at
  -- 3, 1 at pixel 4 (teacher: 0 at 0.4 -> kept)
  local coarse = kd.tensor({{{1, 0, 255, 1}}}, "int32")
  local state = {probs = probs, pred = pred, conf = conf, coarse = coarse, classes = 3}
  state.labels = coarse
  h.eq(labels_of(P.rules.keep_coarse(state, {threshold = 0.9})), "0,2,255,1", "threshold 0.9")
  h.eq(labels_of(P.rules.keep_coarse(state, {threshold = 0.97})), "0,0,255,1", "threshold 0.97")
end

function T.fill_gaps_where_confident()
  local probs, pred, conf = maps()
  local state = {probs = probs, pred = pred, conf = conf, classes = 3, labels = kd.tensor({{{255, 255, 255, 1}}}, "int32")}
  h.eq(labels_of(P.rules.fill(state, {threshold = 0.9})), "0,2,255,1", "fixed threshold: 0.85 and labelled pixels untouched")
  h.eq(labels_of(P.rules.fill(state, {threshold = 0.8})), "0,2,1,1", "lower threshold fills pixel 3")
  state.thresholds = {0.99, 0.5, 0.9} -- per class: class 0 needs 0.99
  h.eq(labels_of(P.rules.fill(state, {threshold = "per_class"})), "255,2,1,1", "per-class thresholds")
  local schedule = P.schedules.linear(0.94, 0.8, 3)
  h.eq(labels_of(P.rules.fill(state, {threshold = schedule}, 1)), "0,2,255,1", "scheduled threshold, cycle 1 (0.94)")
  h.eq(labels_of(P.rules.fill(state, {threshold = schedule}, 3)), "0,2,1,1", "scheduled threshold, cycle 3 (0.8)")
end

function T.per_class_percentile_thresholds()
  -- class 0 predicted with confidences 0.6, 0.7, 0.8, 0.9; class 1 with 0.55, 0.65; class 2 never
  local pred = kd.tensor({{{0, 0, 0, 0, 1, 1}}}, "int32")
  local conf = kd.tensor({{{0.6, 0.7, 0.8, 0.9, 0.55, 0.65}}})
  local t = P.class_thresholds(pred, conf, 3, {percentile = 50, min = 0.5, max = 0.95})
  h.near(t[1], 0.8, 2e-3, "median of class 0")
  h.near(t[2], 0.65, 2e-3, "median of class 1")
  h.near(t[3], 0.95, 1e-6, "an unpredicted class gets the maximum")
  local strict = P.class_thresholds(pred, conf, 3, {percentile = 50, min = 0.7, max = 0.75})
  h.near(strict[1], 0.75, 1e-6, "clamped to max")
  h.near(strict[2], 0.7, 1e-6, "clamped to min")
end

function T.refine_weights_and_stats()
  local probs, pred, conf = maps()
  local coarse = kd.tensor({{{1, 0, 255, 1}}}, "int32")
  local labels, weights = P.refine({probs = probs, pred = pred, conf = conf, coarse = coarse, classes = 3},
                                   {{"keep_coarse", threshold = 0.9}, {"fill", threshold = 0.8}}, 1)
  h.eq(labels_of(labels), "0,2,1,1", "rules in order")
  h.near(weights:get(1), 0.98, 1e-6, "weight = teacher probability of the label")
  h.near(weights:get(4), 0.35, 1e-6, "a kept coarse label weighs the teacher's belief in it")
  local _, trusting = P.refine({probs = probs, pred = pred, conf = conf, coarse = coarse, classes = 3},
                               {{"keep_coarse", threshold = 0.9, weight = 1}, {"fill", threshold = 0.8}}, 1)
  for i, want in ipairs({0.98, 0.95, 0.85, 1}) do -- overruled, overruled, filled, kept
    h.near(trusting:get(i), want, 1e-6, "a kept coarse label weighs 1 when trusted; the others the teacher's belief")
  end
  local dropped = P.rules.drop_unsure({probs = probs, labels = labels}, {min_weight = 0.5})
  h.eq(labels_of(dropped), "0,2,1,255", "drop_unsure")
  local truth = kd.tensor({{{0, 2, 0, 1}}}, "int32")
  local st = P.stats(labels, truth, 3)
  h.eq(st.coverage, 1, "coverage")
  h.eq(st.accuracy, 0.75, "accuracy against the truth")
  h.eq(st.per_class[2].labelled, 2, "class 1 pseudo-labelled twice")
  h.eq(st.per_class[2].correct, 1, "once correctly")
  h.raises(function() P.refine({probs = probs, pred = pred, conf = conf, classes = 3}, {{"nonsense"}}) end, "rule 1 'nonsense' is unknown")
  h.raises(function() kd._C.pseudo_trust_coarse(kd.zeros({1, 1, 3}), labels, coarse, 1) end, "weights 1x1x3 do not match labels")
  h.raises(function() kd._C.pseudo_trust_coarse(weights, labels, coarse:to("float32"), 1) end, "pseudo_trust_coarse: coarse labels")
end

function T.weight_schedules()
  local S = kd.distill.schedules
  local ramp = S.sigmoid_rampup(2, 100)
  h.near(ramp(0), 2 * math.exp(-5), 1e-12, "ramp start")
  h.near(ramp(100), 2, 1e-12, "ramp end")
  h.near(ramp(50), 2 * math.exp(-5 * 0.25), 1e-12, "ramp middle")
  h.eq(S.linear(0, 1, 10)(5), 0.5, "linear")
  h.eq(S.step({1, 0.5, 0.1}, 10)(15), 0.5, "step")
  h.near(S.cosine(1, 0, 10)(5), 0.5, 1e-12, "cosine")
  h.eq(kd.distill.weight(0.3, 7), 0.3, "constant weight")
  h.near(kd.distill.weight({"linear", 0, 2, 4}, 2), 1, 1e-12, "a schedule written in a config")
end

local function check(name, f, inputs, tolerance)
  local ok, report = kd.gradcheck(f, inputs, {tolerance = tolerance or 1e-2})
  if not ok then error(name .. ": " .. report, 2) end
end

-- The structured-distillation paper's pooling: kernel int(size x 0.5) in
-- ceil mode, the maps' norms constants in the gradient.
function T.pairwise_kd_max_pooling()
  -- a 1 x 2 x 1 x 4 student: max pooling with kernel 1x2 gives nodes (3, 0)
  -- and (0, 5) (orthogonal); the teacher's nodes (1, 1) and (2, 2) (parallel):
  -- the off-diagonal similarities differ by 1 twice, over N M^2 = 4
  local sf = kd.tensor({{{{3, 1, 0, -2}}, {{0, -1, 5, 4}}}})
  local tf = kd.tensor({{{{1, 0, 2, 1}}, {{1, -3, 2, 0}}}})
  h.near(kd.distill.pairwise_kd(sf, tf, nil, "max", 0.5):item(), 0.5, 1e-6, "max pooling: (1 + 1) / 2^2")
  -- a width of 5 at scale 0.5: kernel 2, ceil mode: 3 nodes (the last one the lone column)
  local odd = kd.randn({1, 3, 2, 5})
  h.eq(table.concat(kd.max_pool2d(odd, {kernel = {1, 2}, stride = {1, 2}, ceil_mode = true}).shape, "x"), "1x3x2x3",
       "ceil mode keeps the last column")
  -- the gradient with the norms held constant, against the formula by hand:
  -- dL/dp_i = sum_j 4 (Ss_ij - St_ij) q_j / (N M^2 r_i) on the pooled nodes
  local s, t = kd.randn({2, 3, 2, 3}), kd.randn({2, 4, 2, 3})
  s.requires_grad = true
  kd.losses.pairwise_similarity(s, t, {detach_norm = true}):backward()
  local N, M = 2, 6
  local function node(x, n, i)
    local v, r = {}, 0
    for c = 1, x:size(2) do v[c] = x:get((n - 1) * x:size(2) * M + (c - 1) * M + i); r = r + v[c] ^ 2 end
    r = math.sqrt(r + 1e-8)
    local q = {}
    for c = 1, #v do q[c] = v[c] / r end
    return q, r
  end
  local function dot(a, b) local d = 0 for c = 1, #a do d = d + a[c] * b[c] end return d end
  local worst = 0
  for n = 1, N do
    for i = 1, M do
      local qi, ri = node(s, n, i)
      local qti = node(t, n, i)
      for c = 1, 3 do
        local g = 0
        for j = 1, M do
          local qj = node(s, n, j)
          local qtj = node(t, n, j)
          g = g + 4 * (dot(qi, qj) - dot(qti, qtj)) * qj[c]
        end
        g = g / (N * M * M * ri)
        worst = math.max(worst, math.abs(g - s.grad:get((n - 1) * 3 * M + (c - 1) * M + i)))
      end
    end
  end
  h.truthy(worst < 1e-5, "detached-norm gradient by hand: worst difference " .. worst)
  h.raises(function() kd.distill.pairwise_kd(sf, tf, nil, "median") end, "pooling must be 'grid' or 'max'")
end

function T.loss_terms_gradcheck()
  local teacher = kd.randn({2, 5, 3, 4})
  check("pixel_kd", function(s) return kd.distill.pixel_kd(s, teacher, 3) end, {kd.randn({2, 5, 3, 4})})
  local tf = kd.randn({2, 6, 6, 8})
  check("pairwise_kd", function(s) return kd.distill.pairwise_kd(s, tf, {2, 4}) end, {kd.randn({2, 4, 6, 8})}, 2e-2)
  local peer = kd.randn({2, 5, 3, 4})
  check("mutual", function(s) return kd.distill.mutual({s, peer, peer * 2}, 1, 2) end, {kd.randn({2, 5, 3, 4})})
  local labels = kd.zeros({2, 3, 4}, "int32")
  for i = 1, labels:numel() do labels:set(i, i % 6 == 0 and 255 or i % 5) end
  local weights = kd.rand({2, 3, 4})
  check("pseudo_ce", function(s) return kd.distill.pseudo_ce(s, labels, weights) end, {kd.randn({2, 5, 3, 4})})
end

-- Class weights by hand: counts 100, 25, 0, 4 -> 3 classes present, mean 43;
-- power 0.5: sqrt(43/100) = 0.6557, sqrt(43/25) = 1.3115, 1 (none),
-- sqrt(43/4) = 3.2787, capped at 3. pseudo_ce with them: 2 pixels of 2
-- classes with logits 0 (loss ln 2 each), labels 0 and 1, pixel weights 1
-- and 0.5: (0.6557 ln2 + 1.3115 * 0.5 ln2) / (0.6557 + 1.3115).
function T.pseudo_class_balance_by_hand()
  local w = kd.distill.class_balance({100, 25, 0, 4}, 0.5, 3)
  local want = {math.sqrt(43 / 100), math.sqrt(43 / 25), 1, 3}
  for c = 1, 4 do h.near(w:get(c), want[c], 1e-6, "weight of class " .. c) end
  h.near(kd.distill.class_balance({100, 25, 0, 4}, 0):get(2), 1, 0, "power 0: every class 1")
  local cw = kd.tensor({want[1], want[2]})
  local loss = kd.distill.pseudo_ce(kd.zeros({1, 2, 1, 2}), kd.tensor({{{0, 1}}}, "int32"), kd.tensor({{{1, 0.5}}}), cw)
  h.near(loss:item(), (want[1] + want[2] * 0.5) * math.log(2) / (want[1] + want[2]), 1e-6, "class-weighted pseudo_ce")
  local labels = kd.zeros({2, 3, 4}, "int32")
  for i = 1, labels:numel() do labels:set(i, i % 6 == 0 and 255 or i % 5) end
  local weights, class_weights = kd.rand({2, 3, 4}), kd.tensor({0.5, 1, 2, 3, 0.7})
  check("class-weighted pseudo_ce", function(s) return kd.distill.pseudo_ce(s, labels, weights, class_weights) end,
        {kd.randn({2, 5, 3, 4})})
end

-- pixel_kd with labels leaves out the pixels whose label the teacher's class
-- contradicts; ignored pixels are distilled; the mean is over all pixels.
function T.pixel_kd_respects_labels()
  local s, t = kd.randn({1, 3, 1, 4}), kd.randn({1, 3, 1, 4})
  local labels = kd.argmax(t):clone()
  labels:set(2, (labels:get(2) + 1) % 3) -- contradicts the teacher
  labels:set(3, 255)
  local per = kd.losses.kl_div(s, t, {temperature = 2, reduction = "none"}):flat()
  h.near(kd.distill.pixel_kd(s, t, 2, labels):item(), (per[1] + per[3] + per[4]) / 4, 1e-6, "pixel 2 left out")
  h.near(kd.distill.pixel_kd(s, t, 2):item(), (per[1] + per[2] + per[3] + per[4]) / 4, 1e-6, "without labels: every pixel")
  check("pixel_kd with labels", function(x) return kd.distill.pixel_kd(x, t, 2, labels) end, {kd.randn({1, 3, 1, 4})})
  h.raises(function() kd.distill.pixel_kd(s, t, 2, kd.zeros({1, 1, 3}, "int32")) end, "label_agreement: maps")
end

-- pixel_kd with class weights: each pixel weighs its teacher class's
-- weight, the mean is over those weights, and a pixel whose label the teacher
-- contradicts stays in the weights but not in the sum.
function T.pixel_kd_class_weights_by_hand()
  local s, t = kd.randn({1, 3, 1, 4}), kd.randn({1, 3, 1, 4})
  local cw = kd.tensor({0.5, 2, 1})
  local per = kd.losses.kl_div(s, t, {temperature = 2, reduction = "none"}):flat()
  local classes = kd.argmax(t):flat()
  local w = {}
  for p = 1, 4 do w[p] = cw:get(classes[p] + 1) end
  local sum_w = w[1] + w[2] + w[3] + w[4]
  h.near(kd.distill.pixel_kd(s, t, 2, nil, cw):item(),
         (w[1] * per[1] + w[2] * per[2] + w[3] * per[3] + w[4] * per[4]) / sum_w, 1e-6, "class-weighted mean")
  local labels = kd.argmax(t):clone()
  labels:set(2, (labels:get(2) + 1) % 3)
  h.near(kd.distill.pixel_kd(s, t, 2, labels, cw):item(), (w[1] * per[1] + w[3] * per[3] + w[4] * per[4]) / sum_w, 1e-6,
         "contradicted pixel 2: out of the sum, in the weights")
  local map = kd._C.class_weight_map(kd.tensor({{0, 2, 255, -1}}, "int32"), cw):flat()
  h.eq(map[1], 0.5, "class 0"); h.eq(map[2], 1, "class 2"); h.eq(map[3], 0, "ignore label weighs 0"); h.eq(map[4], 0, "-1 weighs 0")
  check("class-weighted pixel_kd", function(x) return kd.distill.pixel_kd(x, t, 2, labels, cw) end, {kd.randn({1, 3, 1, 4})})
  h.raises(function() kd.distill.pixel_kd(s, t, 2, nil, kd.zeros({3})) end, "sum to 0")
  h.raises(function() kd._C.class_weight_map(kd.zeros({4}), cw) end, "class_weight_map")
end

-- The retraining set keeps the few fine images at about the asked share.
function T.retrain_items_fine_share()
  local semisup = require("kd.method.semisup")
  local fine, pseudo, weights = {}, {}, {}
  for i = 1, 4 do fine[i] = {image = "f" .. i} end
  for i = 1, 36 do pseudo[i] = {image = "p" .. i}; weights[i] = "w" .. i end
  local items, w = semisup.retrain_items(fine, pseudo, weights, 0.5)
  h.eq(#items, 4 * 9 + 36, "fine repeated 9 times next to 36 pseudo items")
  h.eq(items[5].image, "f1", "the fine list repeats in order")
  h.eq(w[1], false, "fine items have no weight PNG")
  h.eq(items[37].image, "p1", "pseudo items follow")
  h.eq(w[72], "w36", "each pseudo item keeps its weight PNG")
  local once = semisup.retrain_items(fine, pseudo, weights, 0)
  h.eq(#once, 40, "share 0: every image once")
  h.eq(#semisup.retrain_items(fine, pseudo, weights, 0.2), 4 * 2 + 36, "share 0.2: 0.25 * 36 / 4 = 2.25 repeats, rounded")
end

-- Pseudo-labels are keyed by the image's path under the dataset root:
-- coarse-only and unlabeled images with the same file names (as many
-- datasets have) each get their own label file, and a label file two
-- images would share is an error.
function T.pseudo_labels_of_images_with_one_file_name()
  local semisup = require("kd.method.semisup")
  local root = os.tmpname()
  os.remove(root)
  kd.data.synthcity.write({root = root, train = 2, coarse = 3, val = 1, height = 16, width = 32, seed = 2})
  -- the unlabeled tier: other pictures under the coarse images' file names
  os.execute(string.format("mkdir -p %s/leftImg8bit/unlabeled && cd %s/leftImg8bit && for f in train_extra/synth/*.png; do "
                           .. "cp val/synth/*.png unlabeled/$(basename $f); done", root, root))
  local list = {}
  for _, path in ipairs(kd.data.files.find(root .. "/leftImg8bit/unlabeled", ".png")) do list[#list + 1] = path:sub(#root + 2) end
  kd._C.write_atomic(root .. "/unlabeled.txt", table.concat(list, "\n") .. "\n")
  local cfg = kd.config.merge(semisup.defaults, {data = {root = root, unlabeled = "unlabeled.txt"}, workers = 0})
  local classes = kd.data.classes.cityscapes()
  local weak = semisup.weak_items(cfg, classes)
  h.eq(#weak, 6, "three coarse and three unlabeled images")
  kd.manual_seed(1)
  local teacher = kd.models.bench_student({classes = 19})
  local dir = root .. "/cycle"
  local items = semisup.label_cycle(teacher, weak, {}, 1, cfg, classes, dir, false)
  local seen = {}
  for i, it in ipairs(items) do
    h.truthy(not seen[it.label], "label file " .. it.label .. " written once")
    seen[it.label] = true
    h.truthy(kd.data.files.exists(it.label), it.label .. " exists")
    h.eq(it.image, weak[i].image, "item " .. i .. " keeps its image")
  end
  h.truthy(items[1].label:find("/train_extra/", 1, true), "a coarse image's label under its own folder: " .. items[1].label)
  h.truthy(items[4].label:find("/unlabeled/", 1, true), "an unlabeled image's label under its own folder: " .. items[4].label)
  local twice = {weak[1], weak[2], weak[1]}
  h.raises(function() semisup.label_cycle(teacher, twice, {}, 1, cfg, classes, root .. "/cycle2", false) end,
           "would share the pseudo-label file")
  h.raises(function() semisup.pseudo_paths(dir, root, root .. "/../elsewhere.png") end, "not inside the dataset root")
  h.raises(function() semisup.pseudo_paths(dir, root, "/somewhere/else.png") end, "not inside the dataset root")
  os.execute("rm -rf " .. root)
end

-- The pseudo-label probe on a model of known output: the maps above for
-- every image (1 x 4 pixels, 3 classes: argmax 0,2,1,0, confidence 0.98,
-- 0.95, 0.85, 0.4) against the truth 0,2,2,1. Threshold 0.9 labels pixels
-- 1 and 2, both right: coverage 0.5, accuracy 1. Threshold 0 labels all
-- four, two right: 0.5. The mIoU of the argmax: class 0 1/2 (pixel 1 right,
-- pixel 4 wrongly), class 1 0, class 2 1/2: 1/3.
function T.pseudo_probe_on_a_known_model()
  local probe = require("kd.train.pseudo_probe")
  local root = os.tmpname()
  os.remove(root)
  kd.data.files.mkdir_p(root)
  local items = {}
  for n = 1, 3 do
    local image, label = string.format("%s/img%d.png", root, n), string.format("%s/lab%d.png", root, n)
    kd.image.write(image, kd.zeros({3, 1, 4}, "uint8"))
    kd.image.write(label, kd.tensor({{0, 2, 2, 1}}):to("uint8"))
    items[n] = {image = image, label = label, train_ids = true}
  end
  local classes = kd.data.classes.make({{"a", 0, {0, 0, 0}}, {"b", 1, {0, 0, 0}}, {"c", 2, {0, 0, 0}}}, "three")
  local dataset = kd.data.Dataset.from_items(items, classes, true)
  local one = {{{0.98, 0.02, 0.1, 0.4}}, {{0.01, 0.03, 0.85, 0.35}}, {{0.01, 0.95, 0.05, 0.25}}} -- maps()'s
  local model = setmetatable({training = true}, {__call = function(_, images)
    local batch = {}
    for i = 1, images:size(1) do batch[i] = one end
    return kd.tensor(batch):log()
  end})
  function model:eval() self.training = false return self end
  function model:train(on) self.training = on ~= false return self end
  local r = probe.measure(model, dataset, classes, 0.9, {batch_size = 2, workers = 0})
  h.near(r.coverage, 0.5, 1e-9, "threshold 0.9: two of four pixels labelled")
  h.near(r.accuracy, 1, 1e-9, "both right")
  h.near(r.miou, 1 / 3, 1e-6, "mIoU of the argmax")
  r = probe.measure(model, dataset, classes, 0, {batch_size = 2, workers = 0})
  h.near(r.coverage, 1, 1e-9, "threshold 0: every pixel")
  h.near(r.accuracy, 0.5, 1e-9, "two of four right")
  h.truthy(model.training, "the model's mode is given back")
  h.raises(function() probe.attach({}, {dataset = dataset, every = 0, sources = {{model = "m"}}}) end, "every must be")
  h.raises(function() probe.attach({}, {dataset = dataset, every = 5, sources = {}}) end, "sources must be")
  h.raises(function() probe.attach({}, {dataset = dataset, every = 5, sources = {{model = "m", threshold = 2}}}) end,
           "threshold must be")
  h.raises(function() probe.attach({}, {dataset = {}, every = 5, sources = {{model = "m"}}}) end, "dataset must be")
  os.execute("rm -rf " .. root)
end

return T
