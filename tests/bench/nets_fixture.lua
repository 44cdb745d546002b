-- nets_fixture: what every benchmark of the two networks of
-- ../shared/bench/NETS.md starts from, so that their figures are of the same
-- step: the network (seed 0, 19 classes), SGD with momentum 0.9 and weight
-- decay 1e-4, a random batch of 8 x 3 x 128 x 256 and labels cycling through
-- the 19 classes and the ignore value 255.
--   local net, opt, x, y = dofile(here .. "/nets_fixture.lua")("bench_student")
return function(name)
  kd.manual_seed(0)
  local net = kd.models.create(name, {classes = 19})
  local opt = kd.optim.SGD(net:parameters(), {lr = 0.01, momentum = 0.9, weight_decay = 1e-4})
  local x = kd.randn({8, 3, 128, 256})
  local y = kd.zeros({8, 128, 256}, "int32")
  for i = 1, y:numel() do y:set(i, i % 23 < 19 and i % 23 or 255) end
  return net, opt, x, y
end
