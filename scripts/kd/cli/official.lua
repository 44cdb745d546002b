-- official: predictions in the layout of the official Cityscapes evaluation
-- scripts (cityscapesscripts' evalPixelLevelSemanticLabeling): one PNG per
-- image of label ids (not train ids), in one flat folder, named after the
-- image so that its "<city>_<seq>_<frame>" finds it.
local files = require("kd.data.files")

local official = {}

-- The label-id map (train id + 1 -> label id) of a class table.
function official.to_label_ids(classes)
  local map = {}
  for i = 1, 256 do map[i] = (i <= classes.count) and classes.ids[i] or 0 end
  return map
end

-- The file name of an image's prediction: the image's own name, as PNG
-- (berlin_000000_000019_leftImg8bit.png).
function official.name(image_path)
  local base = image_path:match("([^/]+)$")
  return (base:gsub("%.[%a]+$", "")) .. ".png"
end

-- on_batch for kd.train.evaluate.run: writes each image's prediction.
-- Two images with one name would overwrite each other: that is an error.
function official.prediction_writer(dir, dataset, classes)
  files.mkdir_p(dir)
  local map, written = official.to_label_ids(classes), {}
  return function(batch, prediction)
    for k = 1, prediction:size(1) do
      local item = dataset.items[batch.ids:get(k) + 1]
      local name = official.name(item.image)
      if written[name] then
        error(string.format("kdseg eval --predictions: %s and %s would both be written as %s", written[name],
                            item.image, name), 0)
      end
      written[name] = item.image
      local h, w = prediction:size(2), prediction:size(3)
      local labels = kd._C.map_values(prediction:narrow(k, 1):view(h, w):to("uint8"), map)
      kd.image.write(dir .. "/" .. name, labels)
    end
  end
end

return official
