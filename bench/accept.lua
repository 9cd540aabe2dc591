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

-- Lua's random numbers repeat from run to run and thread to thread: each thread seeds them from
-- the run (its own in the id keeps two runs on one store from posting the same notifications,
-- duplicates instead of inserts) and its number.
local run = os.getenv("HOOKFAN_BENCH_RUN") or tostring(os.time())
local seeded = false

local function hash(s)
  local h = 0
  for i = 1, #s do h = (h * 31 + s:byte(i)) % 2147483647 end
  return h
end

-- Ids shaped like Qualifio's v2 ids (UUIDs), random where theirs are: an index on them takes
-- new rows all over, not at one end. The last group is the thread and a counter, so no two
-- requests of a run repeat one.
function request()
  if not seeded then
    math.randomseed(hash(run) + tid * 104729)
    seeded = true
  end
  counter = counter + 1
  local id = string.format("%04x%04x-%04x-4%03x-%04x-%04x%08x",
    math.random(0, 0xffff), math.random(0, 0xffff), math.random(0, 0xffff),
    math.random(0, 0xfff), 0x8000 + math.random(0, 0x3fff), tid, counter)
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
