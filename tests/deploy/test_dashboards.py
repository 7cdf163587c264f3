"""The committed Grafana dashboards and provisioning agree with their generator and each other."""

import importlib.util
import json

import yaml

from tests.service.up import REPO

GRAFANA = REPO / "deploy" / "grafana"


def _generator():
    spec = importlib.util.spec_from_file_location("build_dashboards", GRAFANA / "build_dashboards.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_committed_dashboards_are_what_the_generator_writes():
    rendered = _generator().render()
    assert sorted(rendered) == ["learning.json", "resources.json", "service.json"]
    for name, text in rendered.items():
        assert (GRAFANA / "dashboards" / name).read_text() == text, f"{name} is stale: run build_dashboards.py"


def test_every_panel_uses_the_provisioned_datasource_and_metric_names_have_one_prefix():
    provisioned = yaml.safe_load((GRAFANA / "provisioning" / "datasources" / "prometheus.yml").read_text())
    uid = provisioned["datasources"][0]["uid"]
    for path in (GRAFANA / "dashboards").glob("*.json"):
        board = json.loads(path.read_text())
        assert len({p["id"] for p in board["panels"]}) == len(board["panels"])
        for panel in board["panels"]:
            assert panel["datasource"]["uid"] == uid
            for target in panel["targets"]:
                assert target["datasource"]["uid"] == uid
                assert "ffstream_" in target["expr"] or target["expr"].startswith("up{"), target["expr"]
