-- Runs the Lua test files given (or every tests/lua/test_*.lua) under kdseg.
local dir = arg[0]:match("^(.*)/[^/]*$") or "."
package.path = dir .. "/?.lua;" .. package.path
local harness = require("harness")
local files = {...}
if #files == 0 then
  local p = io.popen('ls "' .. dir .. '"/test_*.lua')
  for line in p:lines() do files[#files + 1] = line end
  p:close()
end
os.exit(harness.run(files) == 0 and 0 or 1, true) -- closing the state frees every tensor and buffer (a leak check sees it)
