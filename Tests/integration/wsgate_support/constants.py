"""Values the whole suite shares: where the repository is, the loopback host, the time bounds,
the WebSocket GUID, the echo endpoint most tests run, and the scripts of the tests that evaluate
Lua through a socket."""

from __future__ import annotations

from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[3]
HOST = "127.0.0.1"
STEP_TIMEOUT = 5.0  # every single network wait in the suite is bounded by this
TEST_TIMEOUT = 30.0  # upper bound for one whole asyncio.run(...) of a test
READY_TIMEOUT = 10.0
WS_GUID = "258EAFA5-E914-47DA-95CA-C5AB0DC85B11"

# The shipped echo endpoint (text as text, binary as binary), run by most tests under their own routes.
ECHO_SCRIPT = (REPO_ROOT / "Endpoints" / "echo.lua").read_text(encoding="utf-8")

# Answers its socket id on open, then evaluates each data message as a Lua expression, with `me`
# bound to its socket id, and answers the results as JSON {n = count, r = results} (nil as
# "<nil>"); `evaluate` in client.py reads the answer.
EVAL_SCRIPT = """
local w = websocketInfo
if w.type == "open" then w.send(w.socket_id) return end
if w.type ~= "data" then return end
local chunk = load("local me = ... return " .. w.message)
local results = table.pack(chunk(w.socket_id))
local out = {}
for i = 1, results.n do out[i] = results[i] == nil and "<nil>" or results[i] end
w.send(to_json{n = results.n, r = out})
"""

# Increments the Keystore's "hits" as many times as a data message says, then answers "done".
COUNTER_SCRIPT = """
if websocketInfo.type == "data" then
  for i = 1, tonumber(websocketInfo.message) do Keystore.incr{key = "hits"} end
  websocketInfo.send("done")
end
"""
