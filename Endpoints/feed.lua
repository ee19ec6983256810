-- Subscribers of the upstream feed that _relay.lua relays. A message from a subscriber goes up
-- to the upstream server; while the upstream is reconnecting the subscriber is told so (503).
if websocketInfo.type ~= "data" then return end
local failure = Websocket.send{name = "feed", message = websocketInfo.message}
if failure then
  websocketInfo.send{event = "error", status = failure.status, error = failure.error}
end
