-- The "pre-call" pattern (as Slack's RTM API asks): a REST call returns the WebSocket URL to open.
-- A client sends {"api": "https://api.example/rtm.connect", "token": "..."}; the script asks the
-- API (its run waits, the loop does not), then opens the outbound connection "feed" to the URL
-- in the answer's "url" field, relayed by _relay.lua to the /feed subscribers.
if websocketInfo.type ~= "data" then return end
local ask = from_json(websocketInfo.message)
if type(ask) ~= "table" or type(ask.api) ~= "string" then
  websocketInfo.send{event = "error", error = 'send {"api": URL, "token": TOKEN}'}
  return
end

local headers = {}
if ask.token then headers.Authorization = "Bearer " .. ask.token end
local answer = Http.request{url = ask.api, method = "POST", headers = headers, timeout_ms = 5000}
if answer.type then
  websocketInfo.send{event = "error", status = answer.status, error = answer.error}
  return
end
local body = from_json(answer.body)
if answer.status ~= 200 or type(body) ~= "table" or type(body.url) ~= "string" then
  websocketInfo.send{event = "error", status = answer.status, error = "the API gave no url"}
  return
end

local failure = Websocket.connect{name = "feed", url = body.url, script = "_relay.lua", content_type = "text"}
websocketInfo.send{event = failure and "error" or "connecting", url = body.url, error = failure and failure.error}
