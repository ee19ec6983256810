"""The two ways README starts several nodes, run as shipped: `scripts/cluster` (a Redis and two
nodes on this machine), and deploy/cluster's files without Docker (no engine runs here): its node
config (`cluster.json`, a Redis password from a file, `required`) and its nginx balancer config in
front of two real nodes, the compose file's service names pointed at them. A chat room of the
shipped Endpoints/ spans the nodes either way."""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess

import pytest

from wsgate_support import HOST, REPO_ROOT, connect, free_port, http_get, recv_until, run, wait_until

DEPLOY = REPO_ROOT / "deploy" / "cluster"


def node_of(socket_id: str) -> str:
    """Socket ids name their node: "{node}-{loop}-{n}"."""
    return socket_id.rsplit("-", 2)[0]


async def chat_across(first_url: str, second_url: str):
    """Joins a room through each URL; a message sent on the first reaches the second. Returns both
    socket ids (from their own join events) and what the second received."""
    is_event = lambda kind: (lambda m: json.loads(m)["event"] == kind)  # noqa: E731
    async with connect(first_url) as first:
        # A socket's own join arrives once its subscription is in place; the second joins after it.
        first_id = json.loads((await recv_until(first, is_event("join")))[0])["socket_id"]
        async with connect(second_url) as second:
            # The first's join, relayed through Redis, may reach the second's node after it joined.
            is_second_join = lambda m: is_event("join")(m) and json.loads(m)["socket_id"] != first_id  # noqa: E731
            second_id = json.loads((await recv_until(second, is_second_join))[0])["socket_id"]
            await first.send("hello from the first")
            got, _ = await recv_until(second, is_event("message"))
            return first_id, second_id, json.loads(got)


def healthy(port: int) -> bool:
    try:
        return http_get(port, "/api/v1/solution/health", timeout=1)[0] == 200
    except OSError:
        return False


def refuses(port: int) -> bool:
    with socket.socket() as s:
        return s.connect_ex((HOST, port)) != 0


def test_scripts_cluster_starts_redis_and_two_nodes_that_act_as_one():
    if shutil.which("redis-server") is None:
        pytest.skip("redis-server is not installed (scripts/test installs it)")
    redis_port, ports = free_port(), [free_port(), free_port()]
    env = {**os.environ, "REDIS_PORT": str(redis_port), "NODE_PORTS": " ".join(map(str, ports))}
    # Its own session, so that the test's Ctrl-C reaches the script and everything it started.
    proc = subprocess.Popen(["bash", str(REPO_ROOT / "scripts" / "cluster")], cwd=REPO_ROOT, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        wait_until(lambda: all(healthy(p) for p in ports), timeout=120, what="both nodes healthy")
        first_id, second_id, got = run(chat_across(f"ws://{HOST}:{ports[0]}/chat/lobby", f"ws://{HOST}:{ports[1]}/chat/lobby"))
    finally:
        os.killpg(proc.pid, signal.SIGINT)
        output = proc.communicate(timeout=30)[0].decode(errors="replace")
    assert node_of(first_id) != node_of(second_id), (first_id, second_id)
    assert got["message"] == "hello from the first" and got["from"] == first_id
    assert "[node1]" in output and "[node2]" in output
    assert all(refuses(p) for p in [redis_port] + ports), output


def test_the_deploy_files_run_two_nodes_behind_the_balancer(wsgate, redis, tmp_path):
    nginx = shutil.which("nginx") or ("/usr/sbin/nginx" if os.path.exists("/usr/sbin/nginx") else None)
    if nginx is None:
        pytest.skip("nginx is not installed (scripts/test installs it)")
    secret = "deploy-test-redis-pass"
    store = redis(password=secret)
    password_file = tmp_path / "redis.pass"
    password_file.write_text(secret + "\n")
    # cluster.json as the compose file mounts it, with the compose's Redis and secret moved here.
    config = json.loads((DEPLOY / "cluster.json").read_text())
    config["cluster"].update(redis=store.url, passwordFile=str(password_file))
    nodes = [wsgate(config=config, endpoints=REPO_ROOT / "Endpoints") for _ in range(2)]

    balancer_port = free_port()
    conf = (DEPLOY / "nginx.conf").read_text()
    for name, node in (("node1", nodes[0]), ("node2", nodes[1])):
        assert f"server {name}:8080;" in conf
        conf = conf.replace(f"server {name}:8080;", f"server {HOST}:{node.port};")
    assert "listen 8080;" in conf
    conf = conf.replace("listen 8080;", f"listen {HOST}:{balancer_port};")
    (tmp_path / "nginx.conf").write_text(conf)
    balancer = subprocess.Popen([nginx, "-p", str(tmp_path), "-c", str(tmp_path / "nginx.conf"), "-g",
                                 f"daemon off; pid {tmp_path}/nginx.pid; error_log {tmp_path}/error.log;"],
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        wait_until(lambda: healthy(balancer_port), what="the balancer forwarding to the nodes")
        url = f"ws://{HOST}:{balancer_port}/chat/deploy"
        first_id, second_id, got = run(chat_across(url, url))
    finally:
        balancer.terminate()
        balancer.wait(timeout=10)
    # Round robin put the two clients on different nodes; the room spans them.
    assert node_of(first_id) != node_of(second_id), (first_id, second_id)
    assert got["message"] == "hello from the first" and got["from"] == first_id
    for node in nodes:
        assert secret not in node.log()
