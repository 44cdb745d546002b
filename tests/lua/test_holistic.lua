-- Holistic distillation (kd.method.holistic): spectral normalisation brings
-- a layer's largest singular value to 1 and has finite-difference gradients;
-- the critic's loss and a student's adversarial term worked out by hand with
-- a one-layer critic; their gradients against finite differences; each
-- term's gradient reaches only its own side (the critic's weights get none
-- from a student's term, the students none from the critic's); and the
-- students' loop with a critic trains, logs both terms and resumes.
local h = require("harness")
local T = {}
local holistic = kd.holistic
local ln3 = math.log(3)

function T.spectral_norm_brings_sigma_to_one()
  kd.manual_seed(1)
  local conv = kd.nn.SNConv2d(5, 7, 3, {padding = 1})
  conv:train()
  local x = kd.randn({1, 5, 6, 6})
  for _ = 1, 40 do conv(x) end -- one power-iteration step per forward
  local w, sigma = conv:normalized_weight()
  h.truthy(sigma > 0, "the raw weight's sigma")
  local _, normalised = kd._C.spectral_power(w:detach(), kd.randn({7}), 100)
  h.near(normalised, 1, 1e-3, "largest singular value of the normalised weight")
  -- the output is the plain convolution with W / sigma
  conv:eval()
  local w2, s2 = conv:normalized_weight()
  local plain = kd.conv2d(x, conv.weight:detach() * (1 / s2), conv.bias, {padding = 1})
  h.near(math.sqrt((conv(x) - plain):sum_squares()), 0, 1e-5, "conv(x) = conv with W / sigma")
  h.raises(function() kd.nn.SNConv2d(2, 2, 3, {groups = 2}) end, "groups are not supported")
  h.raises(function() kd.nn.SNConv2d(2, 2, 3, {power_iterations = 0}) end, "power_iterations")
end

-- In evaluation (u fixed, v = W^T u / |W^T u|), sigma = |W^T u| exactly and
-- its gradient is u v^T: finite differences agree, through weight and input.
function T.spectral_norm_gradients()
  kd.manual_seed(2)
  local conv = kd.nn.SNConv2d(3, 4, 3, {padding = 1, stride = 2})
  conv:eval()
  local x = kd.randn({2, 3, 5, 5})
  local ok, report = kd.gradcheck(function(input, weight) return conv(input) end, {x, conv.weight},
                                  {step = 1e-3, tolerance = 2e-2, samples = 30})
  h.truthy(ok, "SNConv2d gradients: " .. tostring(report))
end

-- A critic of one 1x1 layer whose weight picks class 0's probability:
-- D = the mean of p0 over pixels (|w| = 1, so sigma = 1; bias 0).
local function picking_critic()
  local critic = holistic.Critic(2, {depth = 0})
  critic.score.weight:copy_(kd.tensor({0, 0, 0, 1, 0}):view(1, 5, 1, 1))
  critic.score.bias:fill_(0)
  critic:eval()
  return critic
end

function T.terms_by_hand()
  local critic = picking_critic()
  local images = kd.zeros({1, 3, 1, 2})
  -- student: pixel 1 logits (0, 0) -> p0 1/2; pixel 2 (ln 3, 0) -> 3/4: mean 5/8
  local student = kd.tensor({{{{0, ln3}}, {{0, 0}}}})
  -- teacher: both pixels (ln 3, 0) -> 3/4
  local teacher = kd.tensor({{{{ln3, ln3}}, {{0, 0}}}})
  h.near(holistic.critic_loss(critic, images, teacher, {student}):item(), 5 / 8 - 3 / 4, 1e-6,
         "critic loss: mean D(student) - mean D(teacher) = 5/8 - 3/4")
  h.near(holistic.critic_loss(critic, images, teacher, {student, teacher}):item(), (5 / 8 + 3 / 4) / 2 - 3 / 4, 1e-6,
         "two students: the mean of their scores")
  h.near(holistic.student_loss(critic, images, student):item(), -5 / 8, 1e-6, "student term: -D(student) = -5/8")
  -- a teacher map at another size is resized to the student's (bilinear, 1x1 -> 1x2: the same 3/4)
  local small_teacher = kd.tensor({{{{ln3}}, {{0}}}})
  h.near(holistic.critic_loss(critic, images, small_teacher, {student}):item(), 5 / 8 - 3 / 4, 1e-6,
         "the teacher's map resized to the student's")
  h.raises(function() critic(kd.zeros({1, 4, 1, 2})) end, "input must be N x 5 x H x W")
  h.raises(function() holistic.Critic(2, {widht = 8}) end, "unknown option 'widht'")
  h.raises(function() holistic.Critic(2, {width = 0}) end, "width must be a positive integer")
  h.raises(function() holistic.Critic(0) end, "classes must be a positive integer")
end

function T.term_gradients()
  kd.manual_seed(3)
  local critic = holistic.Critic(3, {width = 4, depth = 2})
  critic:eval()
  local images = kd.randn({2, 3, 8, 8})
  local student = kd.randn({2, 3, 4, 4})
  local teacher = kd.randn({2, 3, 4, 4})
  local ok, report = kd.gradcheck(function(s) return holistic.student_loss(critic, images, s) end, {student},
                                  {step = 1e-3, tolerance = 2e-2, samples = 30})
  h.truthy(ok, "student term, d/d logits: " .. tostring(report))
  local w = critic.conv1.weight
  ok, report = kd.gradcheck(function() return holistic.critic_loss(critic, images, teacher, {student}) end, {w},
                            {step = 1e-3, tolerance = 2e-2, samples = 30})
  h.truthy(ok, "critic loss, d/d critic weight: " .. tostring(report))
  -- each side's gradient stays on its side
  for _, p in ipairs(critic:parameters()) do p.grad = nil end
  local s = student:detach():clone(); s.requires_grad = true
  holistic.student_loss(critic, images, s):backward()
  h.truthy(s.grad and s.grad:sum_squares() > 0, "the student's term reaches its logits")
  for _, p in ipairs(critic:parameters()) do h.truthy(p.grad == nil, "the student's term leaves the critic's weights") end
  s.grad = nil
  holistic.critic_loss(critic, images, teacher, {s}):backward()
  h.truthy(s.grad == nil, "the critic's loss leaves the student's logits")
  h.truthy(critic.score.weight.grad and critic.score.weight.grad:sum_squares() > 0, "the critic's loss reaches its weights")
end

-- Two students and a critic on the loop: the terms are logged, the critic
-- learns, it is neither evaluated nor saved apart, and
-- the run resumes from its state (which holds the critic).
function T.students_with_a_critic()
  local dir = os.tmpname(); os.remove(dir)
  kd.data.synthcity.write({root = dir .. "/data", train = 6, coarse = 0, val = 2, height = 32, width = 64, seed = 3})
  local classes = kd.data.classes.get("cityscapes")
  local labeled = kd.data.Dataset({root = dir .. "/data", split = "train", labels = "fine"})
  local val = kd.data.Dataset({root = dir .. "/data", split = "val", labels = "fine"})
  kd.manual_seed(0)
  local teacher = kd.models.create("bench_student", {classes = 19})
  local settings = {name = "hol", runs_dir = dir .. "/runs", seed = 1, batch_size = 2, workers = 0, checkpoint_every = 2,
                    augment = {crop = {32, 64}},
                    students = {models = {"bench_student", "bench_student"}, iterations = 4, critic_width = 8,
                                weights = {ce = 1, pseudo = 0, holistic = 0.1, mutual = 0.5}}}
  local r = kd.students.train({settings = settings, labeled = labeled, val = val, classes = classes, teacher = teacher,
                               quiet = true})
  h.truthy(r.students[2].miou ~= nil and r.ensemble ~= nil, "students and ensemble evaluated")
  local log = io.open(dir .. "/runs/hol/metrics.jsonl"):read("*a")
  h.truthy(log:find('"student1.holistic"', 1, true) and log:find('"critic.critic"', 1, true), "both terms logged")
  h.truthy(not kd.data.files.exists(dir .. "/runs/hol/checkpoints/critic"), "the critic is not saved apart")
  local state = kd.load(dir .. "/runs/hol/checkpoints/state.safetensors")
  h.truthy(state["model.critic.score.weight"] ~= nil, "the state file holds the critic")
  -- resumed from its state: the critic's weights load back (a finished run is evaluated again)
  local again = kd.students.train({settings = settings, labeled = labeled, val = val, classes = classes, teacher = teacher,
                                   quiet = true, resume = true})
  h.near(again.students[1].miou, r.students[1].miou, 1e-12, "resumed from the state, the same result")
  os.execute("rm -rf " .. dir)
end

return T
