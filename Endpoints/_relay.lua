-- The script of an outbound connection (no route: the name starts with "_"). Every message from
-- the upstream server is relayed to the sockets on /feed; the connection's state changes are
-- announced to them as JSON events. Open it from config:
--   "outbound": [{"name": "feed", "url": "wss://upstream.example/stream", "script": "_relay.lua", "content_type": "text"}]
local function broadcast(text)
  for _, id in ipairs(Websocket.list()) do
    if Websocket.info{socket_id = id}.route == "/feed" then
      Websocket.send{socket_id = id, message = text}
    end
  end
end

if wsEvent.type == "data" then
  if wsEvent.message_type == "data-text" then broadcast(wsEvent.message) end
else
  broadcast(to_json{event = wsEvent.type, upstream = wsEvent.name, code = wsEvent.code, error = wsEvent.error})
end
