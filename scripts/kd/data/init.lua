-- kd.data: datasets in the Cityscapes layout, SynthCity, splits, loaders,
-- metrics and pictures.
local data = {}
data.files = require("kd.data.files")
data.classes = require("kd.data.classes")
data.synthcity = require("kd.data.synthcity")
data.Dataset = require("kd.data.dataset")
data.Loader = require("kd.data.loader")
data.splits = require("kd.data.splits")
data.Confusion = require("kd.data.metrics").Confusion
data.pictures = require("kd.data.pictures")
local mix = require("kd.data.mix")
data.box_masks, data.cutmix, data.cutout, data.roll = mix.box_masks, mix.cutmix, mix.cutout, mix.roll

-- A strong view's colours inside a training step: colour jitter (brightness,
-- contrast, saturation, hue, jitter_p), grayscale_p, blur_p and blur_sigma
-- as the loader's augment options, on a normalised batch (mean and std:
-- its normalisation, ImageNet's by default), drawn from the global generator.
--   kd.data.photometric(batch.images, {brightness = 0.5, contrast = 0.5, saturation = 0.5, hue = 0.25,
--                                      jitter_p = 0.8, grayscale_p = 0.2, blur_p = 0.5})
function data.photometric(images, augment)
  if augment ~= nil and type(augment) ~= "table" then
    error("kd.data.photometric: the options must be a table, got " .. type(augment), 2)
  end
  local normalize = require("kd.data.normalize")
  local a = {mean = normalize.mean, std = normalize.std}
  for k, v in pairs(augment or {}) do a[k] = v end
  for _, key in ipairs({"crop", "scale", "hflip"}) do
    if a[key] ~= nil then error("kd.data.photometric: " .. key .. " is geometry; only colours change here", 2) end
  end
  return require("kd._C").photometric(images, a)
end

-- Draws from several loaders together, one batch of each per call:
--   local step = kd.data.zip(labeled, unlabeled); local l, u = step()
function data.zip(...)
  local loaders = {...}
  return function()
    local out = {}
    for i, l in ipairs(loaders) do
      out[i] = l:next()
      if out[i] == nil then return nil end
    end
    return unpack(out, 1, #loaders)
  end
end

return data
