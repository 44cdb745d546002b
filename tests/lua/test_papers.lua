-- The papers' networks (kd.models.papers) against PyTorch, through the
-- committed fixture of tests/fixtures/torch (made by make_fixture.py with
-- python3-torch; no Python runs here):
-- - every network's state-dict names and shapes are those of the PyTorch
--   modules in scripts/torch/kdseg_models.py, whose backbones carry
--   torchvision's names, so weights go both ways with strict checking;
-- - narrow networks of each family give PyTorch's logits, from a .pth
--   converted by scripts/torch/convert.py, or from weights both sides
--   compute from the names.
local h = require("harness")
local cjson = require("cjson")
local T = {}

local fixture = "tests/fixtures/torch"

local function read_json(path)
  local f = assert(io.open(path, "rb"))
  local text = f:read("*a")
  f:close()
  return cjson.decode(text)
end

local function shape_string(shape)
  -- PyTorch's num_batches_tracked is 0-dimensional, kdseg's holds 1 value
  if #shape == 0 then return "1" end
  return table.concat(shape, "x")
end

-- The options that keep a network small where only names and shapes matter
-- are not used here: names.json was made at the real widths, so the
-- networks are built at them (R101 has 60M parameters: a few seconds).
function T.names_and_shapes_are_pytorchs()
  for _, entry in ipairs(read_json(fixture .. "/names.json")) do
    local options = {}
    for k, v in pairs(entry.options) do options[k] = v end
    local net = kd.models.create(entry.model, options)
    local what = entry.model .. " " .. cjson.encode(entry.options)
    local own, n = net:state_dict(), 0
    for name, shape in pairs(entry.state) do
      h.truthy(own[name] ~= nil, what .. ": PyTorch's " .. name .. " is in kdseg's state dict")
      h.eq(shape_string(own[name].shape), shape_string(shape), what .. ": shape of " .. name)
      n = n + 1
    end
    local count = 0
    for _ in pairs(own) do count = count + 1 end
    h.eq(count, n, what .. ": kdseg has no names PyTorch lacks")
    collectgarbage()
  end
end

-- The weights make_fixture.py's fill() computes: from each tensor's name
-- and each element's index, in integer arithmetic exact in doubles, rounded
-- once to float32 when stored.
local function fill(net)
  for name, t in pairs(net:state_dict()) do
    local key = 0
    for i = 1, #name do key = key + name:byte(i) * i end
    key = key % 65536
    local kind
    if name:match("num_batches_tracked$") then kind = "count"
    elseif name:match("running_var$") or (#t.shape == 1 and name:match("weight$")) then kind = "positive"
    elseif #t.shape == 1 then kind = "small"
    else kind = "conv" end
    local bound = kind == "conv" and 2 * math.sqrt(6.0 / (t.shape[2] * t.shape[3] * t.shape[4])) or nil
    if kind == "count" then t:fill_(7)
    else
      for j = 0, t:numel() - 1 do
        local u = ((j * 40503 + key * 977 + 12345) % 65536) / 65536
        local v
        if kind == "positive" then v = 0.5 + u elseif kind == "small" then v = (u - 0.5) * 0.2 else v = (u - 0.5) * bound end
        t:set(j + 1, v)
      end
    end
  end
end

local function max_abs(t, other)
  local m = 0
  for i = 1, t:numel() do m = math.max(m, math.abs(t:get(i) - (other and other:get(i) or 0))) end
  return m
end

function T.outputs_are_pytorchs()
  local io, meta = kd.load(fixture .. "/io.safetensors")
  local models = cjson.decode(meta.models)
  local keys = {}
  for key in pairs(models) do keys[#keys + 1] = key end
  table.sort(keys)
  h.eq(#keys, 6, "fixture networks")
  for _, key in ipairs(keys) do
    local spec = models[key]
    local options = {}
    for k, v in pairs(spec.options) do options[k] = v end
    local net = kd.models.create(spec.model, options)
    if spec.weights == "file" then
      -- what convert.py to-kdseg wrote from the .pth: loads strictly
      net:load_state_dict((kd.load(string.format("%s/%s_w%d.safetensors", fixture, spec.model, options.width))))
    else
      fill(net)
    end
    net:train(spec.mode == "train")
    local y = kd.no_grad(function() return net(io.input) end)
    local want = io[key]
    h.eq(table.concat(y.shape, "x"), table.concat(want.shape, "x"), key .. " output shape")
    local scale, err = max_abs(want), max_abs(y, want)
    h.truthy(err <= 1e-4 * math.max(1, scale),
             string.format("%s (%s): max |kdseg - PyTorch| = %.3g over logits up to %.3g", key, spec.mode, err, scale))
    if spec.mode == "train" then
      local rm = net.head.aspp.convs:get(5):get(3).running_mean
      h.truthy(max_abs(rm, io[key .. ".running_mean"]) < 1e-5, key .. ": running statistics after a batch")
    end
  end
end

-- A kdseg checkpoint of a papers network is a PyTorch state dict under
-- another container: names and shapes only, all of them.
function T.weights_file_round_trip()
  local path = fixture .. "/deeplabv3plus_resnet18_w2.safetensors"
  local net = kd.models.create("deeplabv3plus_resnet18", {width = 2, classes = 3})
  net:load_state_dict((kd.load(path)))
  h.eq(net.backbone.layer1:get(1).bn1.num_batches_tracked:get(1), 7, "num_batches_tracked from PyTorch's scalar")
  h.raises(function() kd.models.create("deeplabv3plus_resnet18", {width = 2, classes = 4}):load_state_dict((kd.load(path))) end,
           "'head.classifier.", "in the state, 4")
  h.raises(function() kd.models.create("pspnet_resnet18", {output_stride = 4}) end, "output_stride must be one of 8, 16")
  h.raises(function() kd.models.create("pspnet_resnet18", {deep_stem = 2}) end, "deep_stem must be one of 0, 1")
  h.raises(function() kd.models.create("deeplabv3plus_mobilenetv2", {deep_stem = 1}) end,
           "takes no option 'deep_stem'")
end

-- Backbone weights (model.pretrained): loaded strictly, with or without
-- "backbone." in front; wrong files are named with what is wrong.
function T.pretrained_backbones()
  local source = kd.models.create("deeplabv3plus_resnet18", {width = 2, classes = 3})
  local tmp = (os.getenv("TMPDIR") or "/tmp") .. "/kdseg-pretrained-" .. kd._C.getpid()
  kd._C.mkdir(tmp)
  kd.save(tmp .. "/backbone.safetensors", source.backbone:state_dict())
  local net = kd.models.build({name = "deeplabv3plus_resnet18", width = 2, pretrained = tmp .. "/backbone.safetensors"}, 3)
  h.eq((net.backbone.conv1.weight - source.backbone.conv1.weight):sum_squares(), 0, "torchvision names load")
  local whole = {}
  for name, t in pairs(kd.load(fixture .. "/deeplabv3plus_resnet18_w2.safetensors")) do
    if name:match("^backbone%.") then whole[name] = t end
  end
  kd.save(tmp .. "/prefixed.safetensors", whole)
  net = kd.models.build({name = "deeplabv3plus_resnet18", width = 2, pretrained = tmp .. "/prefixed.safetensors"}, 3)
  h.eq(net.backbone.layer1:get(1).bn1.num_batches_tracked:get(1), 7, "names with backbone. in front load too")
  -- a whole network's weights are not a backbone's: refused, strictly
  h.raises(function()
    kd.models.build({name = "deeplabv3plus_resnet18", width = 2, pretrained = fixture .. "/deeplabv3plus_resnet18_w2.safetensors"}, 3)
  end, "unexpected keys [backbone.")
  h.raises(function() kd.models.build({name = "deeplabv3plus_resnet18", pretrained = tmp .. "/backbone.safetensors"}, 3) end,
           "pretrained " .. tmp .. "/backbone.safetensors", "has shape", "convert torchvision's weights")
  h.raises(function() kd.models.build({name = "pspnet_resnet18", pretrained = tmp .. "/nothere.safetensors"}, 3) end,
           "nothere.safetensors")
  h.raises(function() kd.models.build({name = "bench_student", pretrained = tmp .. "/backbone.safetensors"}, 3) end,
           "has no backbone to load it into")
  os.execute("rm -rf '" .. tmp .. "'")
end

return T
