-- make_seeds: the seed corpus of every harness, written by kdseg into the
-- folder given (build/fuzz/seeds): valid inputs of each kind, so that
-- fuzzing starts from files kdseg accepts and mutates them.
--   kdseg tests/fuzz/make_seeds.lua build/fuzz/seeds
local out = assert(arg[1], "usage: make_seeds.lua OUT")
local C = kd._C
local function put(target, name, bytes)
  kd.data.files.mkdir_p(out .. "/" .. target)
  C.write_atomic(out .. "/" .. target .. "/" .. name, bytes)
end
local function read(path) return kd.data.files.read(path) end

-- PNG: every kind the writer makes (gray, gray+alpha, RGB, RGBA, palette)
local tmp = out .. "/.tmp"
kd.data.files.mkdir_p(tmp)
kd.manual_seed(1)
for channels = 1, 4 do
  local img = (kd.rand({channels, 5, 7}) * 255):to("uint8")
  kd.image.write(tmp .. "/c.png", img)
  put("image", "channels" .. channels .. ".png", read(tmp .. "/c.png"))
  put("loader", "channels" .. channels .. ".png", read(tmp .. "/c.png"))
end
-- JPEG: colour and gray
for _, spec in ipairs({{"colour", 3}, {"gray", 1}}) do
  kd.image.write(tmp .. "/j.jpg", (kd.rand({spec[2], 9, 14}) * 255):to("uint8"))
  put("image", spec[1] .. ".jpg", read(tmp .. "/j.jpg"))
  put("loader", spec[1] .. ".jpg", read(tmp .. "/j.jpg"))
end
local labels = (kd.rand({1, 9, 13}) * 19):to("uint8")
kd.image.write(tmp .. "/p.png", labels, kd.data.classes.cityscapes().palette)
put("image", "palette.png", read(tmp .. "/p.png"))
put("loader", "palette.png", read(tmp .. "/p.png"))

-- safetensors: a checkpoint-like file with metadata and every dtype
kd.save(tmp .. "/w.safetensors", {weight = kd.randn({2, 3, 1, 1}), bias = kd.zeros({2}),
                                  steps = kd.tensor({3}, "int32"), mask = kd.ones({2, 2}, "uint8")},
        {iteration = "7", model = "{\"name\": \"bench_student\"}"})
put("safetensors", "weights.safetensors", read(tmp .. "/w.safetensors"))

-- YAML and configs
local cfg = read(C.scripts_dir .. "/../experiments/demo_supervised.yaml")
put("yaml", "demo_supervised.yaml", cfg)
put("config", "demo_supervised.yaml", cfg)
put("config", "run.json", '{"name": "r", "data": {"batch_size": 2, "augment": {"crop": [32, 64]}}, "train": {"iterations": 5}}')
put("yaml", "anchors.yaml", "base: &b {lr: 0.1, list: [1, 2.5, -3, true, null, 'x']}\nother: *b\nmulti: |\n  text\n")
put("override", "overrides.txt", "optim.lr=0.02\ndata.augment.crop=[64, 128]\nmodel.name=erfnet\ntrain.iterations=10\n")

-- split lists, class tables, sweep specs, ledgers
put("split", "list.txt", "a.png l.png\na.png\n\n  a.png   l.png  \n")
put("classes", "four.yaml", "name: four\nignore_ids: [0]\nclasses:\n  - {name: ground, id: 10, color: [0, 0, 0]}\n"
    .. "  - {name: wall, id: 20, color: [255, 0, 0]}\n  - {name: tree, id: 30}\n  - {name: sky, id: 40, color: [0, 0, 255]}\n")
put("sweep", "kd_weights.yaml", read(C.scripts_dir .. "/../experiments/sweeps/kd_weights.yaml"))
put("sweep", "grid.yaml", "config: tiny.lua\nmethod: grid\nseeds: [1, 2]\nparameters:\n  optim.lr: {values: [0.01, 0.02]}\n"
    .. "  model.name: {values: [bench_student, erfnet]}\nmetric: {name: final_miou, goal: maximize}\n"
    .. "early_terminate: {type: median, min_evals: 2}\n")
put("ledger", "ledger.jsonl", '{"trial":"t000","index":0,"state":"started","params":{"optim.lr":0.1},"seed":1}\n'
    .. '{"trial":"t000","index":0,"state":"finished","metric":0.5,"time":1}\n{"trial":"t001","state":"failed","error":"x"}\n')
C.remove_tree(tmp)
