-- kdseg predict: label PNGs (train ids or label ids) and colourised PNGs for
-- images or a folder of them.
--   kdseg predict --checkpoint best.safetensors --input img.png --out predictions [--ids label] [--color]
-- --input: a PNG or JPEG image, or a folder of them (searched recursively).
local argparse = require("argparse")
local checkpoint = require("kd.train.checkpoint")
local evaluate = require("kd.train.evaluate")
local files = require("kd.data.files")

return function(...)
  local parser = argparse("kdseg predict", "Predict label maps for images.")
  parser:option("--checkpoint", "Weights file (safetensors) written by kdseg train."):count(1)
  parser:option("--input", "A PNG image or a folder searched for PNGs."):count(1)
  parser:option("--out", "Output folder."):count(1)
  parser:option("--ids", "train (0..K-1, 255 ignore) or label (the dataset's label ids).", "train")
  parser:flag("--color", "Also write colourised predictions.")
  parser:option("--crop", "Sliding-window size HxW for large images.")
  local args = parser:parse({...})
  if args.ids ~= "train" and args.ids ~= "label" then error("kdseg predict: --ids must be 'train' or 'label'", 0) end
  local model, model_config = checkpoint.load_model(args.checkpoint)
  local classes = checkpoint.classes_of(model_config)
  local inputs = {args.input}
  if kd._C.is_dir(args.input) then -- every PNG and JPEG image under the folder
    inputs = {}
    for _, suffix in ipairs({".png", ".jpg", ".jpeg", ".PNG", ".JPG", ".JPEG"}) do
      for _, p in ipairs(files.find(args.input, suffix)) do inputs[#inputs + 1] = p end
    end
    table.sort(inputs)
  end
  if #inputs == 0 then error("kdseg predict: no PNG or JPEG images in " .. args.input, 0) end
  local crop = args.crop and {require("kd.cli").parse_size(args.crop, "kdseg predict: --crop")} or nil
  files.mkdir_p(args.out)
  local to_label_ids = require("kd.cli.official").to_label_ids(classes)
  for _, path in ipairs(inputs) do
    local image = kd.image.read(path, true)
    if image:size(1) < 3 then image = kd.concat({image:to("float32"):view(1, 1, image:size(2), image:size(3))}):view(1, image:size(2), image:size(3)) end
    local h, w = image:size(2), image:size(3)
    local x = kd.slice_channels(image:to("float32"):view(1, image:size(1), h, w), 1, 3) / 255
    x = kd.channel_div(kd.channel_sub(x, kd.tensor(model_config.mean)), kd.tensor(model_config.std))
    local prediction = kd.no_grad(function() return evaluate.predict_logits(model, x, crop):argmax() end):view(h, w)
    local labels = prediction:to("uint8")
    if args.ids == "label" then labels = kd._C.map_values(labels, to_label_ids) end
    local stem = (path:match("([^/]+)%.[%a]+$") or path:match("([^/]+)$")):gsub("_leftImg8bit$", "")
    kd.image.write(string.format("%s/%s_%sIds.png", args.out, stem, args.ids), labels)
    if args.color then kd.image.write(string.format("%s/%s_color.png", args.out, stem), kd.data.pictures.colorize(prediction, classes)) end
  end
  print(string.format("predict: %d image(s) -> %s", #inputs, args.out))
end
