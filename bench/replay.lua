-- wrk script: replays pre-signed raw HTTP requests from a file written by bench/wrk.py, one after the other.
--
--   wrk -t1 -c64 -d9s -s bench/replay.lua http://127.0.0.1:PORT -- REQUESTS_FILE [START]
--
-- The file holds whole requests (head and body) separated by a NUL byte, which neither a head nor a JSON body
-- contains. Each wrk thread loads it in init() (before the clock starts) and sends request START+1, START+2, ...;
-- past the end it starts over, which only a server that keeps no state (the bare endpoint) may be given.
-- done() prints one line "WRK_JSON {...}" that bench/wrk.py parses: latency in microseconds.

local requests = {}
local count = 0
local next_index = 0

function init(args)
  local path = args[1]
  local start = tonumber(args[2] or "0")
  local file = assert(io.open(path, "rb"))
  local data = file:read("*a")
  file:close()
  local position = 1
  while true do
    local stop = string.find(data, "\0", position, true)
    if not stop then break end
    count = count + 1
    requests[count] = string.sub(data, position, stop - 1)
    position = stop + 1
  end
  assert(count > 0, "no requests in " .. path)
  next_index = start % count
end

function request()
  next_index = next_index + 1
  if next_index > count then next_index = 1 end
  return requests[next_index]
end

function done(summary, latency, requests_)
  local e = summary.errors
  io.write(string.format(
    'WRK_JSON {"requests":%d,"duration_us":%d,"p50_us":%d,"p90_us":%d,"p99_us":%d,"max_us":%d,'
      .. '"connect_errors":%d,"read_errors":%d,"write_errors":%d,"status_errors":%d,"timeouts":%d}\n',
    summary.requests, summary.duration, latency:percentile(50), latency:percentile(90), latency:percentile(99),
    latency.max, e.connect, e.read, e.write, e.status, e.timeout))
end
