"""Values the whole suite shares: where the repository is, the loopback host, the time bounds,
the WebSocket GUID and the echo endpoint most tests run."""

from __future__ import annotations

from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[3]
HOST = "127.0.0.1"
STEP_TIMEOUT = 5.0  # every single network wait in the suite is bounded by this
TEST_TIMEOUT = 30.0  # upper bound for one whole asyncio.run(...) of a test
READY_TIMEOUT = 10.0
WS_GUID = "258EAFA5-E914-47DA-95CA-C5AB0DC85B11"

# The shipped echo endpoint (text as text, binary as binary), run by most tests under their own routes.
ECHO_SCRIPT = (REPO_ROOT / "Endpoints" / "echo.lua").read_text(encoding="utf-8")
