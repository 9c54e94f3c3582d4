-- wrk script: POST /newMessage with a 100-byte message and the write concern in $WC.
--   WC=3 wrk -t1 -c64 -d10s -s scripts/wrk-newmessage.lua http://127.0.0.1:8080/newMessage
-- Prints the count of error answers (status >= 400) so a run with errors is not
-- mistaken for throughput.
local wc = os.getenv("WC") or "1"
wrk.method = "POST"
wrk.headers["Content-Type"] = "application/json"
wrk.body = '{"message":"' .. string.rep("x", 100) .. '","writeConcern":' .. wc .. '}'

function done(summary, latency, requests)
  io.write(string.format("error answers: %d\n", summary.errors.status))
  io.write(string.format("p50 %.2f ms, p99 %.2f ms\n",
    latency:percentile(50) / 1000, latency:percentile(99) / 1000))
end
