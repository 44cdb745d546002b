-- What `make demo` runs: the whole method on a freshly generated small
-- SynthCity (64 x 128 images so that it takes minutes on 2 cores, not hours),
-- ending with the table: fine-only student vs distilled students vs
-- all-labels student. Every number comes from this run: running it again
-- replaces the last demo run (runs/demo_semisup).
local semisup = require("kd.method.semisup")
local root = "data/demo_semisup"

kd.dist.on_main(function() -- data-parallel: one rank generates, the others wait
  if kd.data.files.exists(root .. "/.complete") then return end
  print("== generating SynthCity in " .. root)
  kd.data.synthcity.write({root = root, train = 160, coarse = 320, val = 60, height = 64, width = 128, seed = 7})
  kd.data.splits.write({root = root, fractions = {"1/8"}, seed = 0})
  kd._C.write_atomic(root .. "/.complete", "")
end)

return semisup.run({
  name = "demo_semisup", seed = 1, batch_size = 8, workers = 2,
  data = {root = root, labeled = "splits/1_8/labeled.txt", unlabeled = "splits/1_8/unlabeled.txt"},
  augment = {crop = {64, 128}, scale = {0.75, 1.5}},
  teacher = {model = "bench_teacher", iterations = 500, lr = 0.02, retrain_iterations = 250, retrain_lr = 0.01},
  cycles = {count = 2},
  students = {models = {"bench_student", "bench_student"}, iterations = 600, lr = 0.02,
              weights = {ce = 1, pseudo = 1, pixel_kd = 0.5, pairwise = 1, mutual = 0.5}},
}, {overwrite = true})
