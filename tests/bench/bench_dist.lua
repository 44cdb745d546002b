-- bench_dist: data-parallel training steps of ../shared/bench/NETS.md's
-- networks (global batch 8 of 3 x 128 x 256, 19 classes, SGD), run alone
-- (one process, all its threads) or as one rank of several
-- (mpirun -np 2 ... one thread each): each rank takes its share of the
-- global batch, gradients are averaged in buckets during backward
-- (kd.dist.GradAverager), batch norms synchronised. Rank 0 prints a JSON
-- line per network: median step time, images per second, the time spent in
-- gradient averaging per step (communication, packing and waiting) and the
-- bytes each rank sends into it. make bench runs it both ways
-- (tests/bench/bench_dist.sh) and estimates larger clusters from it.
--   kdseg tests/bench/bench_dist.lua [steps]
local cjson = require("cjson")
local C = kd._C

local steps = tonumber(arg[1]) or 12
local rank, size = kd.dist.rank(), kd.dist.size()
local global_batch = 8
local median = dofile((arg[0]:match("^(.*)/[^/]*$") or ".") .. "/median.lua")

for _, name in ipairs({"bench_student", "bench_teacher"}) do
  kd.manual_seed(0)
  local net = kd.models.create(name, {classes = 19})
  net:train()
  kd.dist.sync_batch_norm(net, true)
  local params = net:parameters()
  local averager = kd.dist.GradAverager(params, {bucket_mb = 1})
  local opt = kd.optim.SGD(params, {lr = 0.01, momentum = 0.9, weight_decay = 1e-4})
  kd.manual_seed(1)
  local x = kd.randn({global_batch, 3, 128, 256})
  local y = kd.zeros({global_batch, 128, 256}, "int32")
  for i = 1, y:numel() do y:set(i, i % 23 < 19 and i % 23 or 255) end
  local per_rank = math.floor(global_batch / size)
  local mine_x = x:narrow(rank * per_rank + 1, per_rank):clone()
  local mine_y = y:narrow(rank * per_rank + 1, per_rank):clone()
  local times, comms = {}, {}
  for it = 1, steps + 3 do
    kd.dist.barrier() -- every rank starts the step together: the step's time is the slowest rank's
    local t0 = C.clock()
    kd._C.dist_global_means(true)
    local loss = kd.losses.cross_entropy(net(mine_x), mine_y)
    kd._C.dist_global_means(false)
    opt:zero_grad()
    local comm = averager:backward(loss)
    opt:step()
    kd.dist.barrier()
    if it > 3 then times[#times + 1], comms[#comms + 1] = C.clock() - t0, comm end
  end
  kd.dist.sync_batch_norm(net, false)
  local step, comm = median(times), median(comms)
  local bytes = 4 * net:num_parameters()
  if rank == 0 then
    print(cjson.encode({bench = "dist_step", net = name, ranks = size, threads_per_rank = kd.get_threads(),
                        global_batch = global_batch, step_s = step, images_per_second = global_batch / step,
                        communication_s = comm, communication_share = comm / step,
                        gradient_bytes = bytes, buckets = averager:buckets(),
                        buckets_started_in_backward = select(2, averager:buckets())}))
  end
end
