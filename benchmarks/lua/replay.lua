-- Replays pre-built FHIR requests in a cycle, for benchmarks/rest.py.
--
-- Why pre-built: wrk's own docs warn that building a request per call is expensive, and on
-- a 2-core machine wrk competes with the server for CPU. So init() reads a file written by
-- rest.py (one request a line: METHOD <tab> PATH [<tab> BODY]) and formats every request
-- once; request() is a table lookup.
--
-- Each thread starts at its own offset, so two threads never walk the same ids in step
-- (concurrent updates of one id are allowed, but should be the exception).
--
-- done() prints one line "WRK_RESULT {json}" that rest.py parses: request count, duration,
-- latency percentiles (microseconds), socket errors and a count of every status seen.
-- Statuses are counted in response(), because wrk's summary.errors.status only counts
-- codes > 399 and the benchmark must fail on any non-2xx.

local threads = {}

function setup(thread)
   table.insert(threads, thread)
   thread:set("thread_index", #threads - 1)
end

local function split_tabs(line)
   local fields = {}
   local start = 1
   while true do
      local tab = string.find(line, "\t", start, true)
      if tab == nil then
         table.insert(fields, string.sub(line, start))
         return fields
      end
      table.insert(fields, string.sub(line, start, tab - 1))
      start = tab + 1
   end
end

function init(args)
   -- args: the request file, then the number of wrk threads (for the start offsets)
   local path = args[1]
   requests_pool = {}
   for line in io.lines(path) do
      if #line > 0 then
         local fields = split_tabs(line)
         local method, target, body = fields[1], fields[2], fields[3]
         local headers = { ["Accept"] = "application/fhir+json" }
         for name, value in pairs(wrk.headers) do  -- wrk --header (e.g. Authorization)
            if headers[name] == nil then
               headers[name] = value
            end
         end
         if body ~= nil and #body > 0 then
            headers["Content-Type"] = "application/fhir+json"
         else
            body = nil
         end
         table.insert(requests_pool, wrk.format(method, target, headers, body))
      end
   end
   if #requests_pool == 0 then
      error("no requests in " .. tostring(path))
   end
   local threads_total = tonumber(args[2]) or 1
   position = math.floor(#requests_pool * thread_index / threads_total)
   statuses = {}
end

function request()
   position = position % #requests_pool + 1
   return requests_pool[position]
end

function response(status, headers, body)
   local key = tostring(status)
   statuses[key] = (statuses[key] or 0) + 1
end

function done(summary, latency, requests)
   local merged = {}
   for _, thread in ipairs(threads) do
      local counts = thread:get("statuses") or {}
      for code, count in pairs(counts) do
         merged[code] = (merged[code] or 0) + count
      end
   end
   local parts = {}
   for code, count in pairs(merged) do
      table.insert(parts, string.format('"%s":%d', code, count))
   end
   local e = summary.errors
   io.write(string.format(
      'WRK_RESULT {"requests":%d,"duration_us":%d,"bytes":%d,'
         .. '"p50_us":%d,"p95_us":%d,"p99_us":%d,"mean_us":%.1f,"max_us":%d,'
         .. '"errors":{"connect":%d,"read":%d,"write":%d,"status":%d,"timeout":%d},'
         .. '"statuses":{%s}}\n',
      summary.requests, summary.duration, summary.bytes,
      latency:percentile(50), latency:percentile(95), latency:percentile(99),
      latency.mean, latency.max,
      e.connect, e.read, e.write, e.status, e.timeout,
      table.concat(parts, ",")
   ))
end
