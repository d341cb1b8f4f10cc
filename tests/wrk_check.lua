-- wrk script for tests/test_real_libraries.py: every request asks for a new
-- token (GET /echo/<token>), and every response is checked against the
-- requests of its thread that are still waiting for an answer: status 200,
-- and the exact body tests/h11_server.py makes for that token.  done() prints
-- a line RESULT key=value ... (integers), then a line
-- FIRST_MISMATCH with the start of the first response that failed the check

local threads = {}
local next_id = 0

function setup(thread)
   thread:set("thread_id", next_id)
   next_id = next_id + 1
   table.insert(threads, thread)
end

function init(args)
   counter = 0
   outstanding = {}
   checked = 0
   mismatches = 0
   first_mismatch = ""
end

local function body_for(token)
   local unit = token .. "."
   local sum = 0
   for i = 1, #token do
      sum = sum + token:byte(i)
   end
   local size = (sum * 7919) % 4096
   return string.sub(string.rep(unit, math.floor(size / #unit) + 1), 1, size)
end

function request()
   counter = counter + 1
   local token = "t" .. thread_id .. "-" .. counter
   outstanding[token] = true
   return wrk.format("GET", "/echo/" .. token)
end

function response(status, headers, body)
   checked = checked + 1
   local token = body and body:match("^token=([%w%-]+);")
   local ok = status == 200
      and token ~= nil
      and outstanding[token]
      and body == "token=" .. token .. ";" .. body_for(token)
   if ok then
      outstanding[token] = nil
   else
      mismatches = mismatches + 1
      if first_mismatch == "" then
         first_mismatch = status .. ":" .. string.sub(body or "", 1, 60)
      end
   end
end

function done(summary, latency, requests)
   local total_checked, total_mismatches, first = 0, 0, ""
   for _, thread in ipairs(threads) do
      total_checked = total_checked + thread:get("checked")
      total_mismatches = total_mismatches + thread:get("mismatches")
      if first == "" then
         first = thread:get("first_mismatch")
      end
   end
   local e = summary.errors
   io.write(string.format(
      "RESULT requests=%d checked=%d mismatches=%d connect=%d read=%d write=%d status=%d timeout=%d\n",
      summary.requests, total_checked, total_mismatches,
      e.connect, e.read, e.write, e.status, e.timeout))
   io.write("FIRST_MISMATCH " .. first .. "\n")
end
