"""The trust estimate as data: each key's and the teacher's posterior (``feedback.trust``).

Each round writes it to ``state/trust.json``; ``status``, ``distillery keys list`` and the
rollout's feedback checks read it. No pandas here, so the CLI stays quick.
"""

from __future__ import annotations

from pathlib import Path

from pydantic import BaseModel, ConfigDict

from distillery.files import write_atomic

FILENAME = "trust.json"


class Prior(BaseModel):
    """Beta(a, b) on a source's chance of giving the true label."""

    model_config = ConfigDict(frozen=True)

    a: float
    b: float

    def mean(self) -> float:
        return self.a / (self.a + self.b)


class TrustParams(BaseModel):
    """What ``estimate`` needs (``distillery.settings.TrustSettings`` builds it)."""

    model_config = ConfigDict(frozen=True)

    n_labels: int
    key_prior: Prior = Prior(a=3.0, b=2.0)
    teacher_prior: Prior = Prior(a=8.0, b=2.0)
    trusted: frozenset[str] = frozenset()
    confident: float = 0.8
    slice_strength: float = 10.0
    floor: float = 0.8  # reliability a key needs to feed the golden set and the rollout checks
    passes: int = 30  # at most; ``estimate`` stops once no key's weight moves by 1e-6


class SourceTrust(BaseModel):
    """One source's posterior: ``labels`` it gave, ``comparisons`` (weighted) behind it."""

    source: str
    reliability: float  # posterior mean chance of giving the true label
    weight: float  # what its labels weigh: chance-corrected reliability, 1 for a trusted key
    agreements: float
    comparisons: float
    labels: int
    trusted: bool = False  # marked by an operator (or the open key in open mode)
    above_floor: bool = False  # trusted, or reliability ≥ the floor
    share: float | None = None  # an ensemble member: its share of the mix (None: the task file's)


class CellTrust(BaseModel):
    """The teacher's reliability where it said ``label`` on texts of one length ``slice``
    (``slice`` = "*": all lengths)."""

    label: int
    slice: str
    reliability: float
    weight: float
    comparisons: float


class TrustModel(BaseModel):
    keys: list[SourceTrust]
    teacher: SourceTrust
    teacher_cells: list[CellTrust]
    n_labels: int
    members: list[SourceTrust] = []  # an ensemble teacher's members (``feedback.ensemble_trust``)

    def key(self, key_id: str) -> SourceTrust | None:
        return next((k for k in self.keys if k.source == key_id), None)

    def _teacher_source(self, label: int, slice_name: str) -> CellTrust | SourceTrust:
        """The slice's cell, else the label's, else the teacher's overall."""
        cells = {(c.label, c.slice): c for c in self.teacher_cells}
        return cells.get((label, slice_name), cells.get((label, "*"), self.teacher))

    def teacher_cell(self, label: int, slice_name: str) -> tuple[float, float]:
        """(weight, reliability) where the teacher said ``label`` on a text of this slice: the
        slice's cell, else the label's, else the teacher's overall."""
        found = self._teacher_source(label, slice_name)
        return found.weight, found.reliability

    def teacher_weight(self, label: int, slice_name: str) -> float:
        return self.teacher_cell(label, slice_name)[0]

    def teacher_evidence(self, label: int, slice_name: str) -> tuple[float, float]:
        """(reliability, comparisons) behind ``teacher_cell``."""
        found = self._teacher_source(label, slice_name)
        return found.reliability, found.comparisons

    def ranked(self) -> list[SourceTrust]:
        """Keys by reliability, then by volume: what ``status`` and the operator page show."""
        return sorted(self.keys, key=lambda k: (-k.reliability, -k.labels, k.source))


def save(state_dir: Path, model: TrustModel) -> None:
    state_dir.mkdir(parents=True, exist_ok=True)
    write_atomic(state_dir / FILENAME, model.model_dump_json(indent=1).encode())


def load(state_dir: Path) -> TrustModel | None:
    """The newest estimate, or None before the first round measured one."""
    path = state_dir / FILENAME
    return TrustModel.model_validate_json(path.read_text()) if path.is_file() else None
