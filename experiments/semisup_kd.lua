-- The method, end to end: a teacher on the fine labels, K self-correcting
-- pseudo-label cycles over the coarse and unlabeled images, N students
-- trained together (fine labels, confidence-weighted pseudo-labels, pixel and
-- pair-wise distillation from the teacher, mutual learning), then the
-- teacher, every student, their ensemble and the supervised baselines
-- evaluated; runs/<name>/results.json and results.md.
--   kdseg experiments/semisup_kd.lua [key=value ...]     (keys: kd.semisup.defaults)
-- e.g. students.models=[bench_student,erfnet] cycles.count=3 students.weights.mutual=0.5
local semisup = require("kd.semisup")

local cfg = kd.config.copy(semisup.defaults)
for _, a in ipairs(arg or {}) do kd.config.override(cfg, a) end
return semisup.run(cfg)
