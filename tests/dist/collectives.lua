-- Run by tests/dist/test_dist.sh on 2 ranks (mpirun -np 2): kd.dist's
-- collectives with values that depend on the rank, their argument checks
-- on both ranks alike, and every rank seeing the same results. Raises (the
-- job fails) on a wrong value; rank 0 prints "collectives ok".
local rank, size = kd.dist.rank(), kd.dist.size()
local function check(cond, what) if not cond then error(string.format("rank %d: %s", rank, what), 0) end end
check(size == 2 and kd.dist.mpi(), "2 ranks under MPI, got " .. size)
check(kd.dist.is_main() == (rank == 0), "rank 0 alone is the main one")

local t = kd.tensor({rank + 1, 10 * (rank + 1)})
kd.dist.all_reduce(t)
check(t:get(1) == 3 and t:get(2) == 30, "sum of float32")
local m = kd.tensor({rank, -rank}, "int32")
kd.dist.all_reduce(m, "max")
check(m:get(1) == 1 and m:get(2) == 0, "max of int32")
local i = kd.tensor({2 ^ 40 + rank}, "int64")
kd.dist.all_reduce(i, "min")
check(i:get(1) == 2 ^ 40, "min of int64")
local u = kd.tensor({rank * 200, 5}, "uint8")
kd.dist.all_reduce(u, "max")
check(u:get(1) == 200, "max of uint8")

local b = kd.full({3, 4}, rank == 1 and 7 or 0)
kd.dist.broadcast(b, 1)
check(b:sum():item() == 84, "broadcast from rank 1")
local n = kd.dist.all_reduce_numbers({rank + 0.25, 1})
check(n[1] == 1.5 and n[2] == 2, "numbers")
local shard = kd.dist.shard({"a", "b", "c"})
check(#shard == (rank == 0 and 2 or 1) and shard[1] == (rank == 0 and "a" or "b"), "round-robin shards")
local ok = pcall(kd.dist.broadcast, b, 2)
check(not ok, "broadcast from rank 2 of 2 is refused")
kd.dist.barrier()

-- a module from rank 0: both ranks end with rank 0's weights
kd.manual_seed(rank) -- different weights on each rank
local net = kd.nn.Sequential(kd.nn.Conv2d(3, 4, 3), kd.nn.BatchNorm2d(4))
kd.dist.broadcast_module(net)
local w = net:parameters()[1]:clone()
local other = w:clone()
kd.dist.broadcast(other, 1)
check((w - other):sum_squares() == 0, "broadcast_module: the same weights on both ranks")
kd.manual_seed(0)
local mine = kd.nn.Conv2d(3, 4, 3)
check((mine.weight - w):sum_squares() == 0, "they are rank 0's (seed 0)")

-- gradient averaging: each rank's gradient differs; after it, both hold the mean
local p = kd.full({1000}, 1); p.requires_grad = true
local q = kd.full({3}, 1); q.requires_grad = true
local averager = kd.dist.GradAverager({p, q}, {bucket_mb = 1000 * 4 / 2 ^ 20})
check(averager:buckets() == 2, "two buckets")
local loss = (p * (rank + 1)):sum() + (q * (10 * (rank + 1))):sum()
local seconds = averager:backward(loss)
check(type(seconds) == "number" and seconds >= 0, "communication time")
local _, early = averager:buckets()
check(early == 2, "both buckets started while backward ran, got " .. tostring(early))
check(p.grad:get(1) == 1.5 and p.grad:get(1000) == 1.5, "p's gradient is the mean of 1 and 2")
check(q.grad:get(2) == 15, "q's gradient is the mean of 10 and 20")
-- a parameter without a gradient on one rank gets the other's share
local r = kd.full({2}, 1); r.requires_grad = true
local s = kd.full({2}, 1); s.requires_grad = true
local averager2 = kd.dist.GradAverager({r, s})
local used = rank == 0 and (r:sum() + s:sum()) or s:sum()
averager2:backward(used)
check(r.grad and r.grad:get(1) == 0.5, "r: rank 0's gradient 1 and none on rank 1 average to 0.5")
if rank == 0 then print("collectives ok") end
