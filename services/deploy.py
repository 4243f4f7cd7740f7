"""Deploy the Serve app from a config, the way ``serve deploy`` does.

Deploying the same config with only ``user_config`` changed makes Serve call ``reconfigure`` on
the running replicas in place (``serve.run`` would replace every replica): that is the hot swap.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

from distillery.contracts import StudentConfig
from distillery.settings import Settings

APP_NAME = "distillery"
DEPLOYMENT = "StudentIngress"


def serve_config(settings: Settings, student: StudentConfig) -> dict[str, Any]:
    """A Serve multi-application config whose only moving part is the student's user_config
    (``distillery.contracts.StudentConfig``: the stable version, a rollout candidate if any, and
    where a replica on any node loads them from)."""
    public = settings.model_dump(
        mode="json", exclude={"serve": {"feedback_secret", "operator_token"}}
    )
    serve_cfg = settings.serve
    return {
        "applications": [
            {
                "name": APP_NAME,
                "route_prefix": "/",
                "import_path": "services.app:app_builder",
                "args": {"settings": public},
                "deployments": [
                    {
                        "name": DEPLOYMENT,
                        **_replicas(settings),
                        "max_ongoing_requests": serve_cfg.max_ongoing_requests,
                        "ray_actor_options": {"num_cpus": serve_cfg.replica_cpus},
                        "logging_config": {"enable_access_log": serve_cfg.access_log},
                        "user_config": student.as_user_config(),
                    }
                ],
            }
        ]
    }


def _replicas(settings: Settings) -> dict[str, Any]:
    """A fixed ``num_replicas``, or Serve's autoscaling bounds when ``max_replicas`` is set
    (the same in every config, so a hot swap keeps the autoscaler's current count)."""
    cfg = settings.serve
    if cfg.max_replicas is None:
        return {"num_replicas": cfg.num_replicas}
    return {
        "autoscaling_config": {
            "min_replicas": cfg.num_replicas,
            "max_replicas": cfg.max_replicas,
            "target_ongoing_requests": cfg.target_ongoing_requests,
        }
    }


def deploy(dashboard_url: str, config: dict[str, Any]) -> None:
    from ray.dashboard.modules.serve.sdk import ServeSubmissionClient

    ServeSubmissionClient(dashboard_url).deploy_applications(config)


def app_details(dashboard_url: str) -> dict[str, Any]:
    """Serve's details of the distillery app ({} when it is not deployed)."""
    from ray.dashboard.modules.serve.sdk import ServeSubmissionClient

    details = ServeSubmissionClient(dashboard_url).get_serve_details()
    app: dict[str, Any] = details.get("applications", {}).get(APP_NAME) or {}
    return app


def _deployment(app: dict[str, Any]) -> dict[str, Any] | None:
    """The student deployment in the app's details; None while Serve does not list it (no app,
    or an app between two configs: the scheduler met a tick's ``KeyError`` there)."""
    deployment: dict[str, Any] | None = app.get("deployments", {}).get(DEPLOYMENT)
    return deployment


def _version_of(app: dict[str, Any]) -> int | None:
    deployment = _deployment(app)
    if deployment is None:
        return None
    user_config = deployment["deployment_config"].get("user_config")
    return None if not user_config else StudentConfig.model_validate(user_config).version


def deployed_version(dashboard_url: str) -> int | None:
    """The student version in the target config Serve is running or moving to."""
    return _version_of(app_details(dashboard_url))


def wait_running(dashboard_url: str, version: int, timeout_s: float = 120) -> None:
    """Block until every replica of the app runs ``version``; raise with Serve's message if not."""
    deadline = time.monotonic() + timeout_s
    status = "unknown"
    while time.monotonic() < deadline:
        app = app_details(dashboard_url)
        status = app.get("status", "missing")
        healthy = (_deployment(app) or {}).get("status") == "HEALTHY"
        if status == "RUNNING" and _version_of(app) == version and healthy:
            return
        if status == "DEPLOY_FAILED":
            raise RuntimeError(f"Serve could not deploy v{version}: {app.get('message')}")
        time.sleep(0.5)
    raise TimeoutError(f"v{version} not running after {timeout_s}s (app status {status})")


def running_replicas(dashboard_url: str) -> list[str] | None:
    """Ids of the app's replicas in state RUNNING; None while Serve does not list the
    deployment."""
    deployment = _deployment(app_details(dashboard_url))
    if deployment is None:
        return None
    return [r["replica_id"] for r in deployment["replicas"] if r["state"] == "RUNNING"]


def wait_serving(
    dashboard_url: str,
    version: int,
    replicas: Callable[[], dict[str, int]],
    timeout_s: float = 120,
) -> None:
    """Block until every running replica reports that it answers with ``version``."""
    deadline = time.monotonic() + timeout_s
    behind: list[str] = []
    while time.monotonic() < deadline:
        serving, running = replicas(), running_replicas(dashboard_url)
        if running is None:
            behind = ["(Serve lists no replicas)"]
        else:
            behind = [r for r in running if serving.get(r) != version]
        if not behind:
            return
        time.sleep(0.2)
    raise TimeoutError(
        f"replicas {behind} do not answer with v{version} after {timeout_s}s "
        "(a load that failed keeps the old version: see distillery_swap_failed_total)"
    )
