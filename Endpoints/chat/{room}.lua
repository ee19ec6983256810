-- A chat room: every message is broadcast to all sockets connected to the same room.
local room = websocketInfo.parameters.room

local function broadcast(text)
  for _, id in ipairs(Websocket.list()) do
    local peer = Websocket.info{socket_id = id}
    if peer.route == websocketInfo.route and peer.parameters and peer.parameters.room == room then
      Websocket.send{socket_id = id, message = text}
    end
  end
end

if websocketInfo.type == "open" then
  broadcast(to_json{event = "join", room = room, socket_id = websocketInfo.socket_id})
elseif websocketInfo.type == "data" then
  broadcast(to_json{event = "message", room = room, from = websocketInfo.socket_id, message = websocketInfo.message})
elseif websocketInfo.type == "close" then
  broadcast(to_json{event = "leave", room = room, socket_id = websocketInfo.socket_id})
end
