"""Settings from the environment: validation errors name the field and value, Kafka aliases."""

from __future__ import annotations

from pathlib import Path

import pytest
from pydantic import ValidationError

from distillery.settings import (
    KafkaSettings,
    PathSettings,
    ServeSettings,
    Settings,
    StudentSettings,
    TrainSettings,
)


@pytest.fixture(autouse=True)
def _clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("KAFKA_BOOTSTRAP_SERVERS", "DISTILLERY_KAFKA_BOOTSTRAP_SERVERS"):
        monkeypatch.delenv(name, raising=False)


def test_bad_env_value_names_field_and_value(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DISTILLERY_SERVE_SAMPLE_RATE", "1.5")
    with pytest.raises(ValidationError) as info:
        ServeSettings()
    text = str(info.value)
    assert "sample_rate" in text
    assert "1.5" in text
    assert info.value.errors()[0]["loc"] == ("sample_rate",)


def test_bad_env_value_fails_the_whole_settings(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DISTILLERY_TRAIN_HOLDOUT_FRACTION", "1")
    with pytest.raises(ValidationError, match="holdout_fraction"):
        Settings()


def test_good_env_values_are_read_and_typed(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DISTILLERY_SERVE_SAMPLE_RATE", "0.75")
    monkeypatch.setenv("DISTILLERY_SERVE_PORT", "9001")
    monkeypatch.setenv("DISTILLERY_TRAIN_EPOCHS", "5")
    settings = Settings()
    assert settings.serve.sample_rate == 0.75
    assert settings.serve.port == 9001
    assert settings.train.epochs == 5
    assert ServeSettings().max_items == 64  # untouched fields keep their defaults


def test_env_prefixes_do_not_leak_between_components(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DISTILLERY_SERVE_MAX_TOKENS", "64")
    settings = Settings()
    assert settings.serve.max_tokens == 64
    assert settings.teacher.max_tokens == 128


def test_kafka_bootstrap_servers_from_plain_env(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("KAFKA_BOOTSTRAP_SERVERS", "broker-1:9092,broker-2:9092")
    kafka = KafkaSettings()
    assert kafka.bootstrap_servers == "broker-1:9092,broker-2:9092"
    assert kafka.servers() == "broker-1:9092,broker-2:9092"


def test_kafka_bootstrap_servers_from_prefixed_env(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DISTILLERY_KAFKA_BOOTSTRAP_SERVERS", "localhost:19092")
    assert KafkaSettings().servers() == "localhost:19092"


def test_kafka_bootstrap_servers_by_name() -> None:
    assert KafkaSettings(bootstrap_servers="h:1").servers() == "h:1"


@pytest.mark.parametrize("value", [None, ""])
def test_servers_raises_when_unset(value: str | None) -> None:
    kafka = KafkaSettings(bootstrap_servers=value)
    with pytest.raises(ValueError, match="KAFKA_BOOTSTRAP_SERVERS is not set"):
        kafka.servers()


def test_servers_raises_with_nothing_in_env() -> None:
    assert KafkaSettings().bootstrap_servers is None
    with pytest.raises(ValueError, match="KAFKA_BOOTSTRAP_SERVERS"):
        KafkaSettings().servers()


def test_heads_must_divide_hidden() -> None:
    with pytest.raises(ValidationError, match=r"heads=3 must divide hidden=16"):
        StudentSettings(hidden=16, heads=3)
    assert StudentSettings(hidden=16, heads=4).heads == 4


def test_heads_must_divide_hidden_from_env(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DISTILLERY_STUDENT_HIDDEN", "24")
    monkeypatch.setenv("DISTILLERY_STUDENT_HEADS", "5")
    with pytest.raises(ValidationError, match=r"heads=5 must divide hidden=24"):
        StudentSettings()


def test_paths_are_made_absolute(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("DISTILLERY_STATE_DIR", "somewhere")
    paths = PathSettings()
    assert paths.state_dir == tmp_path.resolve() / "somewhere"
    assert paths.registry_dir == paths.state_dir / "registry"
    assert paths.store_dir == paths.state_dir / "store"


@pytest.mark.parametrize(
    ("cls", "kwargs", "field"),
    [
        (ServeSettings, {"port": 0}, "port"),
        (ServeSettings, {"feedback_secret": "short"}, "feedback_secret"),
        (TrainSettings, {"kd_temperature": 0}, "kd_temperature"),
        (KafkaSettings, {"partitions": 65}, "partitions"),
    ],
)
def test_out_of_range_values_name_the_field(cls: type, kwargs: dict, field: str) -> None:
    with pytest.raises(ValidationError) as info:
        cls(**kwargs)
    assert info.value.errors()[0]["loc"] == (field,)


def test_max_tokens_beyond_the_students_positions_is_refused() -> None:
    from distillery.settings import ServeSettings, Settings, StudentSettings

    with pytest.raises(ValidationError, match=r"max_tokens=128 exceeds student\.max_positions=64"):
        Settings(serve=ServeSettings(max_tokens=128), student=StudentSettings(max_positions=64))


def test_cpu_plan_refuses_a_loop_that_cannot_run_serving_and_a_round_at_once() -> None:
    from services.launcher import check_cpu_plan, cpu_plan

    settings = Settings()
    assert cpu_plan(settings) == {
        "serve": 0.5, "labeler": 0.5, "store+scheduler": 0.2, "round": 0.5,
    }  # fmt: skip
    check_cpu_plan(settings, 2.0)
    two = settings.model_copy(
        update={"train": settings.train.model_copy(update={"num_workers": 2, "worker_cpus": 0.4})}
    )
    check_cpu_plan(two, 2.0)  # two Ray Train workers fit beside Serve on this 2-core machine
    big = settings.model_copy(
        update={"train": settings.train.model_copy(update={"num_workers": 2, "worker_cpus": 1.0})}
    )
    with pytest.raises(ValueError, match=r"needs 3\.2 CPUs at once \(.*round 2\) but the cluster"):
        check_cpu_plan(big, 2.0)
