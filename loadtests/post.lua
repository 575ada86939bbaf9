-- wrk script: POST one fixed body, stop after a bounded count, print a JSON summary.
-- Arguments after "--": BODY_FILE MAX_REQUESTS [HEADER: VALUE ...]
local max_requests = 0
local seen = 0
-- WRK_THINK_MS: each connection waits this long before its next request, as a real client between two
-- calls (and, after a 503, before it tries again); 0 (the default): back to back, a pure closed loop.
local think_ms = tonumber(os.getenv("WRK_THINK_MS") or "0")
if think_ms > 0 then
  function delay()
    return think_ms
  end
end

function init(args)
  local f = assert(io.open(args[1], "rb"))
  wrk.method = "POST"
  wrk.body = f:read("*a")
  f:close()
  max_requests = tonumber(args[2]) or 0
  for i = 3, #args do
    local name, value = args[i]:match("^([^:]+):%s*(.*)$")
    if name then wrk.headers[name] = value end
  end
end

function response(status, headers, body)
  seen = seen + 1
  if max_requests > 0 and seen >= max_requests then
    wrk.thread:stop()
  end
end

function done(summary, latency, requests)
  local e = summary.errors
  io.write(string.format(
    'WRK_JSON {"requests":%d,"duration_us":%d,"bytes":%d,'
      .. '"errors":{"connect":%d,"read":%d,"write":%d,"status":%d,"timeout":%d},'
      .. '"latency_us":{"p50":%d,"p90":%d,"p99":%d,"p999":%d,"mean":%.1f,"max":%d}}\n',
    summary.requests, summary.duration, summary.bytes,
    e.connect, e.read, e.write, e.status, e.timeout,
    latency:percentile(50), latency:percentile(90), latency:percentile(99), latency:percentile(99.9),
    latency.mean, latency.max))
end
