"""Prometheus rules, config and Grafana dashboard, checked offline with the real `promtool`:
the rules and config load, every alert fires and stays quiet in promtool's unit tests, and every
dashboard query is valid PromQL on metrics the code defines."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.conftest import ROOT

PROMETHEUS = ROOT / "deploy" / "prometheus"
RULES = PROMETHEUS / "rules" / "distillery.yml"
RULE_TESTS = sorted((PROMETHEUS / "tests").glob("*.yml"))
GRAFANA = ROOT / "deploy" / "grafana"
DASHBOARD = GRAFANA / "dashboards" / "distillery.json"
CODE_DIRS = ["distillery", "models", "feedback", "training", "services", "monitoring", "cli"]
GRAFANA_VARIABLE = re.compile(r"\$__(rate_interval|interval|range)\b")
METRIC = re.compile(r"\bray_(distillery_\w+)")
RECORDED = re.compile(r"\bdistillery:[\w:]+")
HISTOGRAM_SUFFIX = re.compile(r"_(bucket|sum|count)$")


@pytest.fixture(scope="module")
def promtool() -> str:
    path = shutil.which("promtool")
    if path is None:
        pytest.fail(
            "promtool not found: `make test` installs it (Debian package `prometheus`, "
            "via `make debs`); or run `apt-get install prometheus` as root"
        )
    return path


def _run(*args: str) -> str:
    done = subprocess.run(args, capture_output=True, text=True, timeout=60, cwd=PROMETHEUS)
    output = done.stdout + done.stderr
    assert done.returncode == 0, f"{' '.join(args)} exited {done.returncode}:\n{output}"
    return output


def _rules() -> list[dict[str, Any]]:
    groups = yaml.safe_load(RULES.read_text())["groups"]
    return [rule for group in groups for rule in group["rules"]]


def _alerts() -> dict[str, dict[str, Any]]:
    return {rule["alert"]: rule for rule in _rules() if "alert" in rule}


def _panels() -> list[dict[str, Any]]:
    panels: list[dict[str, Any]] = json.loads(DASHBOARD.read_text())["panels"]
    return [panel for panel in panels if panel["type"] != "row"]


def _dashboard_exprs() -> list[str]:
    """Every target's expr, with Grafana's interval variables replaced as Grafana would."""
    return [
        GRAFANA_VARIABLE.sub("1m", target["expr"])
        for panel in _panels()
        for target in panel["targets"]
    ]


def _minutes(duration: str) -> int:
    match = re.fullmatch(r"(?:(\d+)h)?(?:(\d+)m)?", duration)
    assert match and duration, f"unexpected duration {duration!r}"
    return int(match.group(1) or 0) * 60 + int(match.group(2) or 0)


def test_rules_file_is_valid(promtool: str) -> None:
    output = _run(promtool, "check", "rules", str(RULES))
    assert f"SUCCESS: {len(_rules())} rules found" in output, output


def test_promtool_unit_tests_pass(promtool: str) -> None:
    assert len(RULE_TESTS) >= 2, RULE_TESTS
    output = _run(promtool, "test", "rules", *map(str, RULE_TESTS))
    assert output.count("SUCCESS") == len(RULE_TESTS), output
    assert "FAILED" not in output


def test_config_is_valid_and_loads_the_rules(promtool: str) -> None:
    output = _run(promtool, "check", "config", str(PROMETHEUS / "prometheus.yml"))
    assert "SUCCESS: 1 rule files found" in output, output
    assert f"SUCCESS: {len(_rules())} rules found" in output, output


def test_config_scrapes_both_ray_nodes_of_the_compose_network() -> None:
    config = yaml.safe_load((PROMETHEUS / "prometheus.yml").read_text())
    jobs = {job["job_name"]: job for job in config["scrape_configs"]}
    targets = {t for group in jobs["distillery"]["static_configs"] for t in group["targets"]}
    assert targets == {"ray-head:8080", "ray-worker:8080"}
    assert config["rule_files"] == ["rules/*.yml"]


def test_the_asked_for_alerts_exist_with_their_thresholds() -> None:
    alerts = _alerts()
    expected = {
        "StudentDisagreementHigh": ("ray_distillery_teacher_disagreement_ratio", "> 0.3"),
        "DriftHigh": ("ray_distillery_drift_share", "> 0.5"),
        "LabelerLagHigh": ("ray_distillery_labeler_lag_seconds", "> 300"),
        "RollbackHappened": ('ray_distillery_rollout_transitions_total{to="rolled_back"}', "> 0"),
        "FeedbackNegativeShareHigh": ("ray_distillery_feedback_negative_ratio", "> 0.3"),
    }
    for name, (metric, threshold) in expected.items():
        assert metric in alerts[name]["expr"], name
        assert threshold in alerts[name]["expr"], name


def test_every_alert_has_for_severity_and_annotations_naming_the_value() -> None:
    for name, rule in _alerts().items():
        assert "for" in rule, name
        _minutes(rule["for"])
        assert rule["labels"]["severity"] in {"critical", "warning", "info"}, name
        annotations = rule["annotations"]
        assert annotations["summary"] and annotations["description"], name
        if not rule["expr"].startswith("absent("):
            assert "$value" in annotations["summary"] + annotations["description"], name


def _alert_cases() -> dict[str, list[list[tuple[int, bool]]]]:
    """alertname → per promtool test: (eval minute, expected firing) in eval order."""
    cases: dict[str, list[list[tuple[int, bool]]]] = {}
    for path in RULE_TESTS:
        for test in yaml.safe_load(path.read_text())["tests"]:
            per_alert: dict[str, list[tuple[int, bool]]] = {}
            for case in test.get("alert_rule_test", []):
                evals = per_alert.setdefault(case["alertname"], [])
                evals.append((_minutes(case["eval_time"]), bool(case.get("exp_alerts"))))
            for name, evals in per_alert.items():
                cases.setdefault(name, []).append(evals)
    return cases


def test_every_alert_is_tested_firing_not_firing_and_pending() -> None:
    cases = _alert_cases()
    for name, rule in _alerts().items():
        evals = [e for test in cases.get(name, []) for e in test]
        assert any(firing for _, firing in evals), f"{name}: no test where it fires"
        assert any(not firing for _, firing in evals), f"{name}: no test where it is quiet"
        if _minutes(rule["for"]) > 0:  # quiet, then firing later in the same test: the wait
            assert any(
                any(not f1 and f2 and t1 < t2 for t1, f1 in test for t2, f2 in test)
                for test in cases[name]
            ), f"{name}: `for: {rule['for']}` never tested as pending before firing"


def test_every_firing_expectation_checks_the_rendered_annotations() -> None:
    for path in RULE_TESTS:
        for test in yaml.safe_load(path.read_text())["tests"]:
            for case in test.get("alert_rule_test", []):
                for alert in case.get("exp_alerts") or []:
                    assert set(alert.get("exp_annotations", {})) == {"summary", "description"}, (
                        test["name"],
                        case["alertname"],
                    )


def test_dashboard_queries_are_valid_promql(promtool: str, tmp_path: Path) -> None:
    exprs = _dashboard_exprs()
    assert not [e for e in exprs if "$" in e], "a Grafana variable the checks do not replace"
    rules = [{"record": f"dashboard:query_{i}", "expr": e} for i, e in enumerate(exprs)]
    path = tmp_path / "dashboard.yml"
    path.write_text(yaml.safe_dump({"groups": [{"name": "dashboard", "rules": rules}]}))
    output = _run(promtool, "check", "rules", str(path))
    assert f"SUCCESS: {len(exprs)} rules found" in output, output


def test_dashboard_covers_what_operators_need() -> None:
    exprs = "\n".join(_dashboard_exprs())
    for needed in [
        "histogram_quantile(0.99, sum by (le) (rate(ray_distillery_request_duration_seconds",
        "sum by (model_version) (rate(ray_distillery_predictions_total",
        "sum by (label) (rate(ray_distillery_predictions_total",
        "ray_distillery_batch_size_bucket",
        "sum by (reason) (rate(ray_distillery_sampled_total",
        "sum by (reason) (rate(ray_distillery_sample_skipped_total",
        "ray_distillery_labeler_lag_seconds",
        "rate(ray_distillery_teacher_labels_total",
        "ray_distillery_teacher_disagreement_ratio",
        "distillery:teacher_disagreement:ratio5m",
        "max by (kind) (ray_distillery_drift_share)",
        "ray_distillery_feedback_total",
        "ray_distillery_feedback_negative_ratio",
        "sum by (trigger, outcome) (ray_distillery_rounds_total)",
        "ray_distillery_rollout_stage",
        "sum by (to) (ray_distillery_rollout_transitions_total)",
        "ray_distillery_current_version",
        "ray_distillery_round_progress_ratio",
    ]:
        assert needed in exprs, needed


def test_dashboard_panels_use_the_provisioned_datasource_and_do_not_overlap() -> None:
    dashboard = json.loads(DASHBOARD.read_text())
    assert dashboard["uid"] == "distillery" and dashboard["schemaVersion"] >= 39
    cells: dict[tuple[int, int], str] = {}
    for panel in _panels():
        assert panel["type"] in {"timeseries", "stat", "gauge", "bargauge"}, panel["title"]
        assert panel["datasource"]["uid"] == "prometheus", panel["title"]
        assert panel["targets"], panel["title"]
        refs = [t["refId"] for t in panel["targets"]]
        assert len(set(refs)) == len(refs), panel["title"]
        for target in panel["targets"]:
            assert target["datasource"] == {"type": "prometheus", "uid": "prometheus"}
        grid = panel["gridPos"]
        assert grid["x"] + grid["w"] <= 24, panel["title"]
        for x in range(grid["x"], grid["x"] + grid["w"]):
            for y in range(grid["y"], grid["y"] + grid["h"]):
                assert (x, y) not in cells, f"{panel['title']} overlaps {cells[(x, y)]}"
                cells[(x, y)] = panel["title"]


def test_grafana_provisioning_points_at_prometheus_and_the_dashboards() -> None:
    provisioning = GRAFANA / "provisioning"
    sources = yaml.safe_load((provisioning / "datasources" / "prometheus.yml").read_text())
    (source,) = sources["datasources"]
    assert (source["uid"], source["type"]) == ("prometheus", "prometheus")
    assert source["url"] == "http://prometheus:9090"
    providers = yaml.safe_load((provisioning / "dashboards" / "distillery.yml").read_text())
    (provider,) = providers["providers"]
    assert provider["type"] == "file"
    assert provider["options"]["path"] == "/var/lib/grafana/dashboards"


def _metric_names(text: str) -> set[str]:
    return set(METRIC.findall(text))


def _defined_in_code() -> set[str]:
    names: set[str] = set()
    for folder in CODE_DIRS:
        for path in (ROOT / folder).rglob("*.py"):
            names |= set(re.findall(r"[\"'](distillery_\w+)[\"']", path.read_text()))
    return names


def test_every_queried_metric_is_defined_in_the_code() -> None:
    queried = _metric_names(RULES.read_text()) | _metric_names(DASHBOARD.read_text())
    defined = _defined_in_code()
    unknown = sorted(
        name
        for name in queried
        if name not in defined and HISTOGRAM_SUFFIX.sub("", name) not in defined
    )
    assert len(queried) >= 25, sorted(queried)
    assert not unknown, f"queried but not defined in {CODE_DIRS}: {unknown}"


def test_the_dashboard_uses_every_recorded_series_and_no_other() -> None:
    recorded = {rule["record"] for rule in _rules() if "record" in rule}
    used = set(RECORDED.findall("\n".join(_dashboard_exprs())))
    assert recorded, "no recording rule"
    assert used == recorded


def test_alerts_read_raw_series_not_recorded_ones() -> None:
    """Groups are evaluated independently: an alert on a recorded series lags it."""
    for name, rule in _alerts().items():
        assert not RECORDED.findall(rule["expr"]), name


def test_no_dashboard_query_patches_a_missing_series_with_zero() -> None:
    """``or vector(0)`` turns "nobody exports this" into a quiet 0, so the live check that every
    query has data (tests/integration/test_watch.py) could not fail for it; the rare counters
    start at 0 instead (distillery.metrics.start_at_zero)."""
    patched = [e for e in _dashboard_exprs() if "vector(0)" in e]
    assert not patched, patched
