-- toy: a toy segmentation task made in the script, and a small conv net for
-- it, shared by the training and memory tests. Three classes: background, a
-- rectangle and a disc, each drawn in a noisy colour of its own.
local toy = {}

function toy.batch(n, size)
  local images, labels = kd.zeros({n, 3, size, size}), kd.zeros({n, size, size}, "int32")
  local noise = kd.randn({n, 3, size, size}, 0, 0.3):flat()
  local colours = {{0.2, 0.2, 0.2}, {0.9, 0.1, 0.1}, {0.1, 0.3, 0.9}}
  local rand = kd.rand({n * 6}):flat()
  for b = 0, n - 1 do
    local r = function(i) return rand[b * 6 + i] end
    local x0, y0 = math.floor(r(1) * size / 2), math.floor(r(2) * size / 2)
    local cx, cy, radius = size * (0.3 + 0.4 * r(3)), size * (0.3 + 0.4 * r(4)), size * (0.15 + 0.1 * r(5))
    for y = 0, size - 1 do
      for x = 0, size - 1 do
        local class = 0
        if x >= x0 and x < x0 + size / 3 and y >= y0 and y < y0 + size / 3 then class = 1 end
        if (x - cx) ^ 2 + (y - cy) ^ 2 < radius ^ 2 then class = 2 end
        labels:set((b * size + y) * size + x + 1, class)
        for c = 0, 2 do
          local at = ((b * 3 + c) * size + y) * size + x + 1
          images:set(at, colours[class + 1][c + 1] + noise[at])
        end
      end
    end
  end
  return images, labels
end

function toy.net()
  local nn = kd.nn
  return nn.Sequential(
    nn.Conv2d(3, 16, 3, {padding = 1}), nn.BatchNorm2d(16), nn.ReLU(),
    nn.Conv2d(16, 16, 3, {padding = 1, stride = 2}), nn.BatchNorm2d(16), nn.ReLU(),
    nn.Conv2d(16, 3, 1), nn.Upsample({scale = 2}))
end

return toy
