"""Drift on a generate task's prompts: the LM's input embeddings mean-pooled per prompt
(``models.prompt_embedding``), and the scheduler's watch measuring prompt features and those
embeddings with the replies' quality (``monitoring.watch.Watch.measure_replies``), on a tiny
Llama saved as a real version folder."""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import pytest
import torch
from transformers import BertTokenizer, LlamaConfig, LlamaForCausalLM

from distillery.settings import MonitorSettings, PathSettings, Settings, TrainSettings
from distillery.task import load_task
from feedback.store import write_shard
from models.prompt_embedding import PromptEmbedder
from monitoring.watch import Watch
from training.chrf import chrf
from training.data import in_holdout
from training.registry import Registry, VersionMeta

ROOT = Path(__file__).resolve().parents[2]
TASK = load_task(ROOT / "tasks" / "reply.yaml")
SHORT = ["good", "bad film", "i love it", "the movie"]
LONG = "the movie was very very good and i love it a great great film !"


@pytest.fixture
def lm_folder(tmp_path: Path, tiny_tokenizer: BertTokenizer) -> Path:
    torch.manual_seed(0)
    config = LlamaConfig(
        vocab_size=tiny_tokenizer.vocab_size, hidden_size=16, intermediate_size=32,
        num_hidden_layers=1, num_attention_heads=2, num_key_value_heads=2,
    )  # fmt: skip
    folder = tmp_path / "lm"
    LlamaForCausalLM(config).save_pretrained(folder)  # model.safetensors
    tiny_tokenizer.save_pretrained(folder)
    return folder


def test_a_prompt_is_the_mean_of_its_tokens_input_embeddings(lm_folder: Path) -> None:
    embedder = PromptEmbedder.load(lm_folder)
    table = LlamaForCausalLM.from_pretrained(lm_folder).get_input_embeddings().weight.detach()
    pooled = embedder.pooled(["good film", "", "the movie was good"])  # (3, H)
    ids = embedder.tokenizer(["good film"], add_special_tokens=False)["input_ids"][0]
    assert pooled.shape == (3, 16) and pooled.dtype == np.float32
    assert np.allclose(pooled[0], table[ids].mean(0).numpy(), atol=1e-6)
    assert not pooled[1].any()  # no token: zeros
    assert not np.allclose(pooled[0], pooled[2])


def test_a_folder_without_an_embedding_table_is_named(tmp_path: Path) -> None:
    from safetensors.torch import save_file

    save_file({"classifier.weight": torch.zeros(2, 2)}, str(tmp_path / "model.safetensors"))
    with pytest.raises(FileNotFoundError, match=r"no \*embed_tokens\.weight in .*safetensors"):
        PromptEmbedder.load(tmp_path)


def _chats(texts: list[str], t0: float, replies: tuple[str, str]) -> list[dict]:
    return [
        {"request_id": f"{t0}-{i}", "text": text, "ts": t0 + i, "predicted_at": t0 + i,
         "model_version": 1, "student_probs": [], "teacher_probs": [],
         "reply": replies[0], "student_reply": replies[i % 2]}
        for i, text in enumerate(texts)
    ]  # fmt: skip


def test_a_generate_tasks_watch_measures_prompt_drift_replies_and_feedback(
    tmp_path: Path, lm_folder: Path
) -> None:
    """The base LM (v1) was trained on no window: the first ``current_rows`` prompts it was
    sent stand in for one. Short prompts, then long ones: features and embeddings drift."""
    settings = Settings(
        paths=PathSettings(state_dir=tmp_path / "state", task_file=ROOT / "tasks" / "reply.yaml"),
        monitor=MonitorSettings(min_rows=10, html_every=1, signal_window_s=3_600, current_rows=100),
        train=TrainSettings(bad_rating_max=2, holdout_fraction=0.3),
    )
    registry = Registry(settings.paths.model_store_url())
    registry.register(lm_folder, VersionMeta(version=0))  # lineage.window_end_ts 0: no window
    registry.promote(1, "the base LM")
    now = time.time()
    early = [f"{text} {i}" for i, text in enumerate(SHORT * 30)]  # 120 distinct prompts
    late = [f"{LONG} {i}" for i in range(60)]
    sorry = ("We're sorry it broke.", "Hello there.")
    settings.paths.store_dir.mkdir(parents=True)
    write_shard(settings.paths.store_dir, "labels", _chats(early, now - 900, sorry))
    write_shard(settings.paths.store_dir, "labels", _chats(late, now - 300, sorry))
    feedback = [
        {"request_id": f"f{i}", "rating": 1 if i < 3 else 5, "ts": now - 10, "model_version": 1}
        for i in range(4)
    ]
    write_shard(settings.paths.store_dir, "feedback", feedback)
    watch = Watch(settings, TASK, registry)
    signals = watch.measure_replies(new_labels=180, minutes_since_round=1)
    assert watch.drift is not None and watch.drift.version == 1
    shares = watch.drift.share
    assert set(shares) == {"features", "embedding"}  # a reply is no label: no prediction kind
    assert shares["features"] >= 0.5 and shares["embedding"] > 0, watch.drift
    assert "unknown_token_share" not in watch.drift.drifted["features"]
    assert signals.drift == max(shares.values())
    held = sum(in_holdout(" ".join(text.split()).casefold(), 0.3) for text in early[:100])
    assert watch.drift.reference_rows == held  # held out of the first 100 prompts
    assert watch.drift.current_rows == 80  # the 20 short prompts after them, then 60 long
    half = chrf("Hello there.", "We're sorry it broke.")
    assert signals.labelled == 180 and signals.disagreement == pytest.approx(1 - (100 + half) / 200)
    assert (signals.rated, signals.negative_share) == (4, pytest.approx(0.75))
    assert watch.series[-1].drift == shares
    assert len(watch.reports.listing()) == 1  # Evidently's report of the prompts' drift


def test_prompts_from_the_same_traffic_do_not_drift(tmp_path: Path, lm_folder: Path) -> None:
    settings = Settings(
        paths=PathSettings(state_dir=tmp_path / "state", task_file=ROOT / "tasks" / "reply.yaml"),
        monitor=MonitorSettings(
            min_rows=10, html_every=100, signal_window_s=3_600, current_rows=200
        ),
        train=TrainSettings(holdout_fraction=0.3),
    )
    registry = Registry(settings.paths.model_store_url())
    registry.register(lm_folder, VersionMeta(version=0))
    registry.promote(1, "the base LM")
    rng = np.random.default_rng(0)
    words = ["good", "bad", "film", "movie", "i", "love", "it", "the", "was", "very"]
    prompts = [" ".join(rng.choice(words, size=int(rng.integers(2, 9)))) + f" {i}"
               for i in range(400)]  # fmt: skip
    settings.paths.store_dir.mkdir(parents=True)
    write_shard(settings.paths.store_dir, "labels", _chats(prompts, time.time() - 900, ("a", "a")))
    watch = Watch(settings, TASK, registry)
    signals = watch.measure_replies(new_labels=400, minutes_since_round=1)
    assert watch.drift is not None and signals.drift is not None
    assert signals.drift <= 0.34, watch.drift  # at most one column of three by chance
