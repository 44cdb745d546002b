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
