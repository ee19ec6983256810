-- Echoes every message back: text as text, binary as binary.
if websocketInfo.type == "data" then
  if websocketInfo.message_type == "data-binary" then
    Websocket.send{socket_id = websocketInfo.socket_id, message = websocketInfo.message, type = "data-binary"}
  else
    websocketInfo.send(websocketInfo.message)
  end
end
