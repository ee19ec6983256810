-- JSON events: {"eventType":10,"message":...} is echoed back as the same JSON event;
-- anything else gets an error event.
if websocketInfo.type ~= "data" then return end

local event, err = from_json(websocketInfo.message)
if type(event) ~= "table" then
  websocketInfo.send{eventType = 0, error = "invalid JSON: " .. tostring(err)}
elseif event.eventType == 10 then
  websocketInfo.send{eventType = 10, message = event.message}
else
  websocketInfo.send{eventType = 0, error = "unknown eventType " .. tostring(event.eventType)}
end
