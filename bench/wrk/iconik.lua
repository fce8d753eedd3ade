-- wrk script: iconik webhooks with unique asset ids (payloads as in seed 003).
--
--   wrk ... -s bench/wrk/iconik.lua URL -- create SALT
--       every request a POST /create for a new asset (the ingest benchmark)
--   wrk ... -s bench/wrk/iconik.lua URL -- pairs SALT N
--       N assets, each a POST /create then a POST /proxy (CLOSED), then cheap
--       GET /healthz until stopped; prints BENCH_POSTS_DONE once all 2N POSTs
--       are answered (the event-to-action benchmark). Run it with one thread.
--
-- done() prints one line "BENCH_JSON {...}": counts, errors, statuses, latency (us), and the
-- latency at every 0.1 % as one comma-separated string.

local CREATE = [[{"data": {"analyze_status": "N/A", "created_by_user": "f1b89efa-6cb5-11e7-b50b-0a580a0000f8", ]]
  .. [["date_created": "2018-01-03T18:30:26.885375+00:00", "date_deleted": null, ]]
  .. [["date_modified": "2018-01-03T18:30:26.885390+00:00", "deleted_by_user": null, "external_id": null, ]]
  .. [["id": "%s", "status": "ACTIVE", "title": "bench_%d.mxf", "type": "ASSET"}, "event_type": "assets", ]]
  .. [["object_id": "%s", "operation": "create", "realm": "entity", ]]
  .. [["system_domain_id": "bf0b8c12-7ccc-11e7-8d93-0a580a00022b"}]]

local PROXY = [[{"data": {"asset_id": "%s", "bit_rate": 8, "codec": "JPEG", "filename": "%s.jpg", ]]
  .. [["format": "JPEG", "frame_rate": "0", "id": "%s", "is_drop_frame": false, "name": "bench_%d-lowres.jpg", ]]
  .. [["resolution": {"height": 720, "width": 1280}, "start_time_code": null, "status": "CLOSED", ]]
  .. [["storage_id": "f7d92dd8-7ccc-11e7-8801-0a580a000229"}, "event_type": "assets", ]]
  .. [["object_id": "%s", "operation": "update", "realm": "proxies", ]]
  .. [["system_domain_id": "bf0b8c12-7ccc-11e7-8d93-0a580a00022b"}]]

local HEADERS = {["Content-Type"] = "application/json", ["User-Agent"] = "iconik-webhook-bench"}

local threads = {}
local thread_count = 0

function setup(thread)
  thread:set("tid", thread_count)
  thread_count = thread_count + 1
  table.insert(threads, thread)
end

function init(args)
  mode = args[1] or "create"
  salt = tonumber(args[2] or "0")
  total = tonumber(args[3] or "0")
  sent = 0
  answered_posts = 0
  finished = false
  primed = false
  statuses = {}
  -- wrk.format() uses the headers it is given instead of -H ones: merge them once.
  for name, value in pairs(wrk.headers) do
    if HEADERS[name] == nil then
      HEADERS[name] = value
    end
  end
end

local function uuid(kind, n)
  -- salt: the run; tid: the wrk thread; kind: asset (a) or proxy (b); n: the counter.
  return string.format("%08x-%04x-4%03x-a%03x-%012x", salt, tid, 0, kind, n)
end

function request()
  if not primed then
    -- wrk calls request() once on thread 0's state to inspect it and never sends that one:
    -- hand it a probe, so no counted webhook is lost (harmless if a wrk does not do this).
    primed = true
    return wrk.format("GET", "/healthz")
  end
  sent = sent + 1
  if mode == "create" then
    local id = uuid(10, sent)
    return wrk.format("POST", "/create", HEADERS, string.format(CREATE, id, sent, id))
  end
  if sent > 2 * total then
    return wrk.format("GET", "/healthz")
  end
  local n = math.floor((sent + 1) / 2)
  local asset = uuid(10, n)
  if sent % 2 == 1 then
    return wrk.format("POST", "/create", HEADERS, string.format(CREATE, asset, n, asset))
  end
  local proxy = uuid(11, n)
  return wrk.format("POST", "/proxy", HEADERS, string.format(PROXY, asset, proxy, proxy, n, asset))
end

function response(status, headers, body)
  statuses[status] = (statuses[status] or 0) + 1
  if mode == "pairs" and not finished and body and (body:find('"event_id"', 1, true) or body:find('"error"', 1, true)) then
    answered_posts = answered_posts + 1
    if answered_posts >= 2 * total then
      finished = true
      io.write("BENCH_POSTS_DONE\n")
      io.flush()
      wrk.thread:stop()
    end
  end
end

local function encode(value)
  if type(value) == "table" then
    local parts = {}
    for k, v in pairs(value) do
      table.insert(parts, string.format("%q: %s", tostring(k), encode(v)))
    end
    return "{" .. table.concat(parts, ", ") .. "}"
  elseif type(value) == "number" then
    return string.format("%.17g", value)
  elseif value == nil then
    return "null"
  end
  return string.format("%q", tostring(value))
end

function done(summary, latency, requests)
  local by_status = {}
  local posts = 0
  for _, thread in ipairs(threads) do
    local counts = thread:get("statuses") or {}
    for status, count in pairs(counts) do
      by_status[tostring(status)] = (by_status[tostring(status)] or 0) + count
    end
    posts = posts + (thread:get("answered_posts") or 0)
  end
  -- The latency at every 0.1 % (in us), so that runs can be merged into one distribution (loadgen.py).
  local quantiles = {}
  for step = 1, 1000 do
    quantiles[step] = string.format("%d", latency:percentile(step / 10))
  end
  local result = {
    duration_us = summary.duration,
    requests = summary.requests,
    bytes = summary.bytes,
    errors = summary.errors,
    statuses = by_status,
    answered_posts = posts,
    latency_us = {
      min = latency.min, max = latency.max, mean = latency.mean, stdev = latency.stdev,
      p50 = latency:percentile(50), p90 = latency:percentile(90),
      p99 = latency:percentile(99), p999 = latency:percentile(99.9),
    },
    quantiles_us = table.concat(quantiles, ","),
  }
  io.write("BENCH_JSON " .. encode(result) .. "\n")
end
