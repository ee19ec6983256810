-- Drives kosoku's fuzzing server (Autobahn's client cases) through one outbound connection: the
-- gateway is the WebSocket client under test. run-client.sh copies this file into a temporary
-- endpoints folder and opens the connection with config `outbound`, starting at
--   ws://HOST:PORT/runCase?case=1&agent=wsgate&count=N
-- kosoku ignores `count` (the number of selected cases, from /getCaseCount); it is here because
-- globals do not outlive an event, so the whole driver state is in the URL.
--
--   data          echo the message back, text as text and binary as binary
--   close         of runCase case=K: reset to case K+1, or to /updateReports after case N
--                 of /updateReports: kosoku has written its reports and stopped; disconnect
--   error         of /updateReports: same as its close (kosoku may be gone already); of a
--                 runCase URL: nothing, the gateway dials the same URL again after a backoff
local ev = wsEvent

if ev.type == "data" then
  -- message is the text, or base64 for a binary message; type keeps the frame type.
  local err = Websocket.send{message = ev.message, type = ev.message_type}
  if err then print("autobahn: echo failed: " .. tostring(err.status) .. " " .. tostring(err.error)) end
  return
end

local base, query = ev.url:match("^(wss?://[^/]+)/[^?]*%??(.*)$")
local function param(name)
  return query and ("&" .. query):match("&" .. name .. "=([^&]*)")
end

if ev.url:find("/updateReports", 1, true) then
  if ev.type == "close" or ev.type == "error" then Websocket.disconnect{} end
  return
end

if ev.type == "close" then
  local case, count = tonumber(param("case")), tonumber(param("count"))
  local agent = param("agent") or "wsgate"
  if not case or not count then
    print("autobahn: cannot read case and count from " .. ev.url)
    Websocket.disconnect{}
  elseif case < count then
    Websocket.reset{url = string.format("%s/runCase?case=%d&agent=%s&count=%d", base, case + 1, agent, count)}
  else
    Websocket.reset{url = string.format("%s/updateReports?agent=%s", base, agent)}
  end
elseif ev.type == "error" then
  print("autobahn: " .. ev.url .. ": " .. tostring(ev.error))
end
