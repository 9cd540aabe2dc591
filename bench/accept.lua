-- wrk script: POSTs a ~1.6 KB Qualifio v2 notification with a fresh id each time, so every
-- request is a new notification (not a duplicate) and a real insert.
local counter = 0
local thread_id = 0
local threads = {}

function setup(thread)
  thread_id = thread_id + 1
  thread:set("tid", thread_id)
  table.insert(threads, thread)
end

local file = io.open(os.getenv("HOOKFAN_BENCH_PAYLOAD") or "bench/payload.json")
local template = file:read("*a")
file:close()
template = template:gsub('"id":%s*"[^"]+"', '"id":"__ID__"', 1)

wrk.method = "POST"
wrk.headers["Content-Type"] = "application/json"
wrk.headers["Authorization"] = "Bearer bench-token-0123456789"

-- Lua's random numbers repeat from run to run: a run of its own in the id keeps two runs on
-- one store from posting the same notifications (duplicates, not inserts).
local run = os.getenv("HOOKFAN_BENCH_RUN") or tostring(os.time())

function request()
  counter = counter + 1
  local id = run .. "-" .. tid .. "-" .. counter .. "-" .. math.random(1, 1e9)
  local body = template:gsub("__ID__", id, 1)
  return wrk.format(nil, "/hooks/qualifio", nil, body)
end

done = function(summary, latency, requests)
  io.write(string.format("requests: %d, errors: %d (status %d, timeout %d)\n",
    summary.requests, summary.errors.status + summary.errors.connect + summary.errors.read + summary.errors.write + summary.errors.timeout,
    summary.errors.status, summary.errors.timeout))
  io.write(string.format("throughput: %.0f req/s\n", summary.requests / (summary.duration / 1e6)))
  io.write(string.format("latency p50: %.2f ms, p90: %.2f ms, p99: %.2f ms, max: %.2f ms\n",
    latency:percentile(50) / 1000, latency:percentile(90) / 1000, latency:percentile(99) / 1000, latency.max / 1000))
end
