-- The method, end to end: a teacher on the fine labels, K self-correcting
-- pseudo-label cycles over the coarse and unlabeled images, N students
-- trained together (fine labels, confidence-weighted pseudo-labels, pixel and
-- pair-wise distillation from the teacher, mutual learning), then the
-- teacher, every student, their ensemble and the supervised baselines
-- evaluated; runs/<name>/results.json and results.md.
--   kdseg experiments/semisup_kd.lua [key=value ...]     (keys: kd.semisup.defaults)
-- e.g. students.models=[bench_student,erfnet] cycles.count=3 students.weights.mutual=0.5
-- With --check it only checks the overrides (kdseg sweep does, before its trials);
-- with --resume a killed run goes on at the stage and iteration where it stopped;
-- --overwrite replaces an earlier run of that name (refused otherwise).
local semisup = require("kd.method.semisup")

local cfg = kd.config.copy(semisup.defaults)
local flags = kd.config.arguments(arg, cfg, {"check", "resume", "overwrite"})
if flags.check then return end -- kdseg sweep checks overrides this way before running trials
return semisup.run(cfg, {resume = flags.resume, overwrite = flags.overwrite})
