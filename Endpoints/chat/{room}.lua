-- A chat room: every socket of /chat/{room} subscribes to the room's topic; a message is published
-- to it once, and the gateway queues it to every subscriber, whichever loop owns it.
local room = websocketInfo.parameters.room
local topic = "chat:" .. room

if websocketInfo.type == "open" then
  Websocket.subscribe{socket_id = websocketInfo.socket_id, topic = topic}
  Websocket.publish{topic = topic, message = to_json{event = "join", room = room, socket_id = websocketInfo.socket_id}}
elseif websocketInfo.type == "data" then
  Websocket.publish{topic = topic, message = to_json{event = "message", room = room, from = websocketInfo.socket_id,
                                                      message = websocketInfo.message}}
elseif websocketInfo.type == "close" then
  -- The socket has left the topic already.
  Websocket.publish{topic = topic, message = to_json{event = "leave", room = room, socket_id = websocketInfo.socket_id}}
end
