-- A first kdseg script: a small conv net from kd.nn learns a toy segmentation
-- task made here (each pixel's class is which of two smoothed noise maps is
-- larger, with a third class where both are small), with SGD.
--   build/kdseg experiments/toy_segmentation.lua [iterations]
local nn = kd.nn
local iterations = tonumber(arg and arg[1]) or 400
kd.manual_seed(1)

local function batch(n)
  local fields = kd.avg_pool2d(kd.randn({n, 2, 32, 32}), {kernel = 5, stride = 1, padding = 2})
  local a, b = kd.slice_channels(fields, 1, 1), kd.slice_channels(fields, 2, 1)
  local labels = kd.zeros({n, 32, 32}, "int32")
  local av, bv = a:flat(), b:flat()
  for i = 1, #av do
    labels:set(i, (math.abs(av[i]) < 0.15 and math.abs(bv[i]) < 0.15) and 2 or (av[i] > bv[i] and 0 or 1))
  end
  local image = kd.concat({a, b, kd.randn({n, 1, 32, 32}, 0, 0.1)})
  return image, labels
end

local net = nn.Sequential(
  nn.Conv2d(3, 16, 3, {padding = 1}), nn.BatchNorm2d(16), nn.ReLU(),
  nn.Conv2d(16, 16, 3, {padding = 2, dilation = 2}), nn.BatchNorm2d(16), nn.ReLU(),
  nn.Conv2d(16, 3, 1))
print(net)
local opt = kd.optim.SGD(net:parameters(), {lr = 0.05, momentum = 0.9, weight_decay = 1e-4})
local schedule = kd.optim.schedules.poly({base = 0.05, total = iterations})
local start = kd.clock()
for iter = 1, iterations do
  local images, labels = batch(8)
  opt:set_lr(schedule(iter - 1))
  local loss = kd.losses.cross_entropy(net(images), labels)
  opt:zero_grad()
  loss:backward()
  opt:step()
  if iter % 25 == 0 or iter == 1 then
    print(string.format("iter %4d  loss %.4f  lr %.4f", iter, loss:item(), schedule(iter - 1)))
  end
end
net:eval()
local images, labels = batch(16)
local predicted = kd.no_grad(function() return net(images):argmax() end)
local right, p, l = 0, predicted:flat(), labels:flat()
for i = 1, #p do if p[i] == l[i] then right = right + 1 end end
print(string.format("held-out pixel accuracy %.3f after %d iterations (%.1f s)", right / #p, iterations,
                    kd.clock() - start))
kd.mkdir("runs")
kd.save("runs/toy_segmentation.safetensors", net:state_dict())
print("weights saved to runs/toy_segmentation.safetensors")
