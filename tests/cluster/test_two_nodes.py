"""The loop on a real two-node Ray cluster on this machine (the README's scale-out, tested).

``ray start --head`` with no CPUs of its own (as a KubeRay head is often run), then a second
``ray start --address`` that brings every CPU: whatever needs a CPU, the round's Ray Train workers
and the Serve replicas alike, must run on the second node. ``distillery up`` joins the cluster
through ``RAY_ADDRESS``; the bootstrap round reads its rows through Ray Data
(``get_dataset_shard``), registers v1, and the replicas on the second node load it from the model
store and answer through the head's proxy.

Its own package (``tests/cluster``), so that no other test's local Ray is alive in this process.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from cli.launcher import Running, up
from distillery.settings import (
    GateSettings,
    PathSettings,
    RolloutSettings,
    SchedulerSettings,
    ServeSettings,
    Settings,
)
from services.broker import free_port
from services.deploy import app_details
from training.registry import Registry

pytestmark = [pytest.mark.integration, pytest.mark.cluster]
RAY = str(Path(sys.executable).parent / "ray")
AUTH = {"RAY_AUTH_MODE": "disabled"}  # else the head asks a token the joining node lacks


def _ray_start(args: list[str], env: dict[str, str]) -> None:
    out = subprocess.run(
        [RAY, "start", *args], capture_output=True, text=True, env=env, timeout=180
    )
    assert out.returncode == 0, out.stdout[-2000:] + out.stderr[-2000:]


def _session_processes(session: str) -> list[int]:
    """This cluster's processes: each carries its session's name on its command line (so no
    other Ray on the machine is touched, unlike ``ray stop``)."""
    found = []
    for entry in Path("/proc").iterdir():
        try:
            if entry.name.isdigit() and session.encode() in (entry / "cmdline").read_bytes():
                found.append(int(entry.name))
        except OSError:
            continue
    return found


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    import ray

    head_dir = tmp_path_factory.mktemp("ray-head")
    port, dashboard_port = free_port(), free_port()
    env = {**os.environ, **AUTH}
    env.pop("RAY_ADDRESS", None)
    _ray_start(
        ["--head", f"--port={port}", "--num-cpus=0", f"--temp-dir={head_dir}",
         "--include-dashboard=true", f"--dashboard-port={dashboard_port}",
         "--disable-usage-stats"],
        env,
    )  # fmt: skip
    ip = ray.util.get_node_ip_address()
    address = f"{ip}:{port}"
    second_dir = tmp_path_factory.mktemp("ray-second")  # its own temp dir, as another machine
    _ray_start(
        [f"--address={address}", "--num-cpus=4", '--resources={"second": 1}',
         f"--temp-dir={second_dir}"],
        env,
    )  # fmt: skip
    session = Path(os.readlink(head_dir / "session_latest")).name
    saved = {k: os.environ.get(k) for k in ("RAY_ADDRESS", *AUTH)}
    os.environ.update({"RAY_ADDRESS": address, **AUTH})
    try:
        yield {
            "address": address,
            "session": session,
            "dashboard": f"http://127.0.0.1:{dashboard_port}",
        }
    finally:
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value
        for pid in _session_processes(session):
            with contextlib.suppress(OSError):
                os.kill(pid, signal.SIGKILL)


@pytest.fixture(scope="module")
def running(
    cluster: dict[str, Any], tmp_path_factory: pytest.TempPathFactory, vader_ready: Path
) -> Iterator[Running]:
    state = tmp_path_factory.mktemp("two-nodes-state")
    os.environ["RAY_DASHBOARD_ADDRESS"] = cluster["dashboard"]
    settings = Settings(
        paths=PathSettings(state_dir=state),
        serve=ServeSettings(port=free_port(), metrics_export_port=free_port()),
        scheduler=SchedulerSettings(seed_size=300, enabled=False),
        gate=GateSettings(min_holdout=10, first_version_min_agreement=0.5),  # mechanics here
        rollout=RolloutSettings(enabled=False),
    )
    loop = up(settings, say=print)
    try:
        yield loop
    finally:
        loop.stop()
        os.environ.pop("RAY_DASHBOARD_ADDRESS", None)


def _second_node() -> str:
    import ray

    alive = [n for n in ray.nodes() if n["Alive"]]
    assert len(alive) == 2, alive
    (second,) = [n for n in alive if n["Resources"].get("second")]
    node_id: str = second["NodeID"]
    return node_id


def test_a_round_on_the_second_node_registers_a_version_served_there(running: Running) -> None:
    from ray.util.state import list_actors

    second = _second_node()
    workers = list_actors(filters=[("class_name", "=", "RayTrainWorker")], detail=True)
    assert workers, "no Ray Train worker was recorded"
    assert {w.node_id for w in workers} == {second}, workers  # the head has no CPU to give
    registry = Registry(running.settings.paths.model_store_url())
    assert registry.current() == 1
    assert registry.get(1).lineage.rows > 0  # distilled from the stored seed labels
    details = app_details(running.dashboard_url)
    replicas = details["deployments"]["StudentIngress"]["replicas"]
    assert replicas and {r["node_id"] for r in replicas} == {second}, json.dumps(replicas)[:2000]
    answer = httpx.post(
        f"{running.api_url}/v1/predict", json={"text": ["a wonderful, moving film"]}, timeout=60
    )
    assert answer.status_code == 200, answer.text
    assert answer.json()["predictions"][0]["model_version"] == 1
