-- kd.dist in one process (no launcher): rank 0 of 1, every collective a
-- no-op that keeps the values, its argument checks; the loader's shards of
-- a batch make the batch; the gradient averager leaves gradients as they
-- are. tests/dist/test_dist.sh runs the same API on 2 ranks under mpirun.
local h = require("harness")
local T = {}

function T.one_process()
  h.eq(kd.dist.rank(), 0, "rank")
  h.eq(kd.dist.size(), 1, "size")
  h.truthy(kd.dist.is_main(), "rank 0 is the main one")
  h.eq(kd.dist.mpi(), false, "no MPI without a launcher")
  local t = kd.tensor({1.5, -2, 3})
  h.eq(kd.dist.all_reduce(t), t, "all_reduce returns its tensor")
  h.eq(t:get(2), -2, "a sum over one rank keeps the values")
  kd.dist.all_reduce(t, "max"); kd.dist.all_reduce(t, "min")
  h.eq(t:get(3), 3, "max and min over one rank keep them")
  local i = kd.tensor({7, 8}, "int64")
  h.eq(kd.dist.all_reduce(i):get(1), 7, "int64")
  h.eq(kd.dist.broadcast(kd.tensor({4}), 0):get(1), 4, "broadcast from rank 0")
  local n = kd.dist.all_reduce_numbers({1, 2.5})
  h.eq(n[2], 2.5, "numbers")
  kd.dist.barrier()
  local list = {"a", "b", "c"}
  h.eq(#kd.dist.shard(list), 3, "one rank's share is everything")
end

function T.bad_arguments()
  h.raises(function() kd.dist.all_reduce({1, 2}) end, "kd.dist.all_reduce", "a tensor is required")
  h.raises(function() kd.dist.all_reduce(kd.tensor({1}), "mean") end, "op must be 'sum', 'max' or 'min'", "mean")
  h.raises(function() kd.dist.all_reduce(kd.zeros({2}, "uint8")) end, "uint8", "not a sum")
  local p = kd.tensor({1}); p.requires_grad = true
  h.raises(function() kd.dist.all_reduce(p) end, "part of a graph")
  h.raises(function() kd.dist.broadcast(kd.tensor({1}), 1) end, "root 1 is not a rank of 0..0")
  h.raises(function() kd.dist.broadcast(kd.tensor({1})) end, "root (a rank) is required")
  h.raises(function() kd.dist.all_reduce_numbers({1, "x"}) end, "entry 2 is a string")
end

-- The shards of a batch, in rank order, are the batch: same images, ids, labels.
function T.loader_shards_make_the_batch()
  local dir = os.tmpname(); os.remove(dir)
  kd.data.synthcity.write({root = dir, train = 6, coarse = 0, val = 0, height = 16, width = 32, seed = 2})
  local ds = kd.data.Dataset({root = dir, split = "train", labels = "fine"})
  local options = {batch_size = 5, shuffle = true, seed = 3, augment = {crop = {16, 32}, hflip = true, scale = {0.5, 2}}}
  local function batch(shard)
    local o = {}
    for k, v in pairs(options) do o[k] = v end
    o.shard = shard
    local l = kd.data.Loader(ds, o)
    local b = l:next()
    l:close()
    return b
  end
  local whole, first, second = batch(nil), batch({1, 2}), batch({2, 2})
  h.eq(first.images:size(1), 2, "shard 1 of 2 of a batch of 5: 2 images")
  h.eq(second.images:size(1), 3, "shard 2: the other 3")
  for k = 1, 5 do
    local from, at = k <= 2 and first or second, k <= 2 and k or k - 2
    h.eq(from.ids:get(at), whole.ids:get(k), "image " .. k .. " of the batch")
    h.eq((from.images:narrow(at, 1) - whole.images:narrow(k, 1)):sum_squares(), 0, "image " .. k .. "'s augmentation")
  end
  h.raises(function() batch({3, 2}) end, "shard 3 of 2")
  h.raises(function() batch({1, 6}) end, "does not split batches of 5")
  h.raises(function() batch("1/2") end, "shard must be {index, count}")
  os.execute("rm -rf " .. dir)
end

-- Alone, the averager's backward is the plain backward.
function T.grad_averager_alone()
  local net = kd.nn.Sequential(kd.nn.Conv2d(3, 4, 3, {padding = 1}), kd.nn.BatchNorm2d(4), kd.nn.ReLU(), kd.nn.Conv2d(4, 2, 1))
  local x = kd.randn({2, 3, 5, 5})
  local averager = kd.dist.GradAverager(net:parameters(), {bucket_mb = 100 / 2 ^ 20})
  -- in reverse order, buckets of at most 25 floats: the last conv, the batch
  -- norm and the first conv's bias (22 values), then its weight (108)
  h.eq(averager:buckets(), 2, "buckets of 100 bytes")
  local loss = net(x):sum()
  averager:backward(loss)
  local with = net:parameters()[1].grad:clone()
  net:zero_grad()
  net(x):sum():backward()
  h.eq((with - net:parameters()[1].grad):sum_squares(), 0, "the same gradient")
  h.raises(function() kd.dist.GradAverager({kd.zeros({2}, "int32")}) end, "parameter 1 is not a float32 tensor")
end

-- sync_batch_norm marks the batch norms; in one process they compute what plain ones do.
function T.sync_batch_norm_alone()
  local net = kd.nn.Sequential(kd.nn.Conv2d(3, 4, 3), kd.nn.BatchNorm2d(4))
  local x = kd.randn({2, 3, 6, 6})
  net:train()
  local plain = net(x)
  kd.dist.sync_batch_norm(net, true)
  h.eq(net["1"].sync, true, "the batch norm is marked")
  h.eq((net(x) - plain):sum_squares(), 0, "same output with one process")
  kd.dist.sync_batch_norm(net, false)
  h.eq(net["1"].sync, nil, "unmarked")
end

return T
