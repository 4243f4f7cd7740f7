"""The ``distillery`` command: one Typer app for operators."""

from __future__ import annotations

import json
import logging
import os
import signal
import sys
import threading
import time
from pathlib import Path
from typing import Any

import typer

from cli.keys import app as keys_app

app = typer.Typer(help="Continuous online distillation with a feedback loop.", no_args_is_help=True)
app.add_typer(keys_app, name="keys")


def running_scheduler() -> Any:
    """The running loop's scheduler actor, joined as `up` joined Ray (`RAY_ADDRESS`, else
    `auto`); exits 2 naming `distillery up` when none runs."""
    import ray

    from distillery.actors import NAMESPACE, SCHEDULER

    address = os.environ.get("RAY_ADDRESS") or "auto"  # as `up` joined it
    ray.init(address=address, namespace=NAMESPACE, log_to_driver=False)
    try:
        return ray.get_actor(SCHEDULER)
    except ValueError:
        typer.echo("no running distillery found (start it with `distillery up`)", err=True)
        raise typer.Exit(2) from None


def _log_to_file(folder: Path) -> tuple[Path, Any, Any]:
    """This process's logs to ``folder/distillery.log``, not the terminal, which shows ``up``'s
    steps: the root logger (ours, Kafka's, Ray's driver side) and file descriptors 1 and 2
    themselves, because Ray prints straight to them. Returns the log's path and streams on the
    terminal's stdout (``up``'s steps) and stderr (its failure message)."""
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "distillery.log"
    handler = logging.FileHandler(path)
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s %(message)s"))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(logging.INFO)
    logging.getLogger("kafka").setLevel(logging.WARNING)
    out, err = (os.fdopen(os.dup(fd), "w", buffering=1) for fd in (1, 2))
    sys.stdout.flush()
    log_fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    for fd in (1, 2):  # Ray prints raylet warnings to stdout and its own lines to stderr
        os.dup2(log_fd, fd)
    os.close(log_fd)
    return path, out, err


@app.command()
def up() -> None:
    """Start broker, Ray, the Serve app, labeler, store and scheduler; Ctrl-C stops them all."""
    from cli.launcher import up as launch
    from distillery.settings import Settings

    settings = Settings()
    log_file, shown, terminal = _log_to_file(settings.paths.state_dir / "logs")
    start = time.monotonic()

    def say(step: str) -> None:
        shown.write(f"[{time.monotonic() - start:5.0f}s] {step}\n")

    try:
        running = launch(settings, say=say, quiet=True)
    except Exception as exc:
        logging.getLogger("distillery").exception("up failed")
        last = "\n".join(log_file.read_text(errors="replace").splitlines()[-15:])
        terminal.write(
            f"distillery up failed: {type(exc).__name__}: {str(exc)[:2000]}\n"
            f"logs: {log_file.parent}/ (this one: {log_file}); its last lines:\n{last}\n"
        )
        raise typer.Exit(1) from None
    shown.write(f"ready in {running.startup_s:.1f}s; logs in {log_file.parent}/; Ctrl-C to stop\n")
    done = threading.Event()
    # Both set explicitly: a shell starts background jobs with SIGINT ignored.
    signal.signal(signal.SIGTERM, lambda *_: done.set())
    signal.signal(signal.SIGINT, lambda *_: done.set())
    try:
        done.wait()
    finally:
        shown.write("stopping…\n")
        running.stop()
        shown.write("stopped\n")


@app.command()
def labeler() -> None:
    """Run one teacher labeler in this process, a member of the labelers' consumer group (start
    more to label faster). Needs KAFKA_BOOTSTRAP_SERVERS; stops cleanly on SIGTERM or Ctrl-C."""
    from distillery.settings import Settings
    from distillery.task import load_task

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    logging.getLogger("kafka").setLevel(logging.WARNING)
    settings = Settings()
    settings.kafka.servers()  # raises, naming KAFKA_BOOTSTRAP_SERVERS, if it is not set
    os.environ.update(settings.teacher.labeler_env())  # before the teacher's first kernel
    from services.labeler import Labeler

    worker = Labeler(settings, load_task(settings.paths.task_file))
    signal.signal(signal.SIGTERM, lambda *_: worker.stop())
    signal.signal(signal.SIGINT, lambda *_: worker.stop())
    worker.run()
    typer.echo(json.dumps(worker.stats()))


URL = typer.Option(None, "--url", help="the API; default: DISTILLERY_SERVE_HOST/PORT's")


@app.command()
def status(
    as_json: bool = typer.Option(False, "--json", help="the whole status, as JSON"),
    url: str | None = URL,
) -> None:
    """The version serving, the rollout and its checks, labels since the last round, drift,
    triggers and the teacher, read from the running API (no Ray connection)."""
    from cli import api_client
    from cli.status import summary
    from distillery.settings import Settings

    try:
        answer = api_client.status(url or api_client.api_url(Settings()))
    except api_client.APIError as exc:
        typer.echo(str(exc), err=True)
        raise typer.Exit(2) from None
    typer.echo(answer.model_dump_json(indent=2) if as_json else summary(answer))


@app.command()
def retrain() -> None:
    """Run one distillation round now and print its gate decision."""
    import ray

    from training.gate import TooFewHeldOut

    scheduler = running_scheduler()
    running = scheduler.retrain.remote("operator: distillery retrain")
    _progress_bar(scheduler, running)
    try:
        report = ray.get(running)  # a distillery.contracts.RoundReport
    except TooFewHeldOut as short:  # Ray's error is also an instance of its cause
        typer.echo(f"no round: {getattr(short, 'cause', short)}", err=True)
        raise typer.Exit(1) from None
    typer.echo(report.model_dump_json(indent=2))


def _progress_bar(scheduler: Any, running: Any) -> None:
    """Draw the round's progress (its workers report every few batches) until it ends."""
    import ray
    from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

    columns = (TextColumn("{task.description}"), BarColumn(), TimeElapsedColumn())
    with Progress(*columns, transient=False) as bar:
        task = bar.add_task("round: starting Ray Train workers…", total=1.0)
        while not ray.wait([running], timeout=1.0)[0]:
            progress = ray.get(scheduler.round_progress.remote())
            if progress:
                bar.update(
                    task,
                    completed=progress.done,
                    description=f"epoch {progress.epoch}/{progress.epochs}  "
                    f"loss {progress.loss:.4f}  {progress.examples_per_s:.0f} examples/s",
                )
        bar.update(task, completed=1.0)


@app.command()
def history(
    state_dir: Path | None = typer.Option(None, help="default: DISTILLERY_STATE_DIR (./state)"),
) -> None:
    """Every registry transition with its reason: registered, rejected, shadow, canary,
    promoted, rolled_back, paused, resumed."""
    from distillery.settings import PathSettings
    from training.registry import Registry

    paths = PathSettings() if state_dir is None else PathSettings(state_dir=state_dir)
    store = paths.model_store_url()  # DISTILLERY_MODEL_STORE, if set
    for event in Registry(store).history():
        typer.echo(event.model_dump_json())


def _operate(action: str, reason: str, version: int | None, url: str | None) -> None:
    """One admin action through the API; exit 1 when it does not apply now (409), 2 when the
    API cannot be reached or refuses the token."""
    from cli import api_client
    from distillery.contracts import OperatorAnswer
    from distillery.settings import Settings

    settings = Settings()
    try:
        token = api_client.operator_token(settings)
        target = url or api_client.api_url(settings)
        result = api_client.admin(target, token, action, f"CLI: {reason}", version)
    except api_client.APIError as exc:
        if exc.status == 409:
            refused = OperatorAnswer(ok=False, detail=exc.detail)
            typer.echo(refused.model_dump_json(indent=2))
            raise typer.Exit(1) from None
        typer.echo(str(exc), err=True)
        raise typer.Exit(2) from None
    typer.echo(result.model_dump_json(indent=2))


REASON = typer.Option("no reason given", "--reason", "-r", help="kept in the history")


@app.command()
def promote(
    version: int | None = typer.Argument(None, help="default: the rollout's candidate"),
    reason: str = REASON,
    url: str | None = URL,
) -> None:
    """Promote the rollout's candidate (or VERSION) to every user now."""
    _operate("promote", reason, version, url)


@app.command()
def rollback(reason: str = REASON, url: str | None = URL) -> None:
    """Drop the rollout's candidate; with no rollout, serve the previously promoted version."""
    _operate("rollback", reason, None, url)


@app.command()
def pause(reason: str = REASON, url: str | None = URL) -> None:
    """Freeze the rollout where it is: no automatic advance or rollback until `resume`."""
    _operate("pause", reason, None, url)


@app.command()
def resume(reason: str = REASON, url: str | None = URL) -> None:
    """Let the paused rollout's automatic decisions run again."""
    _operate("resume", reason, None, url)


@app.command()
def submit(model_dir: Path, reason: str = REASON) -> None:
    """Gate a student trained elsewhere (a Hugging Face folder with the task's labels) and, if
    it passes, roll it out like a round's candidate."""
    import ray

    report = ray.get(
        running_scheduler().submit.remote(str(model_dir.resolve()), f"submitted: {reason}")
    )
    typer.echo(report.model_dump_json(indent=2))


@app.command("fetch-data")
def fetch_data(
    data_dir: Path | None = typer.Option(None, help="default: DISTILLERY_DATA_DIR (./data)"),
) -> None:
    """Download VADER's human-labelled sentences (movies, tweets, amazon, nyt) into data/."""
    from distillery import vader
    from distillery.settings import PathSettings

    path = vader.fetch((data_dir or PathSettings().data_dir).resolve())
    typer.echo(f"VADER data in {path}")


@app.command()
def demo(
    url: str | None = URL,
    per_phase: int = typer.Option(1600, help="texts replayed per phase"),
    eval_size: int = typer.Option(400, help="held-out texts per domain, scored before/after"),
    timeout_s: float = typer.Option(900, help="how long to wait for the automatic retrain"),
    out: Path | None = typer.Option(None, help="also write the results as JSON here"),
) -> None:
    """Replay movie reviews, then tweets, through the HTTP API; print accuracy before/after."""
    from cli.api_client import api_url
    from cli.demo import run_demo
    from distillery.settings import Settings

    result = run_demo(url or api_url(Settings()), per_phase, eval_size, timeout_s, say=typer.echo)
    typer.echo(result.table())
    if out is not None:
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(json.dumps(result.to_dict(), indent=2))


def main() -> None:
    app()
