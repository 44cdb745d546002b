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

return T
