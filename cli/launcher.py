"""``distillery up``: start the broker (unless KAFKA_BOOTSTRAP_SERVERS), Ray (unless RAY_ADDRESS),
the Serve app, the labeler, the example store and the scheduler, and Evidently's UI on the drift
checks' workspace (unless ``monitor.ui`` is off); stop all of it on the way out."""

from __future__ import annotations

import contextlib
import logging
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from distillery import bus
from distillery.actors import LABELER, NAMESPACE, SCHEDULER
from distillery.contracts import RoundReport
from distillery.settings import ServeSettings, Settings
from distillery.task import Task, load_task
from feedback import keys as key_store
from feedback.tokens import load_secret
from monitoring.evidently_workspace import workspace_dir
from services.access import Access
from services.broker import EmbeddedBroker, Supervisor, free_port
from services.evidently_ui import EvidentlyUI
from services.llm_server import LocalLLM

log = logging.getLogger(__name__)


@dataclass
class Running:
    """What ``up`` started, and how to reach it."""

    settings: Settings
    task: Task
    api_url: str
    dashboard_url: str
    metrics_url: str
    scheduler: Any
    labeler: Any
    store: Any
    startup_s: float
    broker: EmbeddedBroker | None = None
    llm: LocalLLM | None = None
    started_ray: bool = False
    loops: list[Any] = field(default_factory=list)
    supervisor: Supervisor | None = None
    ui: EvidentlyUI | None = None

    def stop(self) -> None:
        """Stop everything this launcher started, newest first; safe to call twice. Each step
        runs even if one before it failed (a Serve shutdown that raised had left the broker
        running), and the first failure is raised at the end."""
        import ray
        from ray import serve

        for actor in (self.scheduler, self.labeler, self.store):
            try:
                ray.get(actor.stop.remote(), timeout=10)
            except Exception:
                log.debug("actor already gone", exc_info=True)
        steps: list[Any] = []
        if ray.is_initialized():
            steps += [serve.shutdown, self._kill_actors, ray.shutdown]
        steps += [
            part.stop for part in (self.supervisor, self.broker, self.llm, self.ui)
            if part is not None
        ]  # fmt: skip
        failed: BaseException | None = None
        for step in steps:
            try:
                step()
            except Exception as exc:
                log.warning("stopping: %s failed: %s", getattr(step, "__qualname__", step), exc)
                failed = failed or exc
        if failed is not None:
            raise failed

    def _kill_actors(self) -> None:
        import ray

        for actor in (self.scheduler, self.labeler, self.store):
            try:
                ray.kill(actor)  # no_restart: Ray would otherwise start it again
            except Exception:
                log.debug("actor already gone", exc_info=True)


def start_evidently_ui(settings: Settings, say: Any = print) -> EvidentlyUI | None:
    """Launch ``evidently ui`` on the workspace (``monitor.ui``); it is waited for later, by
    ``evidently_ui_ready``, so its start overlaps Ray's."""
    if not settings.monitor.ui:
        return None
    workspace = workspace_dir(settings.paths.state_dir)
    log_path = _log_path(settings, "evidently-ui.log")
    try:
        return EvidentlyUI(workspace, settings.monitor.ui_port, log_path).start()
    except OSError as exc:
        say(f"Evidently UI did not start, going on without it: {exc}")
        return None


def evidently_ui_ready(ui: EvidentlyUI | None, settings: Settings, say: Any) -> EvidentlyUI | None:
    """Wait for the UI and say its URL; a UI that does not come up is said and stopped, and the
    loop runs on without it (the drift checks still fill the workspace)."""
    if ui is None:
        return None
    try:
        seconds = ui.wait_ready(settings.monitor.ui_start_timeout_s)
    except (RuntimeError, TimeoutError) as exc:
        ui.stop()
        say(f"Evidently UI did not start, going on without it: {exc}")
        return None
    say(f"Evidently UI {ui.url}  (workspace {ui.workspace}, {seconds:.0f}s to answer)")
    return ui


def start_local_llm(settings: Settings, say: Any = print) -> tuple[Settings, LocalLLM | None]:
    """With an LLM teacher and no ``DISTILLERY_TEACHER_URL``: the local llama.cpp server on the
    pinned GGUF, and settings that point the teacher at it. Otherwise nothing to start."""
    cfg = settings.teacher
    if cfg.kind == "embedding" or cfg.url is not None:
        return settings, None
    from models.gguf import local_gguf

    start = time.monotonic()
    llm = LocalLLM(
        local_gguf(settings.paths.data_dir), cfg.llm_threads, cfg.llm_ctx,
        log_path=_log_path(settings, "llm-server.log"),
    ).start(cfg.llm_start_timeout_s)  # fmt: skip
    say(f"local teacher LLM on {llm.url} ({time.monotonic() - start:.0f}s to answer)")
    teacher = cfg.model_copy(update={"url": llm.url})
    return settings.model_copy(update={"teacher": teacher}), llm


def for_task(settings: Settings, task: Task, say: Any = print) -> Settings:
    """A generate task's teacher writes replies, so it is the LLM: chosen here unless the
    settings name another kind, which is refused with the setting to change."""
    cfg = settings.teacher
    if task.kind != "generate" or cfg.kind == "llm":
        return settings
    if "kind" in cfg.model_fields_set:
        raise ValueError(
            f"task {task.name!r} is kind generate: DISTILLERY_TEACHER_KIND must be llm, "
            f"got {cfg.kind!r}"
        )
    say(f"task {task.name!r} generates replies: the teacher is the LLM")
    return settings.model_copy(update={"teacher": cfg.model_copy(update={"kind": "llm"})})


def check_teacher(settings: Settings, task: Task, say: Any = print) -> None:
    """Run an LLM teacher's start-up checks here, before Ray starts, so a bad task file or URL
    fails ``up`` at once with its own message (in the labeler actor it would surface late)."""
    if settings.teacher.kind == "embedding":
        return
    from models.factory import llm_responder, llm_teacher

    if task.kind == "generate":
        responder = llm_responder(settings.teacher, task)
        say(f"teacher {responder.teacher_id} at {responder.client.base}: checks passed")
        responder.close()
        return
    teacher = llm_teacher(settings.teacher, task)
    say(f"teacher {teacher.teacher_id} at {teacher.chat.base}: checks passed")
    teacher.close()


def ingress_env(serve_cfg: ServeSettings) -> dict[str, str]:
    """Environment for the Serve processes a local Ray starts (a joined cluster sets its own).

    HAProxy in front, routing straight to the replicas' HTTP servers (Ray's throughput mode);
    its stats and metrics ports are free ones, so two stacks can share a machine; its per-request
    log metrics are off (a Python actor parses a log line per request; the replicas export ours);
    a stopping replica drains for ``drain_period_s`` (Ray's default, 30 s, is sized for remote
    load balancers; here HAProxy is on the same node).
    """
    if not serve_cfg.haproxy_ingress:
        return {"RAY_SERVE_ENABLE_HA_PROXY": "0", "RAY_SERVE_THROUGHPUT_OPTIMIZED": "0"}
    return {
        "RAY_SERVE_ENABLE_HA_PROXY": "1",
        "RAY_SERVE_THROUGHPUT_OPTIMIZED": "1",
        "RAY_SERVE_HAPROXY_METRICS_ENABLED": "0",
        "RAY_SERVE_HAPROXY_STATS_PORT": str(free_port()),
        "RAY_SERVE_HAPROXY_METRICS_PORT": str(free_port()),
        "RAY_SERVE_DIRECT_INGRESS_MIN_DRAINING_PERIOD_S": f"{serve_cfg.drain_period_s:g}",
    }


def start_ray(settings: Settings, quiet: bool = False) -> tuple[str, bool]:
    """Join RAY_ADDRESS if set, else start a local Ray; returns (dashboard URL, started).
    ``quiet``: the workers' output stays in Ray's log folder (linked as ``state/logs/ray``)
    instead of reaching this terminal."""
    import ray

    address = os.environ.get("RAY_ADDRESS")
    if not address:
        os.environ.update(ingress_env(settings.serve))
    context = ray.init(
        address=address or None,
        namespace=NAMESPACE,
        _metrics_export_port=None if address else settings.serve.metrics_export_port,
        include_dashboard=True if not address else None,
        log_to_driver=not quiet,
        configure_logging=not quiet,  # quiet: Ray's own driver-side lines go to the log file
    )
    if quiet:
        _link_ray_logs(settings, getattr(context, "address_info", {}).get("session_dir"))
    dashboard = os.environ.get("RAY_DASHBOARD_ADDRESS") or f"http://{context.dashboard_url}"
    return dashboard, not address


ACTOR_CPUS = 0.1  # the example store and the scheduler each


def cpu_plan(settings: Settings) -> dict[str, float]:
    """Ray CPUs each part reserves: Serve and a round hold explicit shares, so a round runs
    beside serving instead of queueing behind it or starving it."""
    return {
        "serve": (settings.serve.max_replicas or settings.serve.num_replicas)
        * settings.serve.replica_cpus,
        "labeler": settings.teacher.labeler_cpus,
        "store+scheduler": 2 * ACTOR_CPUS,
        "round": settings.train.num_workers * settings.train.worker_cpus,
    }


def check_cpu_plan(settings: Settings, cluster_cpus: float) -> None:
    """Refuse to start a loop whose parts cannot all run at once, naming the shares."""
    plan = cpu_plan(settings)
    if sum(plan.values()) > cluster_cpus + 1e-9:
        shares = ", ".join(f"{k} {v:g}" for k, v in plan.items())
        raise ValueError(
            f"the loop needs {sum(plan.values()):g} CPUs at once ({shares}) but the cluster has "
            f"{cluster_cpus:g}: lower DISTILLERY_SERVE_REPLICA_CPUS, DISTILLERY_TRAIN_WORKER_CPUS "
            "or DISTILLERY_TRAIN_NUM_WORKERS"
        )


def _start_actors(settings: Settings, task: Task, dashboard_url: str) -> tuple[Any, Any, Any]:
    import ray

    from feedback.store import ExampleStore
    from monitoring.scheduler import Scheduler
    from services.labeler import Labeler

    # A crashed actor is restarted by Ray, and its calls in flight (its ``run`` loop among them)
    # are sent again to the new one: each keeps its state where a restart finds it (offsets in
    # Kafka, rows in the store, the rollout in the registry). bench/chaos.py measures it.
    again = {"max_restarts": -1, "max_task_retries": -1}
    store = (
        ray.remote(ExampleStore)
        .options(num_cpus=ACTOR_CPUS, max_concurrency=2, **again)
        .remote(settings)
    )
    env = {"env_vars": settings.teacher.labeler_env()}  # its kernel cache (labeler_env)
    cpus = settings.teacher.labeler_cpus
    labeler_actor = ray.remote(Labeler).options(
        name=LABELER, num_cpus=cpus, max_concurrency=4, runtime_env=env, **again
    )
    labeler = labeler_actor.remote(settings, task)
    scheduler = (
        ray.remote(Scheduler)
        .options(
            name=SCHEDULER, num_cpus=ACTOR_CPUS, max_concurrency=8, get_if_exists=False, **again
        )
        .remote(settings, task, dashboard_url)
    )
    return store, labeler, scheduler


def _link_ray_logs(settings: Settings, session_dir: str | None) -> None:
    """``state/logs/ray`` → this Ray session's log folder (workers, Serve, Train, the raylet)."""
    if not session_dir:
        return
    link = _log_path(settings, "ray")
    with contextlib.suppress(OSError):
        if link.is_symlink():
            link.unlink()
        link.symlink_to(Path(session_dir) / "logs", target_is_directory=True)


def _into_log_file(*names: str) -> None:
    """Ray's loggers keep their own terminal handlers; hand their lines to the root logger (the
    ``state/logs/distillery.log`` file that ``distillery up`` sets)."""
    for name in names:
        logger = logging.getLogger(name)
        logger.handlers.clear()
        logger.propagate = True


def bootstrap(scheduler: Any, say: Any, poll_s: float = 2.0) -> RoundReport | None:
    """Make v1 if the registry is empty, saying how the round goes (every quarter of it)."""
    import ray

    running = scheduler.bootstrap.remote()
    said = -1
    while not ray.wait([running], timeout=poll_s)[0]:
        progress = ray.get(scheduler.round_progress.remote())
        if said < 0:
            say("bootstrap: the teacher labels the seed slice, then a round distils v1")
            said = 0
        if progress and int(progress.done * 4) > said:
            said = int(progress.done * 4)
            say(
                f"bootstrap round: {25 * said}% (epoch {progress.epoch}/{progress.epochs}, "
                f"loss {progress.loss:.3f}, {progress.examples_per_s:.0f} examples/s)"
            )
    first: RoundReport | None = ray.get(running)
    return first


def up(settings: Settings | None = None, say: Any = print, quiet: bool = False) -> Running:
    """Start the whole loop and return once the student answers. Units: seconds. ``quiet``:
    only ``say``'s steps reach the terminal; Ray's output goes to ``state/logs/ray``."""
    import ray
    from ray import serve

    start = time.monotonic()
    settings = settings or Settings()
    task = load_task(settings.paths.task_file)
    settings = for_task(settings, task, say)
    broker = None
    if not settings.kafka.bootstrap_servers:
        broker = EmbeddedBroker(log_path=_log_path(settings, "broker.log")).start()
        settings = settings.model_copy(update={"kafka": broker.kafka()})
        say(f"embedded Kafka broker on {broker.bootstrap_servers} (in memory)")
    supervisor = None
    llm = None
    ui = None
    try:
        ui = start_evidently_ui(settings, say)
        settings, llm = start_local_llm(settings, say)
        check_teacher(settings, task, say)
        bus.ensure_topics(settings.kafka)
        if broker is not None:
            kafka = settings.kafka
            supervisor = Supervisor(broker, lambda: bus.ensure_topics(kafka))
        load_secret(settings.serve.feedback_secret, settings.paths.state_dir)
        load_secret(settings.serve.operator_token, settings.paths.state_dir, "operator_token")
        say("starting Ray" + ("" if os.environ.get("RAY_ADDRESS") else " (local)"))
        dashboard_url, started_ray = start_ray(settings, quiet)
        check_cpu_plan(settings, ray.cluster_resources().get("CPU", 0.0))
        serve.start(http_options={"host": settings.serve.host, "port": settings.serve.port})
        if quiet:
            _into_log_file("ray", "ray.serve", "ray.data", "ray.train")
        store, labeler, scheduler = _start_actors(settings, task, dashboard_url)
        loops = [store.run.remote(), labeler.run.remote()]
        first = bootstrap(scheduler, say)
        if first is not None:
            made = "distilled from seed traffic" if task.kind == "classify" else first.reason
            say(f"first student v{first.version} {made} in {first.seconds:.0f}s")
        say("deploying the student on Serve")
        version = ray.get(scheduler.deploy_current.remote())
        loops.append(scheduler.run.remote())
        ui = evidently_ui_ready(ui, settings, say)
    except BaseException:
        if supervisor is not None:
            supervisor.stop()
        if broker is not None:
            broker.stop()
        if llm is not None:
            llm.stop()
        if ui is not None:
            ui.stop()
        if ray.is_initialized():
            ray.shutdown()
        raise
    api_url = f"http://{settings.serve.host}:{settings.serve.port}"
    metrics_url = f"http://127.0.0.1:{settings.serve.metrics_export_port}/metrics"
    route = "/v1/predict" if task.kind == "classify" else "/v1/chat/completions"
    say(f"serving student v{version} at {api_url}{route}  (docs {api_url}/docs)")
    say(f"Ray dashboard {dashboard_url}  metrics {metrics_url}")
    if settings.serve.operator_token is None:
        token = settings.paths.state_dir / "operator_token"
        say(f"admin API /v1/admin/*: Authorization: Bearer $(cat {token})")
    say(access_line(settings))
    return Running(
        settings, task, api_url, dashboard_url, metrics_url, scheduler, labeler, store,
        time.monotonic() - start, broker, llm, started_ray, loops, supervisor, ui,
    )  # fmt: skip


def access_line(settings: Settings) -> str:
    """How callers get in: open (loopback, no keys yet) or API keys (``services.access``)."""
    if Access.resolve(settings) == "open":
        return (
            "API open on loopback: anyone here may predict and rate; `distillery keys create "
            "NAME` makes the first API key and closes it"
        )
    active = sum(1 for k in key_store.load(settings.paths.state_dir).keys if k.active)
    return f"API keys required (Authorization: Bearer dk_…): {active} active"


def _log_path(settings: Settings, name: str) -> Any:
    logs = settings.paths.state_dir / "logs"
    logs.mkdir(parents=True, exist_ok=True)
    return logs / name
