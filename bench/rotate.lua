-- wrk script for bench_http.py: every request takes the next pre-generated line "PATH<TAB>COOKIE".
--
--   wrk ... -s bench/rotate.lua URL -- LINES_FILE THREADS EXPECT SAMPLE_EVERY SAMPLE_PREFIX [close]
--
-- "close" as the sixth argument sends every request with "Connection: close" (a new connection each,
-- as nginx talks to its upstream without keep-alive).
--
-- Thread k uses lines k, k+THREADS, k+2*THREADS, ... so no two requests share a line (a signed
-- AuthnRequest is accepted once). Running out of lines wraps around and is counted ("wrapped"): the
-- replays then fail and show as bad responses. Every response is checked: status 200 and the body
-- holds EXPECT. Every SAMPLE_EVERY-th good body is appended to SAMPLE_PREFIX<k>.txt, one per line,
-- for bench_http.py to judge with python3-saml.

local counter = 0
local threads = {}

function setup(thread)
  thread:set("id", counter)
  counter = counter + 1
  table.insert(threads, thread)
end

local lines = {}
local idx = 0
local n = 0
local expect = ""
local sample_every = 0
local sample_file = nil
bad = 0
wrapped = 0
seen = 0
first_bad = ""

function init(args)
  local path, nthreads = args[1], tonumber(args[2])
  expect = args[3] or ""
  sample_every = tonumber(args[4] or "0") or 0
  if sample_every > 0 then
    sample_file = io.open(args[5] .. id .. ".txt", "w")
  end
  local i = 0
  for line in io.lines(path) do
    if i % nthreads == id then
      local tab = line:find("\t", 1, true)
      local p, c = line, nil
      if tab then
        p, c = line:sub(1, tab - 1), line:sub(tab + 1)
      end
      local headers = {}
      if c and #c > 0 then
        headers["Cookie"] = c
      end
      if args[6] == "close" then
        headers["Connection"] = "close"
      end
      n = n + 1
      lines[n] = wrk.format("GET", p, headers)
    end
    i = i + 1
  end
end

function request()
  idx = idx + 1
  if idx > n then
    idx = 1
    wrapped = wrapped + 1
  end
  return lines[idx]
end

function response(status, headers, body)
  seen = seen + 1
  if status ~= 200 or (#expect > 0 and not body:find(expect, 1, true)) then
    bad = bad + 1
    if #first_bad == 0 then
      first_bad = tostring(status) .. " " .. body:sub(1, 200):gsub("[\r\n\t\"\\]", " ")
    end
  elseif sample_file and seen % sample_every == 0 then
    sample_file:write((body:gsub("\n", " ")), "\n")
    sample_file:flush()
  end
end

function done(summary, latency, requests)
  local b, w, s, fb = 0, 0, 0, ""
  for _, t in ipairs(threads) do
    b = b + t:get("bad")
    w = w + t:get("wrapped")
    s = s + t:get("seen")
    if #fb == 0 then fb = t:get("first_bad") end
  end
  local e = summary.errors
  io.write(string.format(
    '{"requests": %d, "duration_us": %d, "bad": %d, "wrapped": %d, "seen": %d, ' ..
    '"socket_errors": %d, "p50_us": %d, "p99_us": %d, "mean_us": %.1f, "max_us": %d, "first_bad": "%s"}\n',
    summary.requests, summary.duration, b, w, s, e.connect + e.read + e.write + e.timeout,
    latency:percentile(50), latency:percentile(99), latency.mean, latency.max, fb))
end
