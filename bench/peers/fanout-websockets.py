"""bench/fanout.sh's PyPI websockets peer: topic fan-out with the asyncio
server's broadcast(), for comparison with wsgate's Websocket.publish.

    python bench/peers/fanout-websockets.py PORT

One process, one thread, one asyncio loop (the harness pins it to one core).
On 127.0.0.1:PORT:
    /sub                         a WebSocket that joins the subscribers
    /pub                         a WebSocket whose every message goes to
                                 broadcast(subscribers, message): text as text
    GET /api/v1/solution/health  200 OK (the harness's readiness check)
Any other path: closed with 1008. Everything else is websockets' defaults
(keepalive pings every 20 s, which the client answers), except a listen
backlog of 1024 instead of 100, so that the client's 200 upgrades in flight
are not dropped and retried. SIGTERM or SIGINT ends it.
"""

import asyncio
import signal
import sys
from http import HTTPStatus

import websockets
from websockets.asyncio.server import broadcast, serve

subscribers = set()


async def handler(ws):
    path = ws.request.path
    if path == "/sub":
        subscribers.add(ws)
        try:
            await ws.wait_closed()
        finally:
            subscribers.discard(ws)
    elif path == "/pub":
        async for message in ws:
            broadcast(subscribers, message)
    else:
        await ws.close(1008, "unknown path")


def health(connection, request):
    if request.path == "/api/v1/solution/health":
        return connection.respond(HTTPStatus.OK, "OK\n")
    return None


async def main(port):
    loop = asyncio.get_running_loop()
    stop = loop.create_future()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set_result, None)
    async with serve(handler, "127.0.0.1", port, process_request=health, backlog=1024):
        print(f"fanout-websockets listening on 127.0.0.1:{port} (websockets {websockets.__version__}, "
              f"Python {sys.version.split()[0]})", flush=True)
        await stop


if __name__ == "__main__":
    if len(sys.argv) != 2 or not sys.argv[1].isdigit():
        print("usage: fanout-websockets.py PORT", file=sys.stderr)
        sys.exit(2)
    asyncio.run(main(int(sys.argv[1])))
