"""Settings from the environment: validation errors name the field and value, Kafka aliases."""

from __future__ import annotations

import json
from pathlib import Path
from typing import ClassVar

import pytest
from pydantic import ValidationError

from distillery.contracts import StudentConfig
from distillery.settings import (
    KafkaSettings,
    PathSettings,
    ServeSettings,
    Settings,
    StudentSettings,
    TeacherSettings,
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
    from cli.launcher import check_cpu_plan, cpu_plan

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


# Kafka security: the client options per protocol, refused combinations, and every client.

_SECURITY_ENV = [
    f"DISTILLERY_KAFKA_{name.upper()}"
    for name in (
        "security_protocol", "sasl_mechanism", "sasl_username", "sasl_password",
        "ssl_cafile", "ssl_certfile", "ssl_keyfile",
    )
]  # fmt: skip


@pytest.fixture
def no_kafka_security(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in _SECURITY_ENV:
        monkeypatch.delenv(name, raising=False)


def _pem(folder: Path, name: str) -> Path:
    path = folder / name
    path.write_text("-----BEGIN CERTIFICATE-----\n")
    return path


def test_plaintext_options_name_only_the_protocol(no_kafka_security: None) -> None:
    assert KafkaSettings().client_options() == {"security_protocol": "PLAINTEXT"}


def test_ssl_options_carry_the_tls_files(no_kafka_security: None, tmp_path: Path) -> None:
    ca, cert, key = (_pem(tmp_path, n) for n in ("ca.pem", "client.pem", "client.key"))
    kafka = KafkaSettings(
        security_protocol="SSL", ssl_cafile=ca, ssl_certfile=cert, ssl_keyfile=key
    )
    assert kafka.client_options() == {
        "security_protocol": "SSL",
        "ssl_cafile": str(ca),
        "ssl_certfile": str(cert),
        "ssl_keyfile": str(key),
    }


def test_sasl_ssl_options_from_the_environment(
    monkeypatch: pytest.MonkeyPatch, no_kafka_security: None, tmp_path: Path
) -> None:
    ca = _pem(tmp_path, "ca.crt")
    monkeypatch.setenv("DISTILLERY_KAFKA_SECURITY_PROTOCOL", "SASL_SSL")
    monkeypatch.setenv("DISTILLERY_KAFKA_SASL_MECHANISM", "SCRAM-SHA-512")
    monkeypatch.setenv("DISTILLERY_KAFKA_SASL_USERNAME", "distillery")
    monkeypatch.setenv("DISTILLERY_KAFKA_SASL_PASSWORD", "s3cret-pass")
    monkeypatch.setenv("DISTILLERY_KAFKA_SSL_CAFILE", str(ca))
    assert KafkaSettings().client_options() == {
        "security_protocol": "SASL_SSL",
        "sasl_mechanism": "SCRAM-SHA-512",
        "sasl_plain_username": "distillery",
        "sasl_plain_password": "s3cret-pass",
        "ssl_cafile": str(ca),
    }


@pytest.mark.parametrize("mechanism", ["PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512"])
def test_sasl_plaintext_options_have_no_tls(no_kafka_security: None, mechanism: str) -> None:
    kafka = KafkaSettings(
        security_protocol="SASL_PLAINTEXT",
        sasl_mechanism=mechanism,
        sasl_username="u",
        sasl_password="p",
    )
    assert kafka.client_options() == {
        "security_protocol": "SASL_PLAINTEXT",
        "sasl_mechanism": mechanism,
        "sasl_plain_username": "u",
        "sasl_plain_password": "p",
    }


_SASL = {"sasl_mechanism": "PLAIN", "sasl_username": "u", "sasl_password": "p"}


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        (
            {"security_protocol": "SASL_SSL"},
            "security_protocol=SASL_SSL needs sasl_mechanism, sasl_username, sasl_password "
            "(DISTILLERY_KAFKA_SASL_MECHANISM, DISTILLERY_KAFKA_SASL_USERNAME, "
            "DISTILLERY_KAFKA_SASL_PASSWORD)",
        ),
        (
            {"security_protocol": "SASL_PLAINTEXT", **_SASL, "sasl_password": None},
            "security_protocol=SASL_PLAINTEXT needs sasl_password (DISTILLERY_KAFKA_SASL_PASSWORD)",
        ),
        (
            {"sasl_mechanism": "PLAIN"},
            "sasl_mechanism set but security_protocol=PLAINTEXT does not use SASL",
        ),
        (
            {"security_protocol": "SSL", **_SASL},
            "sasl_mechanism, sasl_username, sasl_password set but security_protocol=SSL does not",
        ),
        (
            {"security_protocol": "SASL_PLAINTEXT", **_SASL, "ssl_cafile": "/ca.pem"},
            "ssl_cafile set but security_protocol=SASL_PLAINTEXT does not use TLS",
        ),
        (
            {"security_protocol": "SSL", "ssl_keyfile": "/k.pem"},
            "ssl_keyfile=/k.pem needs ssl_certfile",
        ),
    ],
)
def test_bad_security_combinations_are_named(
    no_kafka_security: None, kwargs: dict, message: str
) -> None:
    import re

    with pytest.raises(ValidationError, match=re.escape(message)):
        KafkaSettings(**kwargs)


@pytest.mark.parametrize(
    ("field", "value"), [("security_protocol", "TLS"), ("sasl_mechanism", "GSSAPI")]
)
def test_unknown_protocol_or_mechanism_is_refused(
    no_kafka_security: None, field: str, value: str
) -> None:
    with pytest.raises(ValidationError) as info:
        KafkaSettings(**{field: value})
    assert info.value.errors()[0]["loc"] == (field,)


def test_missing_tls_file_is_named(no_kafka_security: None, tmp_path: Path) -> None:
    kafka = KafkaSettings(security_protocol="SSL", ssl_cafile=tmp_path / "nope.pem")
    with pytest.raises(FileNotFoundError, match=r"ssl_cafile=.*nope\.pem is not a file"):
        kafka.client_options()


def test_sasl_password_is_never_shown_nor_serialised(
    monkeypatch: pytest.MonkeyPatch, no_kafka_security: None
) -> None:
    kafka = KafkaSettings(security_protocol="SASL_SSL", **{**_SASL, "sasl_password": "hunter2"})
    assert "hunter2" not in repr(kafka)
    dumped = Settings(kafka=kafka).model_dump(mode="json")  # what a Serve config carries
    assert "sasl_password" not in dumped["kafka"]
    with pytest.raises(ValidationError) as info:  # a refused combination echoes no input
        KafkaSettings(sasl_password="hunter2")
    assert "hunter2" not in str(info.value)
    # A replica rebuilds its settings from the dump and reads the password from its own env.
    monkeypatch.setenv("DISTILLERY_KAFKA_SASL_PASSWORD", "hunter2")
    rebuilt = Settings.model_validate(dumped).kafka
    assert rebuilt.client_options()["sasl_plain_password"] == "hunter2"


class _Client:
    """Stands in for a kafka-python client: records its keyword arguments."""

    built: ClassVar[list[dict]] = []

    def __init__(self, **kwargs: object) -> None:
        _Client.built.append(kwargs)

    def list_topics(self) -> list[str]:
        return []

    def create_topics(self, topics: list) -> None:
        pass

    def assign(self, partitions: list) -> None:
        self.assigned = partitions

    def subscribe(self, topics: list, listener: object = None) -> None:
        self.subscribed = topics

    def partitions_for_topic(self, topic: str) -> set[int] | None:
        return {0} if _Client.built[-1].get("group_id") else None  # a reader finds no topic

    def close(self) -> None:
        pass


def test_every_kafka_client_gets_the_security_options(
    monkeypatch: pytest.MonkeyPatch, no_kafka_security: None
) -> None:
    from distillery import bus

    for name in ("KafkaAdminClient", "KafkaProducer", "KafkaConsumer"):
        monkeypatch.setattr(bus, name, _Client)
    _Client.built = []
    kafka = KafkaSettings(bootstrap_servers="k:9093", security_protocol="SASL_SSL", **_SASL)
    bus.ensure_topics(kafka)
    bus.missing_topics(kafka, ["t"])
    bus.make_producer(kafka)
    bus.make_producer(kafka, in_order=True)
    bus.make_consumer(kafka, "group", ["t"])
    assert bus.read_tail(kafka, "t", None) == []  # a reader outside any group
    assert len(_Client.built) == 6
    for kwargs in _Client.built:
        assert kwargs["bootstrap_servers"] == "k:9093"
        assert kwargs["security_protocol"] == "SASL_SSL"
        assert kwargs["sasl_plain_password"] == "p"


def test_no_kafka_client_is_built_outside_the_bus() -> None:
    """Every producer, consumer and admin client comes from ``distillery.bus``, which passes
    ``KafkaSettings.client_options()``; a client built elsewhere would skip TLS and SASL."""
    import ast

    root = Path(__file__).resolve().parents[2]
    clients = {"KafkaProducer", "KafkaConsumer", "KafkaAdminClient"}
    found = []
    folders = (
        "distillery",
        "models",
        "feedback",
        "training",
        "services",
        "monitoring",
        "cli",
        "bench",
    )
    folders += ("tests",)
    for folder in folders:
        for path in (root / folder).rglob("*.py"):
            for node in ast.walk(ast.parse(path.read_text())):
                func = node.func if isinstance(node, ast.Call) else None
                name = getattr(func, "id", None) or getattr(func, "attr", None)
                if name in clients:
                    found.append(f"{path.relative_to(root)}:{node.lineno}")
    assert found
    assert {f.split(":")[0] for f in found} == {"distillery/bus.py"}, found


def test_autoscaling_bounds_reach_serve_and_must_be_ordered() -> None:
    from services import deploy

    fixed = deploy.serve_config(Settings(), StudentConfig(version=1, path="/m"))["applications"][0][
        "deployments"
    ][0]
    assert fixed["num_replicas"] == 2 and "autoscaling_config" not in fixed
    scaled = Settings(serve=ServeSettings(num_replicas=2, max_replicas=6))
    (deployment,) = deploy.serve_config(scaled, StudentConfig(version=1, path="/m"))[
        "applications"
    ][0]["deployments"]
    assert "num_replicas" not in deployment
    assert deployment["autoscaling_config"] == {
        "min_replicas": 2, "max_replicas": 6, "target_ongoing_requests": 8.0,
    }  # fmt: skip
    with pytest.raises(ValidationError, match="max_replicas=1 is below num_replicas=2"):
        ServeSettings(num_replicas=2, max_replicas=1)


def test_teacher_url_must_be_http_and_names_the_value() -> None:
    from distillery.settings import TeacherSettings

    with pytest.raises(ValidationError, match="url='ftp://teacher' is not an http"):
        TeacherSettings(url="ftp://teacher")
    assert TeacherSettings(url="  ").url is None


def test_teacher_api_key_from_env_or_file_never_in_a_dump_or_the_serve_config(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from distillery.settings import Settings, TeacherSettings
    from services.deploy import serve_config

    monkeypatch.setenv("DISTILLERY_TEACHER_API_KEY", "sk-very-secret-1234")
    settings = Settings()
    assert settings.teacher.api_key_value() == "sk-very-secret-1234"
    config = json.dumps(serve_config(settings, StudentConfig(version=1, path=str(tmp_path))))
    assert "sk-very-secret" not in config and "sk-very-secret" not in repr(settings)
    monkeypatch.delenv("DISTILLERY_TEACHER_API_KEY")
    key = tmp_path / "key"
    key.write_text("sk-from-a-file\n")
    assert TeacherSettings(api_key_file=key).api_key_value() == "sk-from-a-file"
    with pytest.raises(FileNotFoundError, match="api_key_file="):
        TeacherSettings(api_key_file=tmp_path / "missing").api_key_value()


def test_an_llm_teacher_gets_a_budget_and_batch_it_can_keep_up_with() -> None:
    from distillery.settings import TeacherSettings

    assert TeacherSettings().labels_per_min() == 1200 and TeacherSettings().labeler_batch() == 32
    llm = TeacherSettings(kind="llm")
    assert llm.labels_per_min() == 60 and llm.labeler_batch() == 8
    assert TeacherSettings(kind="llm", budget_per_min=5).labels_per_min() == 5


def test_a_consumer_joins_its_group_or_on_the_embedded_broker_takes_every_partition(
    monkeypatch: pytest.MonkeyPatch, no_kafka_security: None
) -> None:
    """The labeler's and the store's consumer: in a group by default (several labelers share
    the partitions); with membership "assign" (the embedded tansu, whose group coordinator
    wedged after restarts) no membership, offsets still committed under the group."""
    from distillery import bus

    monkeypatch.setattr(bus, "KafkaConsumer", _Client)
    _Client.built = []
    grouped = bus.make_consumer(KafkaSettings(bootstrap_servers="k:9092"), "g", ["a"])
    assert grouped.subscribed == ["a"] and not hasattr(grouped, "assigned")
    taken: list = []
    kafka = KafkaSettings(bootstrap_servers="k:9092", membership="assign")
    consumer = bus.make_consumer(kafka, "the-group", ["a", "b"], on_assigned=taken.append)
    assert [(tp.topic, tp.partition) for tp in consumer.assigned] == [("a", 0), ("b", 0)]
    assert taken == [consumer.assigned] and not hasattr(consumer, "subscribed")
    assert _Client.built[1]["group_id"] == "the-group"
    assert _Client.built[1]["enable_auto_commit"] is False
    with pytest.raises(ValidationError, match="membership"):
        KafkaSettings(bootstrap_servers="k:9092", membership="steal")


def test_the_labelers_kernel_cache_is_off_unless_set(monkeypatch: pytest.MonkeyPatch) -> None:
    assert TeacherSettings().labeler_env() == {"ONEDNN_PRIMITIVE_CACHE_CAPACITY": "0"}
    monkeypatch.setenv("DISTILLERY_TEACHER_LABELER_KERNEL_CACHE", "256")
    assert TeacherSettings().labeler_env() == {"ONEDNN_PRIMITIVE_CACHE_CAPACITY": "256"}
    assert TeacherSettings(labeler_kernel_cache=None).labeler_env() == {}
    monkeypatch.setenv("DISTILLERY_TEACHER_LABELER_KERNEL_CACHE", "-1")
    with pytest.raises(ValidationError, match="labeler_kernel_cache"):
        TeacherSettings()
