-- pictures: label maps and predictions as images a person can look at.
-- Every function takes and returns uint8 3 x H x W tensors (or label maps).
local C = require("kd._C")

local pictures = {}

-- labels (H x W train ids) coloured with the class table's palette; ignored
-- pixels black.
function pictures.colorize(labels, classes)
  if labels.ndim == 3 then labels = labels:view(labels:size(2), labels:size(3)) end
  return C.colorize(labels, classes.palette, {0, 0, 0})
end

local function as_float(t) return t:to("float32") end

-- The colourised labels blended over the image (alpha: the labels' share).
function pictures.overlay(image, labels, classes, alpha)
  alpha = alpha or 0.5
  local colors = as_float(pictures.colorize(labels, classes))
  return (as_float(image) * (1 - alpha) + colors * alpha):to("uint8")
end

-- The image dimmed, with wrongly predicted pixels in bright red and ignored
-- pixels black.
function pictures.error_map(image, prediction, target)
  local h, w = image:size(2), image:size(3)
  local kind, share = kd.zeros({h, w}, "int32"), kd.zeros({1, 1, h, w})
  local p, t = prediction:flat(), target:flat()
  for i = 1, #p do
    local ignored, right = t[i] == 255, p[i] == t[i]
    kind:set(i, (not ignored and not right) and 1 or 0)
    share:set(i, (not ignored and right) and 0.5 or 0)
  end
  local marks = as_float(C.colorize(kind, {{0, 0, 0}, {255, 0, 0}}, {0, 0, 0}))
  local dimmed = as_float(image) * kd.concat({share, share, share}):view(3, h, w)
  return (dimmed + marks):to("uint8")
end

-- Batch images (B x 3 x H x W, normalised by mean and std) back to uint8
-- images, one per sample.
function pictures.denormalize(images, mean, std)
  local out = {}
  local b, h, w = images:size(1), images:size(3), images:size(4)
  for i = 1, b do
    local x = images:narrow(i, 1)
    x = kd.channel_add(kd.channel_mul(x, kd.tensor(std)), kd.tensor(mean)) * 255
    out[i] = x:view(3, h, w):to("uint8")
  end
  return out
end

-- A grid of images: rows is a list of rows, each a list of uint8 3 x h x w
-- tensors (all the same size), separated by gap white pixels.
function pictures.grid(rows, gap)
  gap = gap or 2
  local h, w, columns = rows[1][1]:size(2), rows[1][1]:size(3), 0
  for _, row in ipairs(rows) do columns = math.max(columns, #row) end
  local canvas = kd.full({3, #rows * (h + gap) - gap, columns * (w + gap) - gap}, 255, "uint8")
  for r, row in ipairs(rows) do
    for c, image in ipairs(row) do
      if image:size(2) ~= h or image:size(3) ~= w then
        error(string.format("pictures.grid: image %d of row %d is %dx%d, the grid's cells are %dx%d",
                            c, r, image:size(2), image:size(3), h, w), 2)
      end
      C.paste(canvas, image, (r - 1) * (h + gap), (c - 1) * (w + gap))
    end
  end
  return canvas
end

-- The usual figure: one row per sample of image / ground truth / prediction.
-- images: uint8 3 x H x W list; truths and predictions: label maps.
function pictures.samples_grid(images, truths, predictions, classes)
  local rows = {}
  for i, image in ipairs(images) do
    rows[i] = {image, pictures.colorize(truths[i], classes), pictures.colorize(predictions[i], classes)}
  end
  return pictures.grid(rows)
end

function pictures.save(path, image) C.png_write(path, image) end

return pictures
