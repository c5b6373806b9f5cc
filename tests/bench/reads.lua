-- wrk script of the credential-read benchmark: GET /v1/accounts/{random id}?include_credentials=1 with
-- the workspace key. Ids come from BENCH_IDS_FILE (one a line), the key from BENCH_API_KEY. done() prints
-- one line "BENCH_JSON {...}" that the benchmark parses (latencies in microseconds).

local ids = {}
local key = os.getenv("BENCH_API_KEY")
local ids_file = os.getenv("BENCH_IDS_FILE")
local query = os.getenv("BENCH_QUERY") or "?include_credentials=1"

function init(args)
  for line in io.lines(ids_file) do
    ids[#ids + 1] = line
  end
  local seed = tonumber(tostring({}):match("0x(%x+)"), 16) or os.time()
  math.randomseed(os.time() + seed)
end

function request()
  local id = ids[math.random(#ids)]
  return wrk.format("GET", "/v1/accounts/" .. id .. query, { ["Authorization"] = "Bearer " .. key })
end

function done(summary, latency, requests)
  io.write(string.format(
    'BENCH_JSON {"requests":%d,"duration_us":%d,"bytes":%d,"non2xx":%d,"connect_errors":%d,' ..
    '"read_errors":%d,"write_errors":%d,"timeouts":%d,"p50_us":%d,"p90_us":%d,"p99_us":%d,' ..
    '"max_us":%d,"mean_us":%.1f}\n',
    summary.requests, summary.duration, summary.bytes, summary.errors.status, summary.errors.connect,
    summary.errors.read, summary.errors.write, summary.errors.timeout,
    latency:percentile(50), latency:percentile(90), latency:percentile(99), latency.max, latency.mean))
end
