-- The defaults of a training config: every key a config may set. Configs
-- (Lua or YAML) override them, and `kdseg train CONFIG key=value` overrides
-- those; a key not listed here is an error.
local normalize = require("kd.data.normalize")
local optimizers = require("kd.train.optimizers")
local merge = require("kd.infra.config").merge
return {
  name = "run",            -- runs/<name>/ holds everything the run writes
  runs_dir = "runs",
  seed = 0,                -- weights, data order and augmentation
  threads = 0,             -- 0: leave the thread count as it is
  data = {
    root = "data/synthcity",
    classes = "cityscapes", -- or a YAML class table
    train = {split = "train", labels = "fine", list = false}, -- list: a split file, relative to root
    val = {split = "val", labels = "fine", list = false, limit = 0}, -- limit: first N images (0: all)
    batch_size = 8,
    workers = 2,
    cache_mb = 256,        -- decoded samples the training loader keeps (MiB; 0: none); changes no batch
    augment = {crop = {128, 256}, scale = {0.5, 2.0}, hflip = true, brightness = 0.25, contrast = 0.25,
               saturation = 0.25, hue = 0, jitter_p = 0.8, grayscale_p = 0, blur_p = 0, blur_sigma = {0.1, 2.0},
               mean = normalize.mean, std = normalize.std, pad_label = 255},
  },
  -- model: a zoo name and its options (false: the design's default);
  -- pretrained: backbone weights (kd.models.load_pretrained)
  model = {name = "bench_student", width = false, expansion = false, output_stride = false, deep_stem = false,
           pretrained = false},
  -- the optimizer's settings and defaults are optimizers.defaults (name: sgd
  -- or adamw, lr, momentum, weight_decay, nesterov, betas); a config's batch
  -- norms and biases are not decayed
  optim = merge(optimizers.defaults, {no_decay_bn_bias = true}),
  schedule = merge(optimizers.schedule_defaults, {}), -- poly | cosine | constant; warmup iterations
  train = {iterations = 1000, log_every = 20, eval_every = 250, checkpoint_every = 250, clip_grad = 0,
           grids = 4,       -- grids: samples drawn in the prediction grid of each evaluation
           freeze_bn = false, -- batch norms normalise with (and keep) their running statistics; their
                              -- weights still learn: for fine-tuning a trained model on small batches
           sync_bn = false,   -- data-parallel (mpirun): batch statistics over all ranks' shards
           bucket_mb = 1},    -- data-parallel: gradients are averaged in buckets of this size
  eval = {crop = false, stride = false, batch_size = 4}, -- crop {h, w}: sliding window for larger images
}
