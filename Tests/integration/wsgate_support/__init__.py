"""Shared helpers for the wsgate integration tests, one concern per module.

Everything here talks to a real ``wsgate`` process over loopback TCP. The tests import from the
package (``from wsgate_support import X``); the modules are:

* ``constants``: repository root, loopback host, time bounds, WebSocket GUID, the echo script,
  the EVAL and COUNTER scripts
* ``waiting``: ``wait_until``, the generic poll
* ``process``: the binary, its config and endpoints, starting and stopping a server
* ``http``: HTTP GETs and hand-made upgrade requests on a plain socket
* ``client``: asyncio helpers around the ``websockets`` client
* ``frames``: WebSocket frames by hand and ``RawClient``, a blocking raw-socket client
* ``bystander``: an innocent client checked during an attack, and result lines
* ``resources``: RSS, open descriptors, the RSS watchdog, the open-files limit
* ``pki``: throw-away certificates made with ``openssl`` and TLS contexts
* ``upstream``: ``websockets`` servers for outbound connections, and a silent listener
* ``redis``: a throw-away ``redis-server`` and its faults, for the cluster tests
"""

from .bystander import Bystander, report
from .client import (as_object, close_code, connect, connect_on_every_loop, drain, evaluate, evaluate_each, recv, recv_json,
                     recv_until, run, socket_loop)
from .constants import COUNTER_SCRIPT, ECHO_SCRIPT, EVAL_SCRIPT, HOST, READY_TIMEOUT, REPO_ROOT, STEP_TIMEOUT, TEST_TIMEOUT, WS_GUID
from .frames import (OP_BINARY, OP_CLOSE, OP_CONT, OP_PING, OP_PONG, OP_TEXT, RawClient, ask, close_code_of,
                     parse_server_frame, ws_close_frame, ws_frame)
from .http import (RawResponse, accept_for, build_request, http_get, https_get, new_key, raw_exchange, read_head,
                   upgrade_status)
from .pki import TestPKI, peer_serial, tls_server_context
from .process import (LIVE_SERVERS, Server, command, free_port, require_binary, run_until_exit, start_server,
                      wait_exit, write_config, write_endpoints, wsgate_bin)
from .redis import FreezingProxy, RedisServer
from .resources import RssWatchdog, open_fds, raise_nofile, rss_kib
from .upstream import SilentListener, Upstream, UpstreamPeer
from .waiting import wait_until

__all__ = [
    "Bystander", "report",
    "as_object", "close_code", "connect", "connect_on_every_loop", "drain", "evaluate", "evaluate_each", "recv", "recv_json",
    "recv_until", "run", "socket_loop",
    "COUNTER_SCRIPT", "ECHO_SCRIPT", "EVAL_SCRIPT", "HOST", "READY_TIMEOUT", "REPO_ROOT", "STEP_TIMEOUT", "TEST_TIMEOUT", "WS_GUID",
    "OP_BINARY", "OP_CLOSE", "OP_CONT", "OP_PING", "OP_PONG", "OP_TEXT", "RawClient", "ask", "close_code_of",
    "parse_server_frame", "ws_close_frame", "ws_frame",
    "RawResponse", "accept_for", "build_request", "http_get", "https_get", "new_key", "raw_exchange", "read_head",
    "upgrade_status",
    "TestPKI", "peer_serial", "tls_server_context",
    "LIVE_SERVERS", "Server", "command", "free_port", "require_binary", "run_until_exit", "start_server",
    "wait_exit", "write_config", "write_endpoints", "wsgate_bin",
    "FreezingProxy", "RedisServer",
    "RssWatchdog", "open_fds", "raise_nofile", "rss_kib",
    "SilentListener", "Upstream", "UpstreamPeer",
    "wait_until",
]
