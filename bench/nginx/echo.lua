-- WebSocket echo for the nginx reference server of the wsgate benchmarks
-- (bench/run.sh, bench/run-tls.sh): nginx + ngx_http_lua +
-- lua-nginx-websocket (Debian packages nginx, libnginx-mod-http-lua,
-- lua-nginx-websocket). Loaded by `content_by_lua_file echo.lua;` in
-- bench/nginx/nginx.conf, relative to nginx's -p prefix; the harnesses copy
-- it next to the rendered config. Text is echoed as text, binary as binary,
-- fragmented messages are reassembled, pings are answered and the peer's
-- close code is echoed, as wsgate does with Endpoints/echo.lua.

local server = require "nginx.websocket.server"

local MAX_MSG = 1048576      -- per frame and per reassembled message
local IDLE_MS = 300000       -- socket timeout (read and write)

local wb, err = server:new{
    max_payload_len = MAX_MSG,
    timeout = IDLE_MS,
}
if not wb then
    ngx.log(ngx.WARN, "websocket handshake failed: ", err)
    return ngx.exit(ngx.HTTP_BAD_REQUEST)
end

local find = string.find
local concat = table.concat

-- The library marks the object fatal after any receive error;
-- clear that so one last close frame can still be attempted.
local function close_with(code, reason)
    wb.fatal = nil
    wb:send_close(code, reason)
end

local parts, parts_len, parts_type = nil, 0, nil

while true do
    local data, typ, extra = wb:recv_frame()

    if not data then
        local e = extra or "unknown"
        if find(e, ": timeout", 1, true) then
            -- Idle for IDLE_MS: probe the peer and keep waiting.
            local ok = wb:send_ping("")
            if not ok then break end
        elseif find(e, "failed to receive", 1, true) then
            -- Peer closed or reset the TCP connection.
            break
        elseif find(e, "exceeding max payload len", 1, true) then
            close_with(1009, "message too big")
            break
        else
            -- Framing violation (unmasked frame, reserved bits, ...).
            close_with(1002, "protocol error")
            break
        end

    elseif typ == "close" then
        -- extra is the peer's status code (nil if none was sent).
        if extra then
            wb:send_close(extra)
        else
            wb:send_close()
        end
        break

    elseif typ == "ping" then
        local ok = wb:send_pong(data)
        if not ok then break end

    elseif typ == "pong" then
        -- unsolicited or reply to our keepalive probe: ignore

    elseif typ == "text" or typ == "binary" then
        if parts then
            close_with(1002, "new message inside fragmented message")
            break
        end
        if extra == "again" then
            -- first fragment of a fragmented message
            parts, parts_len, parts_type = { data }, #data, typ
        else
            local ok
            if typ == "text" then
                ok = wb:send_text(data)
            else
                ok = wb:send_binary(data)
            end
            if not ok then break end
        end

    elseif typ == "continuation" then
        if not parts then
            close_with(1002, "unexpected continuation frame")
            break
        end
        parts_len = parts_len + #data
        if parts_len > MAX_MSG then
            close_with(1009, "message too big")
            break
        end
        parts[#parts + 1] = data
        if extra ~= "again" then
            local msg = concat(parts)
            local ok
            if parts_type == "text" then
                ok = wb:send_text(msg)
            else
                ok = wb:send_binary(msg)
            end
            parts, parts_len, parts_type = nil, 0, nil
            if not ok then break end
        end
    end
end

return ngx.exit(ngx.OK)
