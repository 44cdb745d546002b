-- bench_full_res: evaluating a network at Cityscapes' full resolution
-- (1024 x 2048), whole and by overlapping 1024 x 1024 windows: seconds per
-- image and peak memory (the tensors' peak and the process's resident peak).
-- Untrained weights: the figures do not depend on them. Data: SynthCity at
-- 1024 x 2048 in data/full_res (made when missing). JSON lines.
--   kdseg tests/bench/bench_full_res.lua [model ...]   (default: deeplabv3plus_resnet101)
local cjson = require("cjson")
local C = kd._C
local root = "data/full_res"
if not kd.data.files.exists(root .. "/.complete") then
  kd.data.synthcity.write({root = root, train = 1, coarse = 0, val = 2, height = 1024, width = 2048, seed = 1})
  C.write_atomic(root .. "/.complete", "")
end
local classes = kd.data.classes.cityscapes()
local ds = kd.data.Dataset({root = root, split = "val", classes = classes})
local evaluate = require("kd.train.evaluate")
local models = #arg > 0 and arg or {"deeplabv3plus_resnet101"}
for _, name in ipairs(models) do
  local net = kd.models.create(name, {classes = classes.count})
  for _, mode in ipairs({{"whole", nil}, {"windows 1024x1024, stride 512", {1024, 1024}, {512, 512}}}) do
    local loader = kd.data.Loader(ds, {batch_size = 1, workers = 1})
    C.reset_peak_memory()
    local start = C.clock()
    local confusion = evaluate.run(net, loader, classes, {crop = mode[2], stride = mode[3]})
    local seconds = C.clock() - start
    loader:close()
    print(cjson.encode({model = name, mode = mode[1], size = "1024x2048", images = #ds.items,
                        threads = kd.get_threads(), seconds_per_image = seconds / #ds.items,
                        tensor_peak_gib = C.memory().peak_bytes / 2 ^ 30, rss_peak_gib = C.rss_peak() / 2 ^ 30,
                        pixels = confusion:scores().pixels}))
  end
end
