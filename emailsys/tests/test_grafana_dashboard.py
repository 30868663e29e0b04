"""deploy/grafana/emailsys.json is a Grafana dashboard that loads and whose every query names metrics (and labels)
that our /metrics really serves: checked against Grafana's documented dashboard JSON model (a strict JSON schema
of the parts we use, https://grafana.com/docs/grafana/latest/dashboards/build-dashboards/view-dashboard-json-model/)
and against a live scrape. The compose profile `monitoring` mounts it with its provisioning files."""

import json
import re
from pathlib import Path

import jsonschema
import pytest
import yaml
from prometheus_client.parser import text_string_to_metric_families

from campaigns.metrics import FAMILIES
from campaigns.tests.scenarios import campaign_scenario
from emailsys.metrics import task_record_finished

ROOT = Path(__file__).resolve().parents[2]
GRAFANA = ROOT / "deploy" / "grafana"
DASHBOARD = GRAFANA / "emailsys.json"

DATASOURCE = {"type": "object", "required": ["type", "uid"], "additionalProperties": False,
              "properties": {"type": {"type": "string"}, "uid": {"type": "string"}}}  # fmt: skip
TARGET = {
    "type": "object",
    "required": ["refId", "expr", "datasource"],
    "additionalProperties": False,
    "properties": {
        "refId": {"type": "string", "pattern": "^[A-Z]$"},
        "expr": {"type": "string", "minLength": 1},
        "legendFormat": {"type": "string"},
        "datasource": DATASOURCE,
        "format": {"enum": ["time_series", "table", "heatmap"]},
        "instant": {"type": "boolean"},
    },
}
INTEGER = {"type": "integer", "minimum": 0}
GRID_POS = {
    "type": "object",
    "required": ["h", "w", "x", "y"],
    "additionalProperties": False,
    "properties": {
        "h": {**INTEGER, "minimum": 1},
        "w": {**INTEGER, "minimum": 1, "maximum": 24},
        "x": {**INTEGER, "maximum": 23},
        "y": INTEGER,
    },  # fmt: skip
}
PANEL = {
    "type": "object",
    "required": ["id", "type", "title", "gridPos"],
    "additionalProperties": False,
    "properties": {
        "id": {"type": "integer", "minimum": 1},
        "type": {"enum": ["row", "timeseries", "stat", "gauge", "bargauge", "table", "text"]},
        "title": {"type": "string", "minLength": 1},
        "description": {"type": "string"},
        "gridPos": GRID_POS,
        "datasource": DATASOURCE,
        "targets": {"type": "array", "minItems": 1, "items": TARGET},
        "fieldConfig": {
            "type": "object",
            "required": ["defaults", "overrides"],
            "additionalProperties": False,
            "properties": {"defaults": {"type": "object"}, "overrides": {"type": "array"}},
        },  # fmt: skip
        "options": {"type": "object"},
        "collapsed": {"type": "boolean"},
        "panels": {"type": "array", "maxItems": 0},
    },
    "if": {"properties": {"type": {"const": "row"}}},
    "then": {"required": ["collapsed", "panels"]},
    "else": {"required": ["datasource", "targets", "fieldConfig"]},
}
VARIABLE = {
    "type": "object",
    "required": ["name", "type", "datasource", "query", "includeAll", "multi", "refresh"],
    "properties": {
        "name": {"type": "string", "pattern": "^[a-z_]+$"},
        "type": {"const": "query"},
        "datasource": DATASOURCE,
        "refresh": {"enum": [0, 1, 2]},
    },  # fmt: skip
}
DASHBOARD_SCHEMA = {
    "$schema": "https://json-schema.org/draft/2020-12/schema",
    "type": "object",
    "required": ["uid", "title", "schemaVersion", "version", "time", "panels", "templating", "annotations"],
    "additionalProperties": False,
    "properties": {
        "uid": {"type": "string", "pattern": "^[A-Za-z0-9_-]{1,40}$"},
        "title": {"type": "string", "minLength": 1},
        "description": {"type": "string"},
        "tags": {"type": "array", "items": {"type": "string"}},
        "timezone": {"enum": ["browser", "utc", ""]},
        "editable": {"type": "boolean"},
        "graphTooltip": {"enum": [0, 1, 2]},
        "refresh": {"type": "string", "pattern": "^([0-9]+[smhd])?$"},
        "schemaVersion": {"type": "integer", "minimum": 36},
        "version": {"type": "integer"},
        "time": {
            "type": "object",
            "required": ["from", "to"],
            "additionalProperties": False,
            "properties": {"from": {"type": "string"}, "to": {"type": "string"}},
        },  # fmt: skip
        "timepicker": {"type": "object"},
        "fiscalYearStartMonth": {"type": "integer", "minimum": 0, "maximum": 11},
        "liveNow": {"type": "boolean"},
        "weekStart": {"type": "string"},
        "annotations": {"type": "object", "required": ["list"], "properties": {"list": {"type": "array"}}},
        "templating": {
            "type": "object",
            "required": ["list"],
            "additionalProperties": False,
            "properties": {"list": {"type": "array", "items": VARIABLE}},
        },  # fmt: skip
        "links": {"type": "array"},
        "panels": {"type": "array", "minItems": 1, "items": PANEL},
    },
}

PROMQL_WORDS = {"by", "without", "on", "ignoring", "group_left", "group_right", "bool", "and", "or", "unless",
                "offset"}  # fmt: skip
SELECTOR = re.compile(r"([a-zA-Z_:][a-zA-Z0-9_:]*)\s*\{([^}]*)\}")
MATCHER = re.compile(r"([a-zA-Z_][a-zA-Z0-9_]*)\s*(?:=~|!~|!=|=)")


def dashboard() -> dict:
    return json.loads(DASHBOARD.read_text())


def expressions() -> list[str]:
    return [target["expr"] for panel in dashboard()["panels"] for target in panel.get("targets", [])]


def metric_names(expr: str) -> set[str]:
    """The metric names a PromQL expression selects: identifiers outside label matchers and grouping clauses,
    not functions (followed by "("), keywords or durations."""
    bare = re.sub(r'"[^"]*"', '""', expr)
    bare = re.sub(r"\{[^}]*\}", " ", bare)
    bare = re.sub(r"\b(by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)", " ", bare)
    bare = re.sub(r"\[[^\]]*\]", " ", bare)
    names = set()
    for match in re.finditer(r"[a-zA-Z_:][a-zA-Z0-9_:]*", bare):
        following = bare[match.end() :].lstrip()[:1]
        if following != "(" and match.group() not in PROMQL_WORDS:
            names.add(match.group())
    return names


def test_the_dashboard_follows_grafanas_dashboard_model() -> None:
    board = dashboard()
    jsonschema.Draft202012Validator.check_schema(DASHBOARD_SCHEMA)
    jsonschema.Draft202012Validator(DASHBOARD_SCHEMA).validate(board)
    panels = board["panels"]
    assert len({panel["id"] for panel in panels}) == len(panels), "panel ids repeat"
    cells: set[tuple[int, int]] = set()
    for panel in panels:
        grid = panel["gridPos"]
        assert grid["x"] + grid["w"] <= 24, panel["title"]
        mine = {
            (x, y) for x in range(grid["x"], grid["x"] + grid["w"]) for y in range(grid["y"], grid["y"] + grid["h"])
        }
        assert not cells & mine, f"{panel['title']} overlaps another panel"
        cells |= mine
        ref_ids = [target["refId"] for target in panel.get("targets", [])]
        assert len(set(ref_ids)) == len(ref_ids), panel["title"]
    datasources = yaml.safe_load((GRAFANA / "provisioning" / "datasources" / "prometheus.yml").read_text())
    uid = datasources["datasources"][0]["uid"]
    used = [panel["datasource"] for panel in panels if "datasource" in panel]
    used += [t["datasource"] for p in panels for t in p.get("targets", [])]
    used += [variable["datasource"] for variable in board["templating"]["list"]]
    assert all(source == {"type": "prometheus", "uid": uid} for source in used)
    variables = {variable["name"] for variable in board["templating"]["list"]}
    for expr in expressions():
        assert set(re.findall(r"\$(\w+)", expr)) <= variables, expr


def test_compose_monitoring_profile_provisions_prometheus_and_grafana_with_the_dashboard() -> None:
    compose = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
    services = compose["services"]
    assert services["prometheus"]["profiles"] == ["monitoring"] == services["grafana"]["profiles"]
    mounts = dict(volume.rsplit(":", 2)[:2] for volume in services["grafana"]["volumes"] if volume.startswith("./"))
    assert mounts == {
        "./deploy/grafana/provisioning": "/etc/grafana/provisioning",
        "./deploy/grafana": "/var/lib/grafana/dashboards",
    }
    providers = yaml.safe_load((GRAFANA / "provisioning" / "dashboards" / "emailsys.yml").read_text())
    assert providers["providers"][0]["options"]["path"] == "/var/lib/grafana/dashboards"
    assert (ROOT / compose["configs"]["prometheus-config"]["file"]).exists()
    scrape = yaml.safe_load((ROOT / "deploy" / "prometheus" / "prometheus.yml").read_text())["scrape_configs"][0]
    assert (scrape["metrics_path"], scrape["static_configs"][0]["targets"]) == ("/metrics", ["web:8000"])
    assert "web" in compose["x-app"]["environment"]["ALLOWED_HOSTS"].split(","), "Prometheus asks for Host: web"


@pytest.mark.django_db
def test_every_query_names_metrics_and_labels_that_metrics_serves(client) -> None:
    campaign_scenario(smtp_port=1, name="Dashboard", accounts=1, leads=1, recipients_per_lead=1, steps=1)
    # Task counters have samples once a task has finished (recorded by the workers' signal handlers in Redis, which
    # other tests flush): one finished and one failed task, as any running system has.
    task_record_finished(task_name="campaigns.dispatch_due", state="SUCCESS", runtime_seconds=0.01)
    task_record_finished(task_name="campaigns.dispatch_due", state="FAILURE", runtime_seconds=0.01)
    response = client.get("/metrics")
    assert response.status_code == 200
    served: dict[str, set[str]] = {}
    for family in text_string_to_metric_families(response.content.decode()):
        for sample in family.samples:
            served.setdefault(sample.name, set()).update(sample.labels)
            served.setdefault(family.name, set()).update(sample.labels)
    for expr in expressions():
        names = metric_names(expr)
        assert names and all(name.startswith("emailsys_") for name in names), (expr, names)
        missing = {name for name in names if name not in served}
        assert not missing, f"{expr}: not on /metrics: {missing}"
        for name, matchers in SELECTOR.findall(expr):
            labels = set(MATCHER.findall(matchers))
            assert labels <= served[name], f"{expr}: {name} has no label {labels - served[name]}"
        for grouping in re.findall(r"\bby\s*\(([^)]*)\)", expr):
            wanted = {label.strip() for label in grouping.split(",")}
            assert any(wanted <= served[name] for name in names), f"{expr}: no such labels {wanted}"


def test_the_readme_lists_every_business_metric() -> None:
    readme = (ROOT / "README.md").read_text()
    table = readme[readme.index("### Metrics, dashboard and logs") :]
    assert [name for name in FAMILIES if f"| `{name}` |" not in table] == []
