-- wrk's report as one JSON line on stdout (bench/scenarios.py's http test):
-- the same keys as bench/loadgen.c's results where they mean the same thing.
done = function(summary, latency, requests)
  local e = summary.errors
  local seconds = summary.duration / 1e6
  io.write(string.format(
    '{"mode": "http", "requests": %d, "duration_s": %.6f, "requests_per_s": %.1f, '
      .. '"latency_median_us": %d, "latency_p99_us": %d, "failures": %d, '
      .. '"failures_by_kind": {"connect": %d, "read": %d, "write": %d, "status": %d, '
      .. '"timeout": %d}}\n',
    summary.requests, seconds, summary.requests / seconds,
    latency:percentile(50), latency:percentile(99),
    e.connect + e.read + e.write + e.status + e.timeout,
    e.connect, e.read, e.write, e.status, e.timeout))
end
