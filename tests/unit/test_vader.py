"""VADER loader: parsing, filtering, labels, file layout and errors, all without the network."""

from __future__ import annotations

import io
import subprocess
import tarfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pytest

from distillery import vader
from distillery.vader import DOMAINS, VaderRow, fetch, load, parse_archive, parse_lines

FILES = {
    "movies": "movieReviewSnippets_GroundTruth.txt",
    "tweets": "tweets_GroundTruth.txt",
    "amazon": "amazonReviewSnippets_GroundTruth.txt",
    "nyt": "nytEditorialSnippets_GroundTruth.txt",
}

# (id, mean score, text); per domain: 2 kept negatives, 1 kept positive, 2 dropped near-neutral.
LINES = [
    ("1", "-2.5", "awful, just awful"),
    ("2", "-0.5", "slightly disappointing"),
    ("3", "0.5", "mildly pleasant"),
    ("4", "0.49", "near neutral, dropped"),
    ("5", "-0.3", "also dropped"),
]


def _ground_truth(domain: str) -> bytes:
    body = "".join(f"{i}\t{s}\t{t} ({domain}) café\r\n" for i, s, t in LINES)
    return (body + "\r\n").encode("utf-8")


def _add(archive: tarfile.TarFile, name: str, data: bytes) -> None:
    info = tarfile.TarInfo(name)
    info.size = len(data)
    archive.addfile(info, io.BytesIO(data))


def _inner_tarball(path: Path, domains: Sequence[str] = DOMAINS) -> Path:
    with tarfile.open(path, "w:gz") as archive:
        for domain in domains:
            _add(archive, f"hutto_ICWSM_2014/{FILES[domain]}", _ground_truth(domain))
        _add(archive, "hutto_ICWSM_2014/_README_.txt", b"not data")
    return path


def _sdist(path: Path, tmp: Path) -> Path:
    inner = _inner_tarball(tmp / "inner.tar.gz").read_bytes()
    with tarfile.open(path, "w:gz") as archive:
        _add(archive, "vaderSentiment-3.3.2/setup.py", b"")
        _add(archive, "vaderSentiment-3.3.2/additional_resources/hutto_ICWSM_2014.tar.gz", inner)
    return path


def test_parse_archive_filters_and_labels(tmp_path: Path) -> None:
    rows = parse_archive(_inner_tarball(tmp_path / "hutto.tar.gz"))
    assert len(rows) == 3 * len(DOMAINS)
    assert [r.domain for r in rows[:3]] == ["movies"] * 3
    assert {(r.score, r.label) for r in rows} == {
        (-2.5, "negative"),
        (-0.5, "negative"),
        (0.5, "positive"),
    }
    assert rows[0] == VaderRow("awful, just awful (movies) café", "negative", "movies", -2.5)


def test_parse_archive_reads_the_nested_sdist(tmp_path: Path) -> None:
    direct = parse_archive(_inner_tarball(tmp_path / "hutto.tar.gz"))
    nested = parse_archive(_sdist(tmp_path / "vaderSentiment-3.3.2.tar.gz", tmp_path))
    assert nested == direct


def test_parse_archive_missing_domain_is_named(tmp_path: Path) -> None:
    path = _inner_tarball(tmp_path / "partial.tar.gz", domains=("movies", "tweets", "amazon"))
    with pytest.raises(ValueError, match=r"nytEditorialSnippets_GroundTruth\.txt.*'nyt'"):
        parse_archive(path)


def test_parse_lines_label_boundaries() -> None:
    rows = parse_lines(["a\t0\tzero", "b\t-0.0\tneg zero", "c\t-4\tworst", "d\t4\tbest"], "nyt")
    assert [(r.text, r.label) for r in rows] == [("worst", "negative"), ("best", "positive")]


def test_parse_lines_reports_malformed_line() -> None:
    with pytest.raises(ValueError, match=r"src:2:"):
        parse_lines(["1\t1.0\tfine", "2\tnot-a-number\tbad"], "tweets", source="src")


def test_fetch_writes_jsonl_and_marker_then_is_idempotent(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    calls: list[list[str]] = []

    def fake_pip(command: list[str], **_: Any) -> subprocess.CompletedProcess[str]:
        calls.append(command)
        dest = Path(command[command.index("-d") + 1])
        _sdist(dest / "vaderSentiment-3.3.2.tar.gz", dest)
        return subprocess.CompletedProcess(command, 0, "", "")

    monkeypatch.setattr(vader.subprocess, "run", fake_pip)
    out = fetch(tmp_path / "data")
    assert out == tmp_path / "data" / "vader"
    expected = sorted([".complete", *(f"{d}.jsonl" for d in DOMAINS)])
    assert sorted(p.name for p in out.iterdir()) == expected
    assert calls[0][1:4] == ["-m", "pip", "download"]
    tweets = load("tweets", tmp_path / "data")
    assert [r.label for r in tweets] == ["negative", "negative", "positive"]
    assert all(r.domain == "tweets" and r.text.endswith("(tweets) café") for r in tweets)
    fetch(tmp_path / "data")
    assert len(calls) == 1


def test_fetch_names_the_failing_pip_command(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def failing_pip(command: list[str], **_: Any) -> subprocess.CompletedProcess[str]:
        return subprocess.CompletedProcess(command, 1, "", "ERROR: no network")

    monkeypatch.setattr(vader.subprocess, "run", failing_pip)
    with pytest.raises(
        RuntimeError, match=r"(?s)pip download .*vaderSentiment==3\.3\.2.*no network"
    ):
        fetch(tmp_path)
    assert not (tmp_path / "vader" / ".complete").exists()


def test_load_unknown_domain_names_it_and_the_valid_ones(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match=r"'imdb'.*movies, tweets, amazon, nyt"):
        load("imdb", tmp_path)


def test_load_without_data_says_how_to_fetch(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="distillery fetch-data"):
        load("movies", tmp_path)


def test_load_ignores_an_unfinished_fetch(tmp_path: Path) -> None:
    vader.write_jsonl([VaderRow("t", "positive", "nyt", 1.0)], tmp_path / "vader")
    with pytest.raises(FileNotFoundError):
        load("nyt", tmp_path)
    (tmp_path / "vader" / ".complete").write_text("ok\n")
    assert load("nyt", tmp_path) == [VaderRow("t", "positive", "nyt", 1.0)]
