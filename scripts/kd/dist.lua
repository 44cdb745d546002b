-- kd.dist: data-parallel training on MPI. Started as
--   mpirun -np 4 build/kdseg train config.yaml      (or srun, or a script)
-- kdseg runs as 4 processes (ranks); kd.train.Loop then gives each rank its
-- shard of every batch, averages the gradients and lets rank 0 alone write.
-- Started without a launcher (or with one process) every function here is
-- a no-op: rank 0 of 1.
--
--   kd.dist.rank(), kd.dist.size()          0-based rank, number of ranks
--   kd.dist.all_reduce(t[, op])             in place over the ranks: "sum" (default), "max", "min"
--   kd.dist.broadcast(t, root)              in place: every rank gets root's values
--   kd.dist.barrier()                       waits for every rank
--   kd.dist.all_reduce_numbers({...}[, op]) Lua numbers, reduced as doubles (a new table)
--   kd.dist.is_main()                       rank 0: the one that writes files and prints
--   kd.dist.broadcast_module(m[, root])     every parameter and buffer of a module
--   kd.dist.sync_batch_norm(m, on)          m's batch norms synchronised over the ranks
--   kd.dist.shard(list)                     this rank's part of a list: items rank+1, rank+1+size, ...
--   kd.dist.on_main(fn, ...)                fn on rank 0 alone (generating data), then every rank goes on
--
-- Every rank must make the same calls in the same order (they are MPI's
-- collective operations): a call only some ranks make waits forever.
local C = require("kd._C")
local class = require("kd.infra.class")

local dist = {}

local info = C.dist_info()

function dist.rank() return info.rank end
function dist.size() return info.size end
function dist.local_rank() return info.local_rank end
function dist.local_size() return info.local_size end
function dist.is_main() return info.rank == 0 end
-- whether MPI runs with this process (a launcher started it)
function dist.mpi() return info.mpi end

local function check_tensor(t, fn)
  if not kd.is_tensor(t) then error("kd.dist." .. fn .. ": a tensor is required, got " .. type(t), 3) end
end

function dist.all_reduce(t, op)
  check_tensor(t, "all_reduce")
  return C.dist_all_reduce(t, op)
end

function dist.broadcast(t, root)
  check_tensor(t, "broadcast")
  if type(root) ~= "number" then error("kd.dist.broadcast: root (a rank) is required", 2) end
  return C.dist_broadcast(t, root)
end

dist.barrier = C.dist_barrier
dist.all_reduce_numbers = C.dist_reduce_numbers

-- Every parameter and buffer of a module from root (default 0), in the
-- order of its state dict's sorted names (the same on every rank).
function dist.broadcast_module(module, root)
  if info.size == 1 then return module end
  local state = module:state_dict()
  local names = {}
  for name in pairs(state) do names[#names + 1] = name end
  table.sort(names)
  for _, name in ipairs(names) do C.dist_broadcast(state[name], root or 0) end
  return module
end

-- Synchronised batch norm: every kd.nn.BatchNorm2d of the module, in
-- training, takes its statistics over all ranks' batches (the single
-- process's statistics of the global batch). Off: each rank's own.
function dist.sync_batch_norm(module, on)
  local function walk(m)
    if class.is_instance(m, kd.nn.BatchNorm2d) then m.sync = on and true or nil end
    for _, child in ipairs(m:children()) do walk(child) end
  end
  walk(module)
  C.dist_sync_batch_norm(on and true or false)
  return module
end

-- fn(...) on rank 0 alone, the other ranks waiting for it: what only one
-- process should do (generate a dataset, write a table). Returns fn's
-- results on rank 0, nothing elsewhere.
local function pack(...) return {n = select("#", ...), ...} end

function dist.on_main(fn, ...)
  local results = {n = 0}
  if info.rank == 0 then results = pack(fn(...)) end
  C.dist_barrier()
  return unpack(results, 1, results.n)
end

-- This rank's share of a list, round robin (items rank + 1, rank + 1 + size, ...).
function dist.shard(list)
  if info.size == 1 then return list end
  local out = {}
  for i = info.rank + 1, #list, info.size do out[#out + 1] = list[i] end
  return out
end

-- A view of a dataset (kd.data.Dataset) holding this rank's share of its
-- items, for loaders that each rank runs over its part (evaluation, probes);
-- the dataset itself on one rank.
function dist.shard_dataset(dataset)
  if info.size == 1 then return dataset end
  local view = setmetatable({}, {__index = dataset})
  view.items = dist.shard(dataset.items)
  return view
end

-- Averages the gradients of `params` over the ranks in buckets sent while
-- backward runs: local r = dist.GradAverager(params, {bucket_mb = 1});
-- r:backward(loss) -> seconds spent communicating.
local GradAverager = class("dist.GradAverager")
dist.GradAverager = GradAverager

function GradAverager:__init(params, options)
  options = options or {}
  self.handle = C.dist_grad_reducer(params, (options.bucket_mb or 1) * 1024 * 1024)
end

function GradAverager:backward(loss)
  self.handle:arm()
  local ok, err = pcall(loss.backward, loss)
  if not ok then
    self.handle:disarm()
    error(err, 0)
  end
  return self.handle:finish()
end

-- The number of buckets, and how many the last backward started before it ended.
function GradAverager:buckets() return self.handle:buckets() end

return dist
