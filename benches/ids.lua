-- wrk script for the fault and soak runs: POSTs $BODY with $TOKEN, and writes one line per
-- response, "<status> <id>", to $IDS_FILE.<thread>, so the ids Plinth answered with can be
-- compared with the rows in Postgres afterwards. $DELAY_MS, when set, paces each connection.
wrk.method = "POST"
wrk.body = os.getenv("BODY")
wrk.headers["Content-Type"] = "application/json"
wrk.headers["Authorization"] = "Bearer " .. os.getenv("TOKEN")
local pause = tonumber(os.getenv("DELAY_MS") or "0")
local next_thread = 0
local out

function setup(thread)
  thread:set("n", next_thread)
  next_thread = next_thread + 1
end

function init(args)
  out = io.open(os.getenv("IDS_FILE") .. "." .. n, "w")
  out:setvbuf("line")
end

function delay()
  return pause
end

function response(status, headers, body)
  out:write(status, " ", body:match('"id":(%d+)') or "-", "\n")
end
