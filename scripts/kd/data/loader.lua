-- Loader: batches of a dataset made by worker threads (core/data/loader.c).
--   local loader = kd.data.Loader(dataset, {batch_size = 8, workers = 2, shuffle = true, seed = 1,
--                                           infinite = true, augment = {crop = {128, 256}, hflip = true}})
--   local batch = loader:next()  -- {images, labels, weights, valid, ids, epoch}
--   for batch in loader:epoch() do ... end
-- augment: crop = {h, w}, scale = {min, max}, hflip, brightness, contrast,
-- saturation, hue, jitter_p, grayscale_p, blur_p, blur_sigma = {min, max},
-- mean, std (default ImageNet's), pad_label (255: padding is ignored; give
-- another value to keep it apart from ignored pixels). The batches are the
-- same for a seed whatever the number of workers; start_batch skips to a
-- batch (epoch * length + k) without loading what comes before, for resuming.
-- shard = {index, count} (1-based index) delivers only that part of every
-- batch (data-parallel training: rank r loads shard r + 1 of the batches all
-- ranks share; kd.dist). cache_mb (default 256): decoded samples are kept
-- in memory up to this many MiB, so later epochs skip reading and decoding
-- their files (a file changed during the run is not read again); 0 keeps none.
local C = require("kd._C")
local class = require("kd.infra.class")

local Loader = class("data.Loader")

local normalize = require("kd.data.normalize")

local function augment_with_defaults(augment)
  local a = {}
  for k, v in pairs(augment or {}) do a[k] = v end
  a.mean = a.mean or normalize.mean
  a.std = a.std or normalize.std
  return a
end

function Loader:__init(dataset, options)
  options = options or {}
  local known = {batch_size = true, workers = true, shuffle = true, seed = true, infinite = true,
                 drop_last = true, augment = true, prefetch = true, weights = true, start_batch = true,
                 shard = true, cache_mb = true}
  for key in pairs(options) do
    if not known[key] then error("data.Loader: unknown option '" .. tostring(key) .. "'", 2) end
  end
  local shard = options.shard
  if shard ~= nil and (type(shard) ~= "table" or type(shard[1]) ~= "number" or type(shard[2]) ~= "number") then
    error("data.Loader: shard must be {index, count}, got " .. tostring(shard), 2)
  end
  local images, labels, any_label = {}, {}, false
  for i, item in ipairs(dataset.items) do
    images[i] = item.image
    labels[i] = item.label or false
    any_label = any_label or item.label ~= nil
  end
  self.dataset = dataset
  self.batch_size = options.batch_size or 1
  self.mean = augment_with_defaults(options.augment).mean
  self.std = augment_with_defaults(options.augment).std
  self.handle = C.loader_new({
    images = images, labels = any_label and labels or nil, weights = options.weights,
    label_map = dataset:label_map(), augment = augment_with_defaults(options.augment),
    batch_size = self.batch_size, shuffle = options.shuffle or false, drop_last = options.drop_last or false,
    infinite = options.infinite or false, seed = options.seed or 0, workers = options.workers or 0,
    prefetch = options.prefetch or 4, start_batch = options.start_batch or 0,
    shard_index = shard and shard[1] - 1 or 0, shard_count = shard and shard[2] or 1,
    cache_mb = options.cache_mb or 256, -- checked by the core's loader
  })
end

function Loader:length() return self.handle:length() end

-- The next batch; nil at the end of an epoch (never when infinite).
function Loader:next() return self.handle:next() end

-- Iterates over one epoch.
function Loader:epoch()
  return function() return self.handle:next() end
end

-- Sample i (1-based) alone, as it would be augmented at (epoch, position).
function Loader:sample(i, epoch, position) return self.handle:sample(i, epoch, position) end

function Loader:close() self.handle:close() end

return function(dataset, options) return Loader(dataset, options) end
