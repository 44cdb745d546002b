-- harness: the Lua tests' runner. Each test file returns a table of
-- name -> function; a test fails when it raises. run prints one line per
-- failure and ends with "N passed, N failed".
local harness = {}

function harness.eq(got, want, what)
  if got ~= want then error(string.format("%s: got %s, want %s", what or "value", tostring(got), tostring(want)), 2) end
end

function harness.near(got, want, tol, what)
  if type(got) ~= "number" or math.abs(got - want) > tol * math.max(1, math.abs(want)) then
    error(string.format("%s: got %s, want %s (tolerance %g)", what or "value", tostring(got), tostring(want), tol), 2)
  end
end

function harness.truthy(v, what) if not v then error((what or "condition") .. " is false", 2) end end

-- fn must raise an error whose message contains every fragment (plain text).
function harness.raises(fn, ...)
  local ok, err = pcall(fn)
  if ok then error("expected an error, none was raised", 2) end
  err = tostring(err)
  for _, fragment in ipairs({...}) do
    if not err:find(fragment, 1, true) then
      error(string.format("error %q does not contain %q", err, fragment), 2)
    end
  end
  return err
end

-- The engine's process-wide settings. Every test starts from the suite's
-- (those of the environment: KDSEG_CONV_ALGORITHM, KDSEG_LAYOUT, the thread
-- count), so a test that fails midway, before it puts back what it changed,
-- does not run the tests after it under its settings, and a test that puts
-- back a default ("direct") does not undo the environment's choice.
local function engine_settings()
  local backend = kd.set_conv_backend("im2col") -- the setter is the only reader
  kd.set_conv_backend(backend)
  return {backend = backend, algorithm = kd.conv_algorithm(), precision = kd.conv_precision(),
          layout = kd.set_layout("blocked"), threads = kd.get_threads()}
end

local function restore(settings)
  kd.set_conv_backend(settings.backend)
  kd.set_conv_algorithm(settings.algorithm)
  kd.set_conv_precision(settings.precision)
  kd.set_layout(settings.layout)
  kd.set_threads(settings.threads)
end

function harness.run(files)
  local passed, failed = 0, 0
  local suite = engine_settings()
  restore(suite)
  for _, file in ipairs(files) do
    local chunk, err = loadfile(file)
    local tests = chunk and chunk() or nil
    if type(tests) ~= "table" then
      print("FAIL " .. file .. ": cannot load: " .. tostring(err or tests))
      failed = failed + 1
    else
      local names = {}
      for name in pairs(tests) do names[#names + 1] = name end
      table.sort(names)
      for _, name in ipairs(names) do
        kd.manual_seed(1234)
        local ok, e = xpcall(tests[name], debug.traceback)
        if ok then passed = passed + 1
        else
          failed = failed + 1
          print("FAIL " .. file .. " " .. name .. ": " .. tostring(e))
        end
        restore(suite)
        collectgarbage()
      end
    end
  end
  print(string.format("Lua tests: %d passed, %d failed", passed, failed))
  return failed
end

return harness
