-- kd.data: the official labelId -> trainId table, SynthCity on disk, split
-- files, datasets and class tables from YAML, the loader's determinism over
-- worker counts, and the metrics on hand-made confusion cases.
local h = require("harness")
local C = kd._C
local T = {}

local tmp = (os.getenv("TMPDIR") or "/tmp") .. "/kdseg-lua-data-" .. C.getpid()
local function clean() os.execute("rm -rf '" .. tmp .. "'") end

-- A small SynthCity, made once for the tests below.
local synth
local function synthcity()
  if not synth then
    clean()
    synth = tmp .. "/synth"
    kd.data.synthcity.write({root = synth, train = 6, coarse = 8, val = 3, height = 64, width = 128, seed = 7})
  end
  return synth
end

function T.label_ids_to_train_ids_official()
  -- ../shared/reference/cityscapes.md, labelIds 0..33
  local official = "255,255,255,255,255,255,255,0,1,255,255,2,3,4,255,255,255,5,255,6,7,8,9,10,11,12,13,14,15,255,255,16,17,18"
  local lut = kd.data.classes.cityscapes().lut
  local mine = {}
  for id = 0, 33 do mine[#mine + 1] = tostring(lut[id + 1]) end
  h.eq(table.concat(mine, ","), official, "labelId -> trainId")
  for id = 34, 255 do h.eq(lut[id + 1], 255, "labelId " .. id .. " is ignored") end
  local cs = kd.data.classes.cityscapes()
  h.eq(cs.count, 19, "19 classes")
  h.eq(cs.names[7], "traffic light", "names")
  h.eq(table.concat(cs.palette[14], ","), "0,0,142", "car colour")
end

function T.synthcity_layout_and_labels()
  local root = synthcity()
  local f = kd.data.files
  local train = f.find(root .. "/leftImg8bit/train", "_leftImg8bit.png")
  h.eq(#train, 6, "train images")
  h.eq(#f.find(root .. "/leftImg8bit/val", "_leftImg8bit.png"), 3, "val images")
  h.eq(#f.find(root .. "/leftImg8bit/train_extra", "_leftImg8bit.png"), 8, "train_extra images")
  h.eq(#f.find(root .. "/gtFine/train", "_gtFine_labelIds.png"), 6, "fine train labels")
  h.eq(#f.find(root .. "/gtCoarse/train_extra", "_gtCoarse_labelIds.png"), 8, "coarse labels")
  h.eq(#f.find(root .. "/gtFineTrue/train_extra", "_gtFine_labelIds.png"), 8, "hidden true labels")
  h.truthy(not C.is_dir(root .. "/gtFine/train_extra"), "no gtFine for coarse-only images")
  h.truthy(train[1]:match("/synth_%d%d%d%d%d%d_000019_leftImg8bit%.png$"), "Cityscapes file names: " .. train[1])
  local allowed = {[0] = true, [1] = true}
  for _, id in ipairs(kd.data.classes.cityscapes().ids) do allowed[id] = true end
  local fine_px, coarse_px = 0, 0
  for _, pair in ipairs({{"train", "gtFine", "gtCoarse"}, {"train_extra", "gtFineTrue", "gtCoarse"}}) do
    for _, fine_path in ipairs(f.find(root .. "/" .. pair[2] .. "/" .. pair[1], ".png")) do
      local coarse_path = fine_path:gsub("/" .. pair[2] .. "/", "/" .. pair[3] .. "/"):gsub("_gtFine_", "_gtCoarse_")
      local fine, coarse = C.image_read(fine_path):flat(), C.image_read(coarse_path):flat()
      for i = 1, #fine do
        h.truthy(allowed[fine[i]], "fine label value " .. fine[i] .. " is a Cityscapes labelId")
        if coarse[i] ~= 0 then
          coarse_px = coarse_px + 1
          if coarse[i] ~= fine[i] then error("coarse " .. coarse[i] .. " disagrees with fine " .. fine[i] .. " in " .. coarse_path) end
        end
        if fine[i] > 1 then fine_px = fine_px + 1 end
      end
    end
  end
  h.truthy(coarse_px < 0.8 * fine_px, string.format("coarse coverage %d well below fine %d", coarse_px, fine_px))
  -- deterministic: the same seed writes the same bytes
  kd.data.synthcity.write({root = tmp .. "/again", train = 2, coarse = 0, val = 0, height = 64, width = 128, seed = 7})
  h.eq(kd.data.files.read(tmp .. "/again/leftImg8bit/train/synth/synth_000001_000019_leftImg8bit.png"),
       kd.data.files.read(root .. "/leftImg8bit/train/synth/synth_000001_000019_leftImg8bit.png"), "same seed, same file")
end

function T.splits_and_lists()
  local root = synthcity()
  local result = kd.data.splits.write({root = root, fractions = {"1/2", "1/3"}, seed = 4})
  h.eq(result["1_2"].labeled, 3, "1/2 of 6 labeled")
  h.eq(result["1_3"].unlabeled, 4, "1/3: 4 unlabeled")
  local again = kd.data.files.read(root .. "/splits/1_2/labeled.txt")
  kd.data.splits.write({root = root, fractions = {"1/2"}, seed = 4})
  h.eq(kd.data.files.read(root .. "/splits/1_2/labeled.txt"), again, "same seed, same split")
  local labeled = kd.data.Dataset({root = root, list = root .. "/splits/1_2/labeled.txt"})
  local unlabeled = kd.data.Dataset({root = root, list = root .. "/splits/1_2/unlabeled.txt"})
  h.eq(labeled:size(), 3, "labeled list")
  h.eq(unlabeled.items[1].label, nil, "unlabeled list has no labels")
  -- a last line without a newline is accepted
  local list = tmp .. "/nonl.txt"
  local text = kd.data.files.read(root .. "/splits/1_2/labeled.txt"):gsub("\n$", "")
  C.write_atomic(list, text)
  h.eq(kd.data.Dataset({root = root, list = list}):size(), 3, "no final newline")
  C.write_atomic(list, "a b c\n")
  h.raises(function() kd.data.Dataset({root = root, list = list}) end, "nonl.txt:1: expected 'image [label]'")
  h.raises(function() kd.data.splits.parse_fraction("half") end, "must look like 1/8")
end

function T.dataset_tiers()
  local root = synthcity()
  local fine = kd.data.Dataset({root = root, split = "train"})
  local image, label = fine:get(1)
  h.eq(table.concat(image.shape, "x"), "3x64x128", "image")
  h.eq(table.concat(label.shape, "x"), "64x128", "label")
  for _, v in ipairs(label:flat()) do h.truthy(v < 19 or v == 255, "train ids only") end
  local coarse = kd.data.Dataset({root = root, split = "train_extra", labels = "coarse"})
  h.eq(coarse:size(), 8, "coarse tier")
  local none = kd.data.Dataset({root = root, split = "train_extra", labels = "none"})
  local _, nolabel = none:get(1)
  h.eq(nolabel, nil, "unlabeled tier")
  h.raises(function() kd.data.Dataset({root = root, split = "nothere"}) end, "no folder")
  h.raises(function() kd.data.Dataset({root = root, split = "train_extra", labels = "fine"}) end, "no fine label for")
  h.raises(function() kd.data.Dataset({root = root, lables = "fine"}) end, "unknown option 'lables'")
end

-- class_pixels counts each class over the set's label files; checked
-- against a count of every pixel of every label, taken one by one.
function T.class_pixels_of_a_dataset()
  local root = synthcity()
  local coarse = kd.data.Dataset({root = root, split = "train_extra", labels = "coarse"})
  local want = {}
  for c = 1, 19 do want[c] = 0 end
  for i = 1, coarse:size() do
    local _, label = coarse:get(i)
    for _, v in ipairs(label:flat()) do if v < 19 then want[v + 1] = want[v + 1] + 1 end end
  end
  local got, labelled = coarse:class_pixels(), 0
  for c = 1, 19 do
    h.eq(got[c], want[c], "class " .. (c - 1))
    labelled = labelled + got[c]
  end
  h.truthy(labelled > 0, "the coarse labels label something")
  local none = kd.data.Dataset({root = root, split = "train_extra", labels = "none"})
  h.eq(none:class_pixels()[1], 0, "no labels, no pixels")
end

local function batches_of(loader, count)
  local out = {}
  for i = 1, count do
    local b = loader:next()
    out[i] = table.concat(b.images:flat(), ",") .. "|" .. table.concat(b.labels:flat(), ",") .. "|" .. table.concat(b.ids:flat(), ",")
  end
  return out
end

function T.loader_same_batches_for_any_worker_count()
  local ds = kd.data.Dataset({root = synthcity(), split = "train"})
  local options = function(workers)
    return {batch_size = 4, workers = workers, shuffle = true, seed = 11, infinite = true,
            augment = {crop = {48, 64}, scale = {0.6, 1.5}, hflip = true, brightness = 0.3, contrast = 0.3,
                       saturation = 0.3, hue = 0.05, blur_p = 0.5, grayscale_p = 0.2}}
  end
  local zero = batches_of(kd.data.Loader(ds, options(0)), 5)
  local one = batches_of(kd.data.Loader(ds, options(1)), 5)
  local two = batches_of(kd.data.Loader(ds, options(2)), 5)
  for i = 1, 5 do
    h.truthy(zero[i] == one[i] and one[i] == two[i], "batch " .. i .. " is the same with 0, 1 and 2 workers")
  end
  h.truthy(zero[1] ~= zero[3], "batches differ across epochs (reshuffled, re-augmented)")
  local other = options(2)
  other.seed = 12
  h.truthy(batches_of(kd.data.Loader(ds, other), 1)[1] ~= two[1], "another seed, other batches")
end

-- cache_mb: a number of MiB from 0 (none) up; anything else is refused by name.
function T.loader_cache_option()
  local ds = kd.data.Dataset({root = synthcity(), split = "train"})
  local function load(cache_mb) return kd.data.Loader(ds, {batch_size = 2, cache_mb = cache_mb}):next() end
  h.eq(load(0).images:sum():item(), load(nil).images:sum():item(), "0 keeps none: the same batch")
  h.raises(function() load(-1) end, "cache_mb -1 must be 0 (none) to 16777216")
  h.raises(function() load(1e9) end, "must be 0 (none) to 16777216")
  h.raises(function() load("lots") end, "option 'cache_mb' must be a number, got string")
end

function T.loader_epochs_and_shapes()
  local ds = kd.data.Dataset({root = synthcity(), split = "train"})
  local loader = kd.data.Loader(ds, {batch_size = 4, workers = 2, augment = {crop = {32, 32}}})
  h.eq(loader:length(), 2, "6 samples in batches of 4")
  local sizes = {}
  for b in loader:epoch() do sizes[#sizes + 1] = b.images:size(1) end
  h.eq(table.concat(sizes, ","), "4,2", "last batch smaller")
  local b = loader:next()
  h.eq(b.epoch, 2, "the next epoch follows")
  h.eq(table.concat(b.images.shape, "x"), "4x3x32x32", "images")
  h.eq(b.labels.dtype, "int32", "labels int32")
  h.eq(b.weights:get(1), 1, "weights 1 on real pixels")
  local unl = kd.data.Loader(kd.data.Dataset({root = synthcity(), split = "train_extra", labels = "none"}),
                             {batch_size = 2, infinite = true, augment = {crop = {64, 160}}})
  local u = unl:next()
  h.eq(u.labels:get(1), 255, "unlabeled images get the ignore label")
  local padded = 0
  for _, v in ipairs(u.valid:flat()) do if v == 0 then padded = padded + 1 end end
  h.eq(padded, 2 * 64 * 32, "a crop wider than the image pads, marked invalid")
  local step = kd.data.zip(kd.data.Loader(ds, {batch_size = 2, infinite = true}), unl)
  local l, u2 = step()
  h.truthy(l.labels and u2.images, "labeled and unlabeled drawn together")
  h.raises(function() kd.data.Loader(ds, {batch_size = 0}) end, "batch size 0")
  h.raises(function() kd.data.Loader(ds, {augment = {crop = {32, 0}}}) end, "crop 32x0")
  h.raises(function() kd.data.Loader(ds, {augment = {scale = {2, 1}}}) end, "scale range")
  h.raises(function() kd.data.Loader(ds, {augment = {flip = true}}) end, "unknown option 'flip'")
  local nocrop = kd.data.Loader(kd.data.Dataset({root = synthcity(), split = "train"}), {batch_size = 2, augment = {scale = {0.5, 1.5}}})
  h.raises(function() nocrop:next() end, "set a crop size")
end

function T.category_iou_by_hand()
  -- classes a, b in category X, c in Y; truth 0 0 1 1 2 255, prediction 0 1 1 1 0 2
  -- as categories: truth X X X X Y -, prediction X X X X X Y
  -- X: TP 4, FP 1 (the c predicted a), FN 0 -> 4/5; Y: TP 0, FP 0, FN 1 -> 0
  local classes = kd.data.classes.make({{"a", 1, {0, 0, 0}, "X"}, {"b", 2, {0, 0, 0}, "X"}, {"c", 3, {0, 0, 0}, "Y"}}, "t")
  local cm = kd.data.Confusion(classes):update(kd.tensor({0, 1, 1, 1, 0, 2}, "int32"),
                                               kd.tensor({0, 0, 1, 1, 2, 255}, "int32"))
  local cs = cm:category_scores(classes)
  h.eq(table.concat(cs.names, ","), "X,Y", "categories in order")
  h.near(cs.iou[1], 4 / 5, 1e-12, "IoU of X: a predicted as b is right")
  h.eq(cs.iou[2], 0, "IoU of Y")
  h.near(cs.miou, 2 / 5, 1e-12, "category mIoU")
  h.truthy(cm:table(classes):find("category mIoU", 1, true), "printed with the classes")
  h.eq(cm:category_scores(kd.data.classes.make({{"a", 1, {0, 0, 0}}}, "plain")), nil, "no categories, no scores")
  local city = kd.data.classes.cityscapes()
  h.eq(#city.categories, 7, "Cityscapes' seven categories (void holds only ignored labels)")
  h.eq(city.categories[city.category_of[19]], "vehicle", "bicycle is a vehicle")
  h.raises(function() kd.data.classes.make({{"a", 1, {0, 0, 0}, "X"}, {"b", 2, {0, 0, 0}}}, "half") end,
           "every class needs a category, or none")
end

function T.metrics_by_hand()
  -- 3 classes; truth  0 0 1 1 2 255, prediction 0 1 1 1 0 2
  -- class 0: TP 1, FP 1 (the 2 predicted 0), FN 1 -> 1/3
  -- class 1: TP 2, FP 1, FN 0 -> 2/3; class 2: TP 0, FP 0, FN 1 -> 0
  -- the ignored pixel counts nowhere; accuracy 3/5
  local truth = kd.tensor({0, 0, 1, 1, 2, 255}, "int32")
  local pred = kd.tensor({0, 1, 1, 1, 0, 2}, "int32")
  local cm = kd.data.Confusion(3, {"a", "b", "c"}):update(pred, truth)
  local s = cm:scores()
  h.near(s.iou[1], 1 / 3, 1e-12, "IoU a")
  h.near(s.iou[2], 2 / 3, 1e-12, "IoU b")
  h.eq(s.iou[3], 0, "IoU c")
  h.near(s.miou, 1 / 3, 1e-12, "mIoU")
  h.near(s.pixel_accuracy, 3 / 5, 1e-12, "pixel accuracy")
  -- a class absent from both prediction and truth has no IoU and is left out of the mean
  local cm4 = kd.data.Confusion(4):update(pred, truth)
  h.eq(cm4:scores().iou[4], false, "absent class undefined")
  h.near(cm4:scores().miou, 1 / 3, 1e-12, "mean over defined classes only")
  -- accumulated over the set, not averaged per image
  local set = kd.data.Confusion(2)
  set:update(kd.tensor({0, 0}, "uint8"), kd.tensor({0, 0}, "uint8"))
  set:update(kd.tensor({1, 1, 1, 1}, "uint8"), kd.tensor({0, 1, 1, 1}, "uint8"))
  h.near(set:scores().iou[1], 2 / 3, 1e-12, "pooled counts")
  h.truthy(cm:table():find("mIoU", 1, true) and cm:table():find("b ", 1, true), "printed table")
  local named = cm4:named_iou(nil, "none")
  h.near(named["1"], 2 / 3, 1e-12, "IoU by class name")
  h.eq(named["3"], "none", "undefined IoU by name")
  h.raises(function() cm:update(kd.tensor({5}, "int32"), kd.tensor({0}, "int32")) end, "prediction 5")
end

function T.custom_dataset_with_a_yaml_class_table()
  local root = tmp .. "/custom"
  kd.data.files.mkdir_p(root .. "/leftImg8bit/val/site")
  kd.data.files.mkdir_p(root .. "/gtFine/val/site")
  -- label ids 10, 20, 30, 40 for the 4 classes, 0 ignored
  for n = 1, 3 do
    local label = kd.zeros({16, 24}, "uint8")
    for i = 1, label:numel() do label:set(i, ({0, 10, 20, 30, 40})[(i + n) % 5 + 1]) end
    kd.image.write(string.format("%s/gtFine/val/site/site_%06d_000019_gtFine_labelIds.png", root, n), label)
    kd.image.write(string.format("%s/leftImg8bit/val/site/site_%06d_000019_leftImg8bit.png", root, n), kd.zeros({3, 16, 24}, "uint8"))
  end
  local yaml = root .. "/classes.yaml"
  C.write_atomic(yaml, "name: four\nignore_ids: [0]\nclasses:\n  - {name: ground, id: 10, color: [0, 0, 0]}\n" ..
    "  - {name: wall, id: 20, color: [255, 0, 0]}\n  - {name: tree, id: 30}\n  - {name: sky, id: 40, color: [0, 0, 255]}\n")
  local ds = kd.data.Dataset({root = root, split = "val", classes = yaml})
  h.eq(ds.classes.count, 4, "four classes")
  local _, label = ds:get(1)
  local seen = {}
  for _, v in ipairs(label:flat()) do seen[v] = true end
  h.truthy(seen[0] and seen[3] and seen[255] and not seen[10], "label ids mapped to 0..3 and ignore")
  local cm = kd.data.Confusion(ds.classes)
  local loader = kd.data.Loader(ds, {batch_size = 3})
  local batch = loader:next()
  local prediction = batch.labels:clone() -- the truth, with some class where it is ignored
  for i = 1, prediction:numel() do if prediction:get(i) == 255 then prediction:set(i, 2) end end
  cm:update(prediction, batch.labels)
  h.eq(cm:scores().miou, 1, "a perfect prediction evaluates to mIoU 1")
  h.truthy(cm:table():find("tree", 1, true), "class names in the table")
  C.write_atomic(yaml, "classes:\n  - {name: a, id: 1}\n  - {name: b, id: 1}\n")
  h.raises(function() kd.data.classes.load(yaml) end, "classes.yaml:3: id 1 is used twice")
  C.write_atomic(yaml, "classes:\n  - {name: a, idd: 1}\n")
  h.raises(function() kd.data.classes.load(yaml) end, "classes.yaml:2: unknown key 'idd' in class 1")
  C.write_atomic(yaml, "classes: [\n")
  h.raises(function() kd.data.classes.load(yaml) end, "classes.yaml:2")
  -- found by fuzzing: a string where the list of ignored ids goes
  C.write_atomic(yaml, "ignore_ids: zero\nclasses:\n  - {name: a, id: 1}\n")
  h.raises(function() kd.data.classes.load(yaml) end, "classes.yaml:1: ignore_ids must be a list of ids")
  C.write_atomic(yaml, "name: [x]\nclasses:\n  - {name: a, id: 1}\n")
  h.raises(function() kd.data.classes.load(yaml) end, "classes.yaml:1: name must be a string")
  -- categories: all classes or none, each a name
  C.write_atomic(yaml, "classes:\n  - {name: a, id: 1, category: flat}\n  - {name: b, id: 2}\n")
  h.raises(function() kd.data.classes.load(yaml) end, "classes.yaml:3", "every class needs a category, or none")
  C.write_atomic(yaml, "classes:\n  - {name: a, id: 1, category: [flat]}\n")
  h.raises(function() kd.data.classes.load(yaml) end, "classes.yaml:2", "category must be a name")
  C.write_atomic(yaml, "classes:\n  - {name: a, id: 1, category: flat}\n  - {name: b, id: 2, category: sky}\n")
  h.eq(table.concat(kd.data.classes.load(yaml).categories, ","), "flat,sky", "categories from YAML")
  os.execute("rm -rf '" .. root .. "'")
end

function T.cutmix_and_cutout()
  kd.manual_seed(3)
  local a, b = kd.zeros({4, 3, 20, 30}), kd.ones({4, 3, 20, 30})
  local la, lb = kd.zeros({4, 20, 30}, "int32"), kd.full({4, 20, 30}, 7, "int32")
  local masks = kd.data.box_masks(a, {p = 1, area = {0.1, 0.3}})
  h.eq(table.concat(masks.shape, "x"), "4x20x30", "one mask per image")
  local mixed, mixed_labels = kd.data.cutmix(a, la, b, lb, masks)
  local inside = 0
  local m, img, lab = masks:flat(), mixed:flat(), mixed_labels:flat()
  for i = 1, #m do
    inside = inside + m[i]
    -- channel 1 of each image: pixel i of image n sits at n*3*600 + p
    local n, p = math.floor((i - 1) / 600), (i - 1) % 600
    h.eq(img[n * 1800 + p + 1], m[i], "image taken from the other batch inside the box")
    h.eq(lab[i], m[i] * 7, "label follows the image")
  end
  h.truthy(inside > 4 * 600 * 0.09 and inside < 4 * 600 * 0.31, "box areas within the range: " .. inside)
  h.eq(a:sum():item(), 0, "the input batch is untouched")
  local cut, cut_labels = kd.data.cutout(b, lb, masks)
  h.eq(cut:sum():item(), 3 * (4 * 600 - inside), "cutout zeroes the boxes")
  h.eq(cut_labels:get(1) == 255 or cut_labels:get(1) == 7, true, "cutout labels")
  h.eq(kd.sum(kd.data.box_masks(a, {p = 0}):to("float32")):item(), 0, "p 0: no boxes")
  local rolled = kd.data.roll(kd.tensor({{1}, {2}, {3}}, "int32"))
  h.eq(table.concat(rolled:flat(), ","), "2,3,1", "roll: each image's partner is the next one")
  h.raises(function() kd.data.box_masks(a, {p = 2}) end, "box_masks: p 2")
end

-- runs last (tests run in name order): the shared SynthCity goes
function T.zz_remove_temporary_files()
  clean()
  synth = nil
end

return T
