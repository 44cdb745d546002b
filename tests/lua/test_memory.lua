-- Resident memory of a training loop does not grow with the iterations, and
-- does not wait for Lua's collector to notice tensor memory (it cannot see
-- it): RSS after iteration 200 within 16 MiB of that after iteration 20.
local h = require("harness")
local toy = require("toy")
local T = {}

function T.rss_flat_over_200_iterations()
  -- AddressSanitizer holds freed memory in quarantine to catch late uses:
  -- RSS grows by design there; the plain build runs this test
  if kd._C.sanitizer then return end
  kd.manual_seed(4)
  local net = toy.net()
  local opt = kd.optim.SGD(net:parameters(), {lr = 0.05, momentum = 0.9})
  local images, labels = toy.batch(8, 32)
  local at20
  for iter = 1, 200 do
    local loss = kd.losses.cross_entropy(net(images), labels)
    opt:zero_grad()
    loss:backward()
    opt:step()
    if iter == 20 then at20 = kd.rss() end
  end
  local at200 = kd.rss()
  local growth = (at200 - at20) / 2 ^ 20
  h.truthy(growth < 16, string.format("RSS grew %.1f MiB from iteration 20 to 200", growth))
  if os.getenv("KD_VERBOSE") then print(string.format("  RSS at 20: %.1f MiB, at 200: %.1f MiB", at20 / 2 ^ 20, at200 / 2 ^ 20)) end
end

return T
