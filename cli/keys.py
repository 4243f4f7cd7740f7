"""``distillery keys``: create, list, revoke and trust the API keys applications call with.

Keys live hashed in ``state/keys.json`` (``feedback.keys``); the Serve replicas pick up changes
within seconds. ``list`` ranks the keys by their measured reliability (``state/trust.json``, written
by each round) and then by how many labels they gave.
"""

from __future__ import annotations

import json
import time

import typer

from distillery.settings import PathSettings
from feedback import keys as key_store
from feedback import trust_report

app = typer.Typer(help="API keys: create, list, revoke, trust.", no_args_is_help=True)


def _state() -> PathSettings:
    return PathSettings()


@app.command()
def create(
    name: str = typer.Argument(..., help="who the key is for, e.g. the application's name"),
    trusted: bool = typer.Option(False, help="its feedback feeds the golden set at once"),
    predict_per_min: float | None = typer.Option(None, help="predict calls a minute"),
    feedback_per_min: float | None = typer.Option(None, help="feedback calls a minute"),
) -> None:
    """Print a new key (shown once: only its hash is kept)."""
    record, key = key_store.create(
        _state().state_dir, name, trusted, predict_per_min, feedback_per_min
    )
    typer.echo(json.dumps({"id": record.id, "name": record.name, "key": key}))


@app.command("list")
def list_keys() -> None:
    """Every key, most reliable first (then by labels given), with what the last round measured."""
    state = _state().state_dir
    trust = trust_report.load(state)
    measured = {k.source: k for k in trust.ranked()} if trust else {}
    rank = list(measured)
    records = sorted(
        key_store.load(state).keys,
        key=lambda k: (rank.index(k.id) if k.id in rank else len(rank), k.created),
    )
    for record in records:
        row = record.model_dump(exclude={"sha256"})
        found = measured.get(record.id)
        if found is not None:
            row.update(reliability=round(found.reliability, 3), weight=round(found.weight, 3))
            row.update(labels=found.labels)
        typer.echo(json.dumps(row))


def _change(key_id: str, **changes: object) -> None:
    try:
        record = key_store.update(_state().state_dir, key_id, **changes)
    except KeyError as exc:
        typer.echo(str(exc.args[0]), err=True)
        raise typer.Exit(2) from None
    typer.echo(json.dumps(record.model_dump(exclude={"sha256"})))


@app.command()
def revoke(key_id: str) -> None:
    """Refuse the key from now on (predictions and feedback get 401)."""
    _change(key_id, revoked=time.time())


@app.command()
def trust(
    key_id: str, off: bool = typer.Option(False, "--off", help="take the trust back")
) -> None:
    """Mark a key trusted: its labels are a reference for the teacher and the other keys."""
    _change(key_id, trusted=not off)
