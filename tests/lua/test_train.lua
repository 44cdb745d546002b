-- End to end: a small conv net built from kd.nn learns the toy segmentation
-- task with SGD; the loss must fall far below chance (ln 3 = 1.10 for three
-- classes) and pixel accuracy rise well above the majority class.
local h = require("harness")
local toy = require("toy")
local T = {}

function T.loss_falls_on_a_toy_task()
  kd.manual_seed(3)
  local net = toy.net()
  local opt = kd.optim.SGD(net:parameters(), {lr = 0.1, momentum = 0.9, weight_decay = 1e-4})
  local images, labels = toy.batch(16, 24)
  local first, last
  for iter = 1, 120 do
    local loss = kd.losses.cross_entropy(net(images), labels)
    opt:zero_grad()
    loss:backward()
    opt:step()
    if iter == 1 then first = loss:item() end
    last = loss:item()
  end
  h.truthy(first > 0.8, "the first loss is near chance: " .. first)
  h.truthy(last < 0.25, "the loss fell from " .. first .. " to " .. last .. ", must be < 0.25")
  net:eval()
  local test_images, test_labels = toy.batch(8, 24)
  local predicted = kd.no_grad(function() return net(test_images):argmax() end)
  local right = 0
  for i = 1, predicted:numel() do if predicted:get(i) == test_labels:get(i) then right = right + 1 end end
  h.truthy(right / predicted:numel() > 0.85, "held-out pixel accuracy " .. right / predicted:numel())
end

-- Sliding-window prediction: for a network that sees one pixel at a time (a
-- 1x1 convolution) every window agrees with the whole image, so the average
-- of overlapping windows equals the whole-image logits; windows that do not
-- divide the image (13x17 in 5x6 steps of 3x4) still cover every pixel.
local function max_difference(a, b)
  local worst = 0
  for i = 1, a:numel() do worst = math.max(worst, math.abs(a:get(i) - b:get(i))) end
  return worst
end

function T.sliding_window_prediction_equals_whole_image_for_a_pointwise_net()
  kd.manual_seed(5)
  local net = kd.nn.Conv2d(3, 4, 1)
  local images = kd.randn({2, 3, 13, 17})
  local evaluate = require("kd.train.evaluate")
  local whole = kd.no_grad(function() return net(images) end)
  local windows = kd.no_grad(function() return evaluate.predict_logits(net, images, {5, 6}, {3, 4}) end)
  h.eq(windows.shape[3], 13, "height kept")
  h.eq(windows.shape[4], 17, "width kept")
  h.near(max_difference(windows, whole), 0, 1e-5, "windows against whole image")
  local flipped = kd.no_grad(function() return evaluate.predict_logits(net, images, {5, 6}, nil, true) end)
  h.near(max_difference(flipped, whole), 0, 1e-5, "windows with flip (default stride)")
  -- a 3x3 network sees its window's border: the windows differ from the whole
  local conv = kd.nn.Conv2d(3, 4, 3, {padding = 1})
  local a = kd.no_grad(function() return conv(images) end)
  local b = kd.no_grad(function() return evaluate.predict_logits(conv, images, {5, 6}, {3, 4}) end)
  h.truthy(max_difference(a, b) > 1e-3, "a 3x3 net's windows differ from the whole image")
  local edge = kd.crop2d(images, 10, 15, 5, 6) -- rows 10..14 and columns 15..20: zeros past the border
  h.eq(edge:get(1), images:get(10 * 17 + 16), "the window's first pixel (flat indices)")
  h.eq(edge:get(5 * 6), 0, "past the border is zero")
  h.raises(function() kd.crop2d(images, 0, 0, 0, 6) end, "window 0x6 is empty")
end

return T
