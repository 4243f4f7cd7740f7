"""Every metric, defined once. Created lazily inside Ray processes (replicas, actors), never at
import time; Ray's metrics export port serves them all to one Prometheus scrape."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

TEACHER_BOUNDARIES_S = [0.05, 0.1, 0.2, 0.5, 1.0, 2.0, 5.0, 10.0, 30.0, 60.0]
LATENCY_BOUNDARIES_S = [0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1.0, 2.0, 5.0]


def _tags(*keys: str) -> Any:
    """Tag keys as Ray wants them (its annotation admits one key only; it takes any number)."""
    return keys


def start_at_zero(counter: Any, *tag_sets: dict[str, str]) -> None:
    """Export ``counter`` at 0 for each label set (none: the bare series) before its first event.

    A counter of a rare event (a failed swap, a dead letter) has no series until the event
    happens, so its panel reads "no data" on a healthy loop, and a query patched with
    ``or vector(0)`` can no longer tell a quiet counter from one nobody exports. Prometheus'
    advice is to initialise the label sets known in advance at 0
    (https://prometheus.io/docs/practices/instrumentation/#avoid-missing-metrics). Ray's public
    ``Counter.inc`` refuses 0 ("value must be >0", Ray 2.60), so this records through
    ``Metric._record``, where ``inc`` itself ends; tested with a real Prometheus by
    tests/integration/test_watch.py, whose dashboard queries have no ``or vector(0)`` left.
    """
    for tags in tag_sets or ({},):
        counter._record(0, tags=dict(tags))


@dataclass
class ServeMetrics:
    predictions: Any  # texts answered, by model_version and label
    latency_s: Any  # request latency of /v1/predict, seconds
    sampled: Any  # events sent to the teacher, by reason
    skipped: Any  # predictions not sent to the teacher, by reason and candidate reason
    sample_dropped: Any  # sampled events lost before Kafka, by reason
    feedback: Any  # feedback accepted, by rating
    rejected: Any  # requests refused, by route and status
    batch_size: Any  # texts per student forward, as @serve.batch formed them
    batches: Any  # student forwards (predictions_total / batches_total = mean batch)
    swap_failed: Any  # hot swaps whose new version could not load (the old one kept serving)
    spool_pending: Any  # feedback bytes spooled and not yet acknowledged by the broker
    replayed: Any  # spooled feedback events the broker acknowledged on replay
    spool_quarantined: Any  # torn or unreadable spool lines set aside, on this replica's disk
    candidate_errors: Any  # a rollout candidate failed a text (the stable student answered)
    shadow_compared: Any  # mirrored texts, by whether the shadow agreed with the stable student
    cascade: Any  # texts below min_confidence, by outcome (deferred, or which budget stopped it)
    decode_streams: Any  # generate: chats one llama.cpp forward pass advanced (the batch width)


def serve_metrics() -> ServeMetrics:
    """The replica's metrics; its counters of rare events start at 0 (``start_at_zero``)."""
    from ray.serve import metrics

    made = ServeMetrics(
        predictions=metrics.Counter(
            "distillery_predictions_total",
            "Texts answered, by the version that answered and its label.",
            tag_keys=_tags("model_version", "label"),
        ),
        latency_s=metrics.Histogram(
            "distillery_request_duration_seconds",
            "Latency of /v1/predict inside the replica, seconds.",
            boundaries=LATENCY_BOUNDARIES_S,
        ),
        sampled=metrics.Counter(
            "distillery_sampled_total", "Predictions sent to the teacher.", tag_keys=_tags("reason")
        ),
        skipped=metrics.Counter(
            "distillery_sample_skipped_total",
            "Predictions not sent to the teacher: not_selected, over_budget or opt_out.",
            tag_keys=_tags("reason", "candidate"),
        ),
        sample_dropped=metrics.Counter(
            "distillery_sample_dropped_total",
            "Sampled predictions not delivered to Kafka.",
            tag_keys=_tags("reason"),
        ),
        feedback=metrics.Counter(
            "distillery_feedback_total",
            "Feedback accepted, sent to the broker or spooled to disk, by the rated version.",
            tag_keys=_tags("rating", "stored", "model_version"),
        ),
        rejected=metrics.Counter(
            "distillery_rejected_total", "Requests refused.", tag_keys=_tags("route", "status")
        ),
        batch_size=metrics.Histogram(
            "distillery_batch_size",
            "Texts per student forward.",
            boundaries=[1, 2, 4, 8, 16, 32, 64, 128],
        ),
        batches=metrics.Counter("distillery_batches_total", "Student forwards."),
        decode_streams=metrics.Histogram(
            "distillery_decode_streams",
            "Generate: chats one decoding step advanced by a token (models.batch_decoder).",
            boundaries=[1, 2, 4, 8, 16, 32, 64],
        ),
        cascade=metrics.Counter(
            "distillery_cascade_total",
            "Texts below min_confidence: deferred (the teacher answered), teacher_budget, "
            "latency_budget or teacher_unavailable (the student answered).",
            tag_keys=_tags("outcome"),
        ),
        swap_failed=metrics.Counter(
            "distillery_swap_failed_total", "Hot swaps that kept the old version."
        ),
        spool_pending=metrics.Gauge(
            "distillery_spool_pending_bytes",
            "Feedback spooled on this replica and not yet acknowledged by the broker.",
        ),
        replayed=metrics.Counter(
            "distillery_spool_replayed_total", "Spooled feedback acknowledged on replay."
        ),
        spool_quarantined=metrics.Gauge(
            "distillery_spool_quarantined_records",
            "Torn or unreadable spool lines set aside in the spool folder's .quarantine files.",
        ),
        candidate_errors=metrics.Counter(
            "distillery_candidate_errors_total",
            "Texts a rollout candidate failed; the stable student answered them.",
            tag_keys=_tags("stage"),
        ),
        shadow_compared=metrics.Counter(
            "distillery_shadow_compared_total",
            "Texts mirrored to a shadow candidate, by agreement with the stable student.",
            tag_keys=_tags("agreed"),
        ),
    )
    start_at_zero(made.swap_failed)
    start_at_zero(made.replayed)
    start_at_zero(made.sample_dropped, {"reason": "queue_full"}, {"reason": "send_failed"})
    start_at_zero(made.candidate_errors, {"stage": "canary"}, {"stage": "shadow"})
    start_at_zero(made.shadow_compared, {"agreed": "true"}, {"agreed": "false"})
    return made


@dataclass
class LoopMetrics:
    labels: Any  # teacher labels written
    teacher_compared: Any  # teacher labels vs the served answer, by model_version and agreed
    labeler_lag_s: Any  # seconds from a sampled prediction to its teacher label (newest batch)
    dead_letters: Any  # messages sent to the dead-letter topic, by source
    stored_rows: Any  # rows written to the example store, by kind
    rounds: Any  # distillation rounds, by trigger and outcome
    current_version: Any  # promoted student version
    drift_share: Any  # share of drifted columns, training window vs recent traffic, by kind
    disagreement: Any  # teacher–student disagreement, recent window, served version
    negative_feedback: Any  # share of recent ratings that are bad
    labels_since_round: Any  # teacher labels since the last round
    rollout_stage: Any  # 0 none, 1 shadow, 2 canary
    rollout_transitions: Any  # by what was entered: shadow, canary, widened, promoted, rolled_back
    round_progress: Any  # share of the running round done, 0-1
    round_loss: Any  # its running mean training loss
    round_examples_per_s: Any  # its throughput, all workers together
    teacher_tokens: Any  # tokens the teacher endpoint reported, by teacher_id and kind
    teacher_request_s: Any  # one teacher HTTP request, seconds, by teacher_id
    teacher_cache_hits: Any  # texts answered from the label cache, by teacher_id
    teacher_retries: Any  # teacher requests retried (429, 5xx, timeouts), by teacher_id
    teacher_up: Any  # 1 while the teacher's breaker lets calls through, 0 while it is open
    teacher_mix_share: Any  # an ensemble: each member's share of the labeler's mix
    teacher_similarity: Any  # generate: chrF of the served reply against the teacher's, 0-100


def loop_metrics() -> LoopMetrics:
    from ray.util import metrics

    return LoopMetrics(
        labels=metrics.Counter("distillery_teacher_labels_total", "Teacher labels written."),
        teacher_compared=metrics.Counter(
            "distillery_teacher_compared_total",
            "Teacher labels compared with the student's served answer.",
            tag_keys=_tags("model_version", "agreed"),
        ),
        labeler_lag_s=metrics.Gauge(
            "distillery_labeler_lag_seconds",
            "Seconds from a sampled prediction to its teacher label, newest batch.",
        ),
        dead_letters=metrics.Counter(
            "distillery_dead_letters_total", "Messages dead-lettered.", tag_keys=_tags("topic")
        ),
        stored_rows=metrics.Counter(
            "distillery_store_rows_total",
            "Rows written to the example store.",
            tag_keys=_tags("kind"),
        ),
        rounds=metrics.Counter(
            "distillery_rounds_total",
            "Distillation rounds, by the trigger that started them and their outcome.",
            tag_keys=_tags("trigger", "outcome"),
        ),
        current_version=metrics.Gauge("distillery_current_version", "Promoted student version."),
        drift_share=metrics.Gauge(
            "distillery_drift_share",
            "Share of drifted columns (Evidently), training window vs recent traffic, by kind: "
            "features, embedding, prediction.",
            tag_keys=_tags("kind"),
        ),
        disagreement=metrics.Gauge(
            "distillery_teacher_disagreement_ratio",
            "Teacher-student disagreement on recent sampled traffic, served version, 0-1.",
        ),
        negative_feedback=metrics.Gauge(
            "distillery_feedback_negative_ratio", "Share of recent ratings that are bad, 0-1."
        ),
        labels_since_round=metrics.Gauge(
            "distillery_labels_since_round", "Teacher labels since the last round."
        ),
        rollout_stage=metrics.Gauge(
            "distillery_rollout_stage", "Rollout stage: 0 none, 1 shadow, 2 canary."
        ),
        rollout_transitions=metrics.Counter(
            "distillery_rollout_transitions_total",
            "Rollout transitions, by what was entered "
            "(shadow, canary, widened, promoted, rolled_back).",
            tag_keys=_tags("to"),
        ),
        round_progress=metrics.Gauge(
            "distillery_round_progress_ratio", "Share of the running distillation round done, 0-1."
        ),
        round_loss=metrics.Gauge("distillery_round_loss", "Running round: mean training loss."),
        round_examples_per_s=metrics.Gauge(
            "distillery_round_examples_per_second", "Running round: examples/s, all workers."
        ),
        teacher_tokens=metrics.Counter(
            "distillery_teacher_tokens_total",
            "Tokens the teacher endpoint reported, by kind (prompt, completion).",
            tag_keys=_tags("teacher_id", "kind"),
        ),
        teacher_request_s=metrics.Histogram(
            "distillery_teacher_request_duration_seconds",
            "One teacher HTTP request, seconds.",
            boundaries=TEACHER_BOUNDARIES_S,
            tag_keys=_tags("teacher_id"),
        ),
        teacher_cache_hits=metrics.Counter(
            "distillery_teacher_cache_hits_total",
            "Texts answered from the teacher label cache.",
            tag_keys=_tags("teacher_id"),
        ),
        teacher_retries=metrics.Counter(
            "distillery_teacher_retries_total",
            "Teacher requests retried after a 429, a 5xx or a timeout.",
            tag_keys=_tags("teacher_id"),
        ),
        teacher_up=metrics.Gauge(
            "distillery_teacher_up",
            "1 while the teacher's circuit breaker lets calls through, 0 while it is open.",
            tag_keys=_tags("teacher_id"),
        ),
        teacher_mix_share=metrics.Gauge(
            "distillery_teacher_mix_share",
            "An ensemble teacher: each member's share of the labeler's mix.",
            tag_keys=_tags("teacher_id"),
        ),
        teacher_similarity=metrics.Histogram(
            "distillery_teacher_similarity",
            "Generate tasks: chrF (0-100) of the served reply against the teacher's reply.",
            boundaries=[10, 20, 30, 40, 50, 60, 70, 80, 90],
            tag_keys=_tags("model_version"),
        ),
    )
