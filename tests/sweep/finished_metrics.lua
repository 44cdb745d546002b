-- finished_metrics.lua LEDGER: "trial metric" of every finished trial of a
-- sweep's ledger, sorted; exits non-zero if there is none.
local cjson = require("cjson")
local out = {}
for line in io.lines(arg[1]) do
  local e = cjson.decode(line)
  if e.state == "finished" then out[#out + 1] = e.trial .. " " .. tostring(e.metric) end
end
table.sort(out)
print(table.concat(out, "\n"))
if #out == 0 then os.exit(1) end
