"""The ``distillery`` command: one Typer app for operators."""

from __future__ import annotations

import json
import logging
import signal
import threading
from pathlib import Path
from typing import Any

import typer

app = typer.Typer(help="Continuous online distillation with a feedback loop.", no_args_is_help=True)


def _scheduler() -> Any:
    import ray

    from monitoring.scheduler import ACTOR_NAME, NAMESPACE

    ray.init(address="auto", namespace=NAMESPACE, log_to_driver=False)
    try:
        return ray.get_actor(ACTOR_NAME)
    except ValueError:
        typer.echo("no running distillery found (start it with `distillery up`)", err=True)
        raise typer.Exit(2) from None


@app.command()
def up() -> None:
    """Start broker, Ray, the Serve app, labeler, store and scheduler; Ctrl-C stops them all."""
    from services.launcher import up as launch

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    logging.getLogger("kafka").setLevel(logging.WARNING)
    running = launch()
    typer.echo(f"ready in {running.startup_s:.1f}s; Ctrl-C to stop")
    done = threading.Event()
    # Both set explicitly: a shell starts background jobs with SIGINT ignored.
    signal.signal(signal.SIGTERM, lambda *_: done.set())
    signal.signal(signal.SIGINT, lambda *_: done.set())
    try:
        done.wait()
    finally:
        typer.echo("stopping…")
        running.stop()
        typer.echo("stopped")


@app.command()
def labeler() -> None:
    """Run one teacher labeler in this process, a member of the labelers' consumer group (start
    more to label faster). Needs KAFKA_BOOTSTRAP_SERVERS; stops cleanly on SIGTERM or Ctrl-C."""
    from distillery.settings import Settings
    from distillery.task import load_task
    from services.labeler import Labeler

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    logging.getLogger("kafka").setLevel(logging.WARNING)
    settings = Settings()
    settings.kafka.servers()  # raises, naming KAFKA_BOOTSTRAP_SERVERS, if it is not set
    worker = Labeler(settings, load_task(settings.paths.task_file))
    signal.signal(signal.SIGTERM, lambda *_: worker.stop())
    signal.signal(signal.SIGINT, lambda *_: worker.stop())
    worker.run()
    typer.echo(json.dumps(worker.stats()))


@app.command()
def status() -> None:
    """Current version, labels since the last round, the last round's gate, drift."""
    import ray

    typer.echo(json.dumps(ray.get(_scheduler().status.remote()), indent=2, default=str))


@app.command()
def retrain() -> None:
    """Run one distillation round now and print its gate decision."""
    import ray

    scheduler = _scheduler()
    running = scheduler.retrain.remote("operator: distillery retrain")
    _progress_bar(scheduler, running)
    report = ray.get(running)
    typer.echo(json.dumps(report, indent=2, default=str))


def _progress_bar(scheduler: Any, running: Any) -> None:
    """Draw the round's progress (its workers report every few batches) until it ends."""
    import ray
    from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

    columns = (TextColumn("{task.description}"), BarColumn(), TimeElapsedColumn())
    with Progress(*columns, transient=False) as bar:
        task = bar.add_task("round: starting Ray Train workers…", total=1.0)
        while not ray.wait([running], timeout=1.0)[0]:
            progress = ray.get(scheduler.status.remote())["round_progress"]
            if progress:
                bar.update(
                    task,
                    completed=progress["done"],
                    description=f"epoch {progress['epoch']}/{progress['epochs']}  "
                    f"loss {progress['loss']:.4f}  {progress['examples_per_s']:.0f} examples/s",
                )
        bar.update(task, completed=1.0)


@app.command()
def history(state_dir: Path = Path("state")) -> None:
    """Every registry transition with its reason: registered, rejected, shadow, canary,
    promoted, rolled_back, paused, resumed."""
    from distillery.settings import PathSettings
    from training.registry import Registry

    store = PathSettings(state_dir=state_dir).model_store_url()  # DISTILLERY_MODEL_STORE, if set
    for event in Registry(store).history():
        typer.echo(json.dumps(event))


def _operate(action: str, reason: str, version: int | None = None) -> None:
    import ray

    result = ray.get(_scheduler().operate.remote(action, f"operator (CLI): {reason}", version))
    typer.echo(json.dumps(result, indent=2, default=str))
    if not result["ok"]:
        raise typer.Exit(1)


REASON = typer.Option("no reason given", "--reason", "-r", help="kept in the history")


@app.command()
def promote(
    version: int | None = typer.Argument(None, help="default: the rollout's candidate"),
    reason: str = REASON,
) -> None:
    """Promote the rollout's candidate (or VERSION) to every user now."""
    _operate("promote", reason, version)


@app.command()
def rollback(reason: str = REASON) -> None:
    """Drop the rollout's candidate; with no rollout, serve the previously promoted version."""
    _operate("rollback", reason)


@app.command()
def pause(reason: str = REASON) -> None:
    """Freeze the rollout where it is: no automatic advance or rollback until `resume`."""
    _operate("pause", reason)


@app.command()
def resume(reason: str = REASON) -> None:
    """Let the paused rollout's automatic decisions run again."""
    _operate("resume", reason)


@app.command()
def submit(model_dir: Path, reason: str = REASON) -> None:
    """Gate a student trained elsewhere (a Hugging Face folder with the task's labels) and, if
    it passes, roll it out like a round's candidate."""
    import ray

    report = ray.get(_scheduler().submit.remote(str(model_dir.resolve()), f"submitted: {reason}"))
    typer.echo(json.dumps(report, indent=2, default=str))


@app.command("fetch-data")
def fetch_data(data_dir: Path = Path("data")) -> None:
    """Download VADER's human-labelled sentences (movies, tweets, amazon, nyt) into data/."""
    from distillery import vader

    path = vader.fetch(data_dir.resolve())
    typer.echo(f"VADER data in {path}")


@app.command()
def demo(
    url: str = "http://127.0.0.1:8000",
    per_phase: int = typer.Option(1600, help="texts replayed per phase"),
    eval_size: int = typer.Option(400, help="held-out texts per domain, scored before/after"),
    timeout_s: float = typer.Option(900, help="how long to wait for the automatic retrain"),
    out: Path | None = typer.Option(None, help="also write the results as JSON here"),
) -> None:
    """Replay movie reviews, then tweets, through the HTTP API; print accuracy before/after."""
    from distillery.demo import run_demo

    result = run_demo(url, per_phase, eval_size, timeout_s, say=typer.echo)
    typer.echo(result.table())
    if out is not None:
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(json.dumps(result.to_dict(), indent=2))


def main() -> None:
    app()
