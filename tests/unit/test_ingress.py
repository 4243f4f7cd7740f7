"""What the launcher sets up around Serve: the ingress environment and broker reachability."""

from __future__ import annotations

import socket

from cli.launcher import ingress_env
from distillery.bus import reachable
from distillery.settings import KafkaSettings, ServeSettings


def test_haproxy_ingress_gets_free_ports_of_its_own() -> None:
    env = ingress_env(ServeSettings())
    assert env["RAY_SERVE_ENABLE_HA_PROXY"] == "1"
    assert env["RAY_SERVE_THROUGHPUT_OPTIMIZED"] == "1"
    assert env["RAY_SERVE_HAPROXY_STATS_PORT"] != env["RAY_SERVE_HAPROXY_METRICS_PORT"]
    assert env["RAY_SERVE_HAPROXY_STATS_PORT"] != "8404"
    assert env["RAY_SERVE_DIRECT_INGRESS_MIN_DRAINING_PERIOD_S"] == "3"


def test_python_proxy_when_haproxy_is_off() -> None:
    env = ingress_env(ServeSettings(haproxy_ingress=False))
    assert env == {"RAY_SERVE_ENABLE_HA_PROXY": "0", "RAY_SERVE_THROUGHPUT_OPTIMIZED": "0"}


def test_reachable_sees_a_listening_port_and_not_a_closed_one() -> None:
    with socket.socket() as server:
        server.bind(("127.0.0.1", 0))
        server.listen()
        port = server.getsockname()[1]
        assert reachable(KafkaSettings(bootstrap_servers=f"127.0.0.1:{port}"))
    assert not reachable(KafkaSettings(bootstrap_servers=f"127.0.0.1:{port}"), timeout_s=0.5)
    both = f"127.0.0.1:{port},bad-address"
    assert not reachable(KafkaSettings(bootstrap_servers=both), timeout_s=0.5)
