-- slurm: `kdseg ... --emit-slurm [--nodes N] [--tasks-per-node N]
-- [--threads-per-task N] [--time D-HH:MM:SS] [--partition P]` prints a
-- Slurm batch script that runs the same command data-parallel (kd.dist):
-- one rank per task, srun starting them through PMIx, each rank with its
-- threads on cores of its own. The command gets --resume, so a requeued or
-- resubmitted job goes on from its last checkpoint.
--   kdseg train config.yaml --emit-slurm --nodes 2 --tasks-per-node 4 > job.sh && sbatch job.sh
local slurm = {}

slurm.defaults = {nodes = 1, ["tasks-per-node"] = 1, ["threads-per-task"] = 8, time = "24:00:00", partition = false}

local function shell_quote(s)
  if s:match("^[%w%._/=:,%-%+%[%]]+$") then return s end
  return "'" .. s:gsub("'", "'\\''") .. "'"
end

-- Splits args into the command's own and the job's settings; nil if
-- --emit-slurm is not among them.
function slurm.parse(args)
  local emit, job, command = false, {}, {}
  for k, v in pairs(slurm.defaults) do job[k] = v end
  local i = 1
  while i <= #args do
    local a = args[i]
    local key = a:match("^%-%-(.+)$")
    if a == "--emit-slurm" then
      emit = true
    elseif emit and key and slurm.defaults[key] ~= nil then
      local value = args[i + 1]
      if value == nil then error("kdseg --emit-slurm: --" .. key .. " needs a value", 0) end
      job[key] = value
      i = i + 1
    else
      command[#command + 1] = a
    end
    i = i + 1
  end
  if not emit then return nil end
  for _, key in ipairs({"nodes", "tasks-per-node", "threads-per-task"}) do
    local n = tonumber(job[key])
    if not n or n < 1 or n % 1 ~= 0 then
      error(string.format("kdseg --emit-slurm: --%s must be a positive integer, got %s", key, tostring(job[key])), 0)
    end
    job[key] = n
  end
  if not tostring(job.time):match("^[%d%-:]+$") then
    error("kdseg --emit-slurm: --time must be Slurm's [D-]HH:MM:SS, got " .. tostring(job.time), 0)
  end
  if job.partition and not tostring(job.partition):match("^[%w_%-%.]+$") then
    error("kdseg --emit-slurm: --partition must be a partition name, got " .. tostring(job.partition), 0)
  end
  for _, a in ipairs(command) do
    if a == "--overwrite" then
      error("kdseg --emit-slurm: --overwrite would wipe the run each time the job is requeued; start it once "
            .. "with --overwrite outside Slurm, or give the run another name", 0)
    end
  end
  if #command == 0 then error("kdseg --emit-slurm: no command to run (kdseg train CONFIG --emit-slurm ...)", 0) end
  return job, command
end

-- The batch script for the command (kdseg's arguments, without the job's).
function slurm.script(job, command, binary, cwd)
  local args, resume = {}, false
  for i, a in ipairs(command) do
    args[i] = shell_quote(a)
    resume = resume or a == "--resume"
  end
  if not resume then args[#args + 1] = "--resume" end
  local ranks = job.nodes * job["tasks-per-node"]
  local lines = {
    "#!/bin/bash",
    "# Made by kdseg --emit-slurm. Submit with: sbatch THIS_FILE",
    string.format("# %d rank%s (%d node%s x %d tasks), %d threads each; every global batch is split over the ranks,",
                  ranks, ranks > 1 and "s" or "", job.nodes, job.nodes > 1 and "s" or "", job["tasks-per-node"],
                  job["threads-per-task"]),
    "# so the batch size must be at least the number of ranks. Rank 0 writes the run folder, which",
    "# must be on a file system every node sees.",
    "#SBATCH --job-name=kdseg",
    "#SBATCH --nodes=" .. job.nodes,
    "#SBATCH --ntasks-per-node=" .. job["tasks-per-node"],
    "#SBATCH --cpus-per-task=" .. job["threads-per-task"],
    "#SBATCH --time=" .. job.time,
    "#SBATCH --output=kdseg-%j.out",
    "#SBATCH --requeue",
  }
  if job.partition then lines[#lines + 1] = "#SBATCH --partition=" .. job.partition end
  local rest = {
    "set -eu",
    "cd " .. shell_quote(cwd),
    "export OMP_PROC_BIND=close OMP_PLACES=cores",
    "# --resume: a requeued or resubmitted job goes on from the last checkpoint (a new one starts).",
    "# Where srun cannot start MPI jobs (no PMIx), use instead:",
    "#   mpirun -np \"$SLURM_NTASKS\" --map-by ppr:" .. job["tasks-per-node"] .. ":node:PE=" .. job["threads-per-task"] ..
      " " .. shell_quote(binary) .. " --threads \"$SLURM_CPUS_PER_TASK\" " .. table.concat(args, " "),
    "srun --mpi=pmix --cpu-bind=cores " .. shell_quote(binary) .. " --threads \"$SLURM_CPUS_PER_TASK\" " ..
      table.concat(args, " "),
  }
  for _, l in ipairs(rest) do lines[#lines + 1] = l end
  return table.concat(lines, "\n") .. "\n"
end

return slurm
