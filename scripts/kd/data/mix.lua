-- mix: the strong view of unlabeled batches. CutMix pastes a box of another
-- image (and its label) into each image; cutout blanks a box (image to the
-- normalised mean 0, label to ignore). Boxes come from the global generator.
--   local masks = kd.data.box_masks(batch.images, {p = 0.5})
--   local images, labels = kd.data.cutmix(images, labels, other_images, other_labels, masks)
local C = require("kd._C")

local mix = {}

-- One box mask (uint8 B x H x W) per image of a B x C x H x W batch.
function mix.box_masks(images, options)
  return C.box_masks(images:size(1), images:size(3), images:size(4), options)
end

-- A copy of a batch (B x ...) shifted by one: image k holds image k+1 (the
-- last the first), the partner each image is mixed with.
function mix.roll(batch)
  local n, out = batch:size(1), kd.zeros(batch.shape, batch.dtype)
  for k = 1, n do out:narrow(k, 1):copy_(batch:narrow(k % n + 1, 1)) end
  return out
end

-- Copies of images and labels with the boxes taken from the other batch.
function mix.cutmix(images, labels, other_images, other_labels, masks)
  local mixed = images:detach():clone()
  C.mix_where(mixed, other_images, masks)
  local mixed_labels = nil
  if labels then
    mixed_labels = labels:clone()
    C.mix_where(mixed_labels, other_labels, masks)
  end
  return mixed, mixed_labels
end

-- Copies with the boxes blanked: image 0 (the mean after normalisation),
-- label `ignore` (255).
function mix.cutout(images, labels, masks, ignore)
  local out = images:detach():clone()
  C.mix_where(out, nil, masks, 0)
  local out_labels = nil
  if labels then
    out_labels = labels:clone()
    C.mix_where(out_labels, nil, masks, ignore or 255)
  end
  return out, out_labels
end

return mix
