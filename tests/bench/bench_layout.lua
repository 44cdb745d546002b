-- bench_layout: the training step of the two benchmark networks of
-- ../shared/bench/NETS.md with the blocked layout (the default) and with
-- NCHW throughout (kd.set_layout("nchw")), alternated step by step in one
-- process so that the machine's drift hits both alike; the medians over
-- PAIRS pairs (16 by default) after 2 warm-up pairs, and their ratio
-- blocked / NCHW (below 1: the blocked layout is faster). The two layouts
-- give the same results (test_conv_backends.lua); this is only their speed.
-- Prints JSON lines. Usage: kdseg tests/bench/bench_layout.lua [pairs]
local cjson = require("cjson")
local C = kd._C
local here = arg[0]:match("^(.*)/[^/]*$") or "."
local fixture = dofile(here .. "/nets_fixture.lua")
local median = dofile(here .. "/median.lua")

local pairs_count = tonumber(arg[1]) or 16

local layout_before = kd.set_layout("blocked")
for _, threads in ipairs({2, 1}) do
  kd.set_threads(threads)
  for _, name in ipairs({"bench_student", "bench_teacher"}) do
    local net, opt, x, y = fixture(name)
    local times = {blocked = {}, nchw = {}}
    for step = 1, 2 * (pairs_count + 2) do
      local layout = step % 2 == 0 and "nchw" or "blocked"
      kd.set_layout(layout)
      local t0 = C.clock()
      local loss = kd.losses.cross_entropy(net(x), y)
      opt:zero_grad()
      loss:backward()
      opt:step()
      if step > 4 then table.insert(times[layout], C.clock() - t0) end
    end
    local blocked, nchw = median(times.blocked), median(times.nchw)
    print(cjson.encode({bench = "layout_step", net = name, threads = threads, pairs = pairs_count,
                        blocked_step_ms = 1e3 * blocked, nchw_step_ms = 1e3 * nchw, ratio = blocked / nchw,
                        conv_algorithm = kd.conv_algorithm()}))
    io.stdout:flush()
  end
end
kd.set_layout(layout_before)
