"""The human-labelled VADER sentence sets (Hutto & Gilbert, ICWSM 2014), four domains.

The data ships inside the vaderSentiment 3.3.2 source archive as
``additional_resources/hutto_ICWSM_2014.tar.gz``. Each ``*_GroundTruth.txt`` file in it is
tab-separated: ``ID``, mean human rating on a -4..+4 scale, sentence text. Sentences whose mean
rating is within 0.5 of neutral are dropped; the rest are labelled by the sign of the rating.

Nothing here does I/O at import time: ``fetch`` downloads and converts once, ``load`` reads.
"""

from __future__ import annotations

import io
import json
import subprocess
import sys
import tarfile
import tempfile
from collections.abc import Iterable
from dataclasses import asdict, dataclass
from pathlib import Path

DOMAINS: tuple[str, ...] = ("movies", "tweets", "amazon", "nyt")

SDIST_REQUIREMENT = "vaderSentiment==3.3.2"
INNER_ARCHIVE = "hutto_ICWSM_2014.tar.gz"
MIN_ABS_SCORE = 0.5  # rating units (-4..+4); |mean| below this is treated as neutral and dropped
COMPLETE_MARKER = ".complete"

_GROUND_TRUTH_FILES: dict[str, str] = {
    "movies": "movieReviewSnippets_GroundTruth.txt",
    "tweets": "tweets_GroundTruth.txt",
    "amazon": "amazonReviewSnippets_GroundTruth.txt",
    "nyt": "nytEditorialSnippets_GroundTruth.txt",
}


@dataclass(frozen=True)
class VaderRow:
    """One rated sentence; ``score`` is the mean human rating on the -4..+4 scale."""

    text: str
    label: str
    domain: str
    score: float


def label_for(score: float) -> str:
    """Label of a mean rating: ``negative`` below zero, ``positive`` otherwise."""
    return "negative" if score < 0 else "positive"


def parse_lines(lines: Iterable[str], domain: str, source: str = "<lines>") -> list[VaderRow]:
    """Parse ``ID<TAB>mean rating<TAB>text`` lines, dropping near-neutral and blank ones.

    Raises ValueError naming ``source`` and the 1-based line number on a malformed line.
    """
    rows: list[VaderRow] = []
    for number, raw in enumerate(lines, start=1):
        line = raw.rstrip("\r\n")
        if not line.strip():
            continue
        parts = line.split("\t", 2)
        try:
            score = float(parts[1])
            text = parts[2].strip()
        except (IndexError, ValueError) as exc:
            raise ValueError(f"{source}:{number}: expected 'id<TAB>score<TAB>text'") from exc
        if abs(score) < MIN_ABS_SCORE or not text:
            continue
        rows.append(VaderRow(text=text, label=label_for(score), domain=domain, score=score))
    return rows


def parse_archive(tar_path: Path) -> list[VaderRow]:
    """Read all four domains from a tarball, in ``DOMAINS`` order, without extracting to disk.

    ``tar_path`` may be the inner ``hutto_ICWSM_2014.tar.gz`` or the vaderSentiment sdist that
    contains it. Raises ValueError if a domain's ground-truth file is missing.
    """
    with tarfile.open(tar_path, "r:*") as archive:
        return _parse_open_archive(archive, str(tar_path))


def _parse_open_archive(archive: tarfile.TarFile, source: str) -> list[VaderRow]:
    members = {Path(m.name).name: m for m in archive.getmembers() if m.isfile()}
    if INNER_ARCHIVE in members and not any(n in members for n in _GROUND_TRUTH_FILES.values()):
        data = _read_member(archive, members[INNER_ARCHIVE])
        with tarfile.open(fileobj=io.BytesIO(data), mode="r:*") as inner:
            return _parse_open_archive(inner, f"{source}!{INNER_ARCHIVE}")
    rows: list[VaderRow] = []
    for domain in DOMAINS:
        name = _GROUND_TRUTH_FILES[domain]
        if name not in members:
            raise ValueError(f"{source}: no {name} (domain {domain!r}) in the archive")
        text = _read_member(archive, members[name]).decode("utf-8")
        rows.extend(parse_lines(text.splitlines(), domain, f"{source}!{name}"))
    return rows


def _read_member(archive: tarfile.TarFile, member: tarfile.TarInfo) -> bytes:
    handle = archive.extractfile(member)
    if handle is None:
        raise ValueError(f"cannot read {member.name} from the archive")
    with handle:
        return handle.read()


def fetch(data_dir: Path) -> Path:
    """Download the sdist, convert it to ``data_dir/vader/{domain}.jsonl``; return that folder.

    Idempotent: if ``data_dir/vader/.complete`` exists nothing is done. The marker is written
    last, so an interrupted run is redone from scratch next time.
    """
    out_dir = Path(data_dir) / "vader"
    if (out_dir / COMPLETE_MARKER).exists():
        return out_dir
    with tempfile.TemporaryDirectory(prefix="vader-sdist-") as tmp:
        rows = parse_archive(_download_sdist(Path(tmp)))
    write_jsonl(rows, out_dir)
    (out_dir / COMPLETE_MARKER).write_text("ok\n", encoding="utf-8")
    return out_dir


def _download_sdist(dest: Path) -> Path:
    """Run ``pip download`` for the vaderSentiment sdist into ``dest``; return the archive."""
    command = [
        sys.executable,
        "-m",
        "pip",
        "download",
        "--no-deps",
        "--no-binary",
        ":all:",
        "--disable-pip-version-check",
        SDIST_REQUIREMENT,
        "-d",
        str(dest),
    ]
    shown = " ".join(command)
    try:
        result = subprocess.run(command, capture_output=True, text=True, check=False)
    except OSError as exc:
        raise RuntimeError(f"could not run `{shown}`: {exc}") from exc
    if result.returncode != 0:
        tail = (result.stderr or result.stdout).strip()[-2000:]
        raise RuntimeError(f"`{shown}` failed (exit {result.returncode}):\n{tail}")
    archives = sorted(dest.glob("vaderSentiment-*.tar.gz"))
    if not archives:
        raise RuntimeError(f"`{shown}` succeeded but left no vaderSentiment-*.tar.gz in {dest}")
    return archives[0]


def write_jsonl(rows: Iterable[VaderRow], out_dir: Path) -> None:
    """Write one ``{domain}.jsonl`` per domain (every domain, even if empty) into ``out_dir``."""
    out_dir.mkdir(parents=True, exist_ok=True)
    by_domain: dict[str, list[VaderRow]] = {domain: [] for domain in DOMAINS}
    for row in rows:
        by_domain[row.domain].append(row)
    for domain, domain_rows in by_domain.items():
        target = out_dir / f"{domain}.jsonl"
        partial = target.with_suffix(".jsonl.partial")
        with partial.open("w", encoding="utf-8") as handle:
            for row in domain_rows:
                handle.write(json.dumps(asdict(row), ensure_ascii=False) + "\n")
        partial.replace(target)


def load(domain: str, data_dir: Path) -> list[VaderRow]:
    """Read one domain's rows as written by ``fetch``.

    Raises ValueError for an unknown domain and FileNotFoundError if the data was not fetched.
    """
    if domain not in DOMAINS:
        raise ValueError(f"unknown VADER domain {domain!r}; valid domains: {', '.join(DOMAINS)}")
    vader_dir = Path(data_dir) / "vader"
    path = vader_dir / f"{domain}.jsonl"
    if not (vader_dir / COMPLETE_MARKER).exists() or not path.exists():
        raise FileNotFoundError(
            f"VADER data not found at {path}; run `distillery fetch-data` (or `make data`) first"
        )
    with path.open(encoding="utf-8") as handle:
        return [VaderRow(**json.loads(line)) for line in handle if line.strip()]
