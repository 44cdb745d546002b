-- dist_estimate: from bench_dist's measurements (a file of its JSON lines),
-- the data-parallel scaling of each network on paper: P nodes, each with
-- the measured single-node step (global batch 8 on this machine's 2 threads,
-- so per-node batch 8: weak scaling, the global batch grows with P),
-- gradients averaged over a network of `gbit` Gbit/s with `latency_us` per
-- message. The all-reduce of S bytes in k buckets costs, by the bandwidth-
-- optimal algorithms MPI uses for large messages (ring, Rabenseifner),
--   t = 2 (P - 1) / P * S / bandwidth + k * 2 log2(P) * latency
-- Reported: that time, and the efficiency (images per second over P times
-- one node's) with none of it hidden behind backward and with all of it
-- hidden. The measured 2-rank figures here (one node, shared memory) are
-- printed beside.
--   kdseg tests/bench/dist_estimate.lua FILE [gbit latency_us]
local cjson = require("cjson")
local file, gbit, latency_us = arg[1], tonumber(arg[2]) or 25, tonumber(arg[3]) or 30
if not file then error("usage: kdseg tests/bench/dist_estimate.lua FILE [gbit latency_us]", 0) end
local runs = {}
for line in io.lines(file) do
  local ok, r = pcall(cjson.decode, line)
  if ok and type(r) == "table" and r.bench == "dist_step" and r.net then
    runs[r.net] = runs[r.net] or {}
    runs[r.net][r.ranks .. "x" .. r.threads_per_rank] = r
  end
end
local bandwidth = gbit * 1e9 / 8
for net, by in pairs(runs) do
  local node = by["1x2"] -- one node: one process on both cores
  local one, two = by["1x1"], by["2x1"]
  if node then
    local measured = two and {speedup_2_ranks_over_1_thread = one and one.step_s / two.step_s or nil,
                              speedup_2_ranks_over_2_threads = node.step_s / two.step_s,
                              communication_ms = 1e3 * two.communication_s,
                              communication_share = two.communication_share} or nil
    print(cjson.encode({bench = "dist_measured", net = net, node_step_s = node.step_s, two_ranks = measured}))
    for _, P in ipairs({8, 64}) do
      local t = 2 * (P - 1) / P * node.gradient_bytes / bandwidth + node.buckets * 2 * math.log(P) / math.log(2) * latency_us * 1e-6
      print(cjson.encode({bench = "dist_estimate", net = net, nodes = P, network_gbit = gbit, latency_us = latency_us,
                          gradient_mb = node.gradient_bytes / 2 ^ 20, buckets = node.buckets, allreduce_ms = 1e3 * t,
                          step_s = node.step_s + t, efficiency_not_overlapped = node.step_s / (node.step_s + t),
                          efficiency_overlapped = node.step_s / math.max(node.step_s, t),
                          images_per_second = P * 8 / (node.step_s + t)}))
    end
  end
end
