"""The example overlay's alert rules, checked and unit-tested by promtool
(deploy/prometheus/alerts.test.yaml: each alert fires on its story and not on a look-alike)."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

from .conftest import REPO, tool

pytestmark = pytest.mark.timeout(120)

RULE = REPO / "deploy" / "k8s" / "overlays" / "example" / "prometheusrule.yaml"
RULE_TESTS = REPO / "deploy" / "prometheus" / "alerts.test.yaml"
ALERTS = {
    "PgKafkaSinkLagGrowing",
    "PgKafkaSinkDataStale",
    "PgKafkaSinkNoCommit",
    "PgKafkaSinkDeadLetters",
    "PgKafkaSinkRetriesLooping",
    "PgKafkaSinkKafkaDown",
    "PgKafkaSinkDatabaseDown",
    "PgKafkaSinkNotReady",
}


def rules_beside_tests(tmp_path: Path, rule: dict[str, object]) -> Path:
    """The PrometheusRule's spec as a Prometheus rule file, next to a copy of the unit tests."""
    (tmp_path / "alerts.rules.yaml").write_text(yaml.safe_dump(rule["spec"]), encoding="utf-8")
    return Path(shutil.copy(RULE_TESTS, tmp_path / "alerts.test.yaml"))


def promtool(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [tool("promtool"), *args], cwd=cwd, check=False, capture_output=True, text=True, timeout=60
    )


def test_every_alert_has_a_unit_test_that_fires_it() -> None:
    (rule,) = yaml.safe_load_all(RULE.read_text(encoding="utf-8"))
    alerts = {r["alert"] for group in rule["spec"]["groups"] for r in group["rules"]}
    assert alerts == ALERTS
    tests = yaml.safe_load(RULE_TESTS.read_text(encoding="utf-8"))["tests"]
    fired = {
        case["alertname"]
        for test in tests
        for case in test.get("alert_rule_test", [])
        if case["exp_alerts"]
    }
    assert fired == ALERTS


def test_promtool_unit_tests_of_the_alert_rules_pass(tmp_path: Path) -> None:
    (rule,) = yaml.safe_load_all(RULE.read_text(encoding="utf-8"))
    tests = rules_beside_tests(tmp_path, rule)
    checked = promtool("check", "rules", "alerts.rules.yaml", cwd=tmp_path)
    assert checked.returncode == 0, checked.stdout + checked.stderr
    result = promtool("test", "rules", tests.name, cwd=tmp_path)
    assert result.returncode == 0, result.stdout + result.stderr


def test_the_unit_tests_fail_when_a_threshold_changes(tmp_path: Path) -> None:
    """The quiet cases are real: a dead-letter threshold of 0.1/s makes the 0.5/s case fire."""
    (rule,) = yaml.safe_load_all(RULE.read_text(encoding="utf-8"))
    for group in rule["spec"]["groups"]:
        for r in group["rules"]:
            if r["alert"] == "PgKafkaSinkDeadLetters":
                r["expr"] = r["expr"].replace("> 1", "> 0.1")
    tests = rules_beside_tests(tmp_path, rule)
    result = promtool("test", "rules", tests.name, cwd=tmp_path)
    assert result.returncode != 0
    assert "PgKafkaSinkDeadLetters" in result.stdout + result.stderr
