"""docker-compose.yml and the Dockerfile, validated without a Docker engine: Compose's own
`config` check (Debian's `docker-compose`; `.ci/run` installs it), the structure the deployment
promises, and every FFS_* variable known to Settings."""

from __future__ import annotations

import shutil
import subprocess

import pytest
import yaml
from dockerfile_parse import DockerfileParser

from service.settings import Settings
from tests.service.up import REPO


class _ComposeLoader(yaml.SafeLoader):
    """YAML with Compose's `!reset` tag (used by the CPU override)."""


_ComposeLoader.add_constructor("!reset", lambda loader, node: None)


def _load(name: str) -> dict:
    return yaml.load((REPO / name).read_text(), Loader=_ComposeLoader)


@pytest.mark.skipif(not shutil.which("docker-compose"), reason="needs docker-compose (Debian package)")
def test_compose_validates_with_compose_itself():
    r = subprocess.run(["docker-compose", "-f", "docker-compose.yml", "config", "-q"], cwd=REPO,
                       capture_output=True, text=True, check=False)
    assert r.returncode == 0, r.stderr


@pytest.mark.parametrize("name", ["docker-compose.yml", "deploy/compose.cpu.yml"])
def test_every_ffs_variable_in_compose_is_a_setting(name):
    fields = set(Settings.model_fields)
    used = {key for service in _load(name)["services"].values()
            for key in (service.get("environment") or {}) if key.startswith("FFS_")}
    assert used, f"{name} sets no FFS_ variables"
    unknown = sorted(k for k in used if k.removeprefix("FFS_").lower() not in fields)
    assert not unknown, f"{name} sets variables Settings does not have: {unknown}"


def test_compose_has_the_promised_shape():
    services = _load("docker-compose.yml")["services"]
    assert set(services) == {"redis", "api", "predict", "wake", "sleep", "prometheus", "grafana"}
    redis_cmd = " ".join(services["redis"]["command"])
    assert "--appendonly yes" in redis_cmd and "--appendfsync everysec" in redis_cmd
    assert "--maxmemory-policy noeviction" in redis_cmd
    devices = services["wake"]["deploy"]["resources"]["reservations"]["devices"]
    assert devices == [{"driver": "nvidia", "count": 1, "capabilities": ["gpu"]}]
    for name, service in services.items():  # every service: a healthcheck and a restart policy
        assert "healthcheck" in service and service["restart"] == "unless-stopped", name
    for name in ("api", "predict", "wake", "sleep"):
        assert services[name]["depends_on"]["redis"]["condition"] == "service_healthy"
        assert services[name]["command"] == [name]
    assert services["sleep"]["depends_on"]["wake"]["condition"] == "service_healthy"
    port = services["predict"]["environment"]["FFS_PREDICT_PORT"]
    assert services["predict"]["ports"] == [f"{port}:{port}"] and port in str(services["predict"]["healthcheck"])
    assert services["grafana"]["depends_on"]["prometheus"]["condition"] == "service_healthy"
    mounts = " ".join(services["grafana"]["volumes"])
    assert "deploy/grafana/provisioning" in mounts and "deploy/grafana/dashboards" in mounts
    cpu = _load("deploy/compose.cpu.yml")["services"]["wake"]
    assert cpu["deploy"] is None and cpu["environment"]["FFS_DEVICE"] == "cpu"


def test_dockerfile_runs_as_a_user_and_caches_dependencies():
    parser = DockerfileParser(str(REPO / "deploy" / "Dockerfile"))
    steps = [(i["instruction"], i["value"]) for i in parser.structure if i["instruction"] != "COMMENT"]
    kinds = [k for k, _ in steps]
    assert parser.baseimage.endswith("-slim")
    user = [v for k, v in steps if k == "USER"]
    assert user and user[-1] not in ("root", "0")
    assert kinds.index("USER") > max(i for i, k in enumerate(kinds) if k == "RUN")  # nothing runs as root after
    copies = [v.split()[0] for k, v in steps if k == "COPY"]
    assert copies[0] == "pyproject.toml"  # dependencies are installed before the source is copied
    first_source = next(i for i, (k, v) in enumerate(steps) if k == "COPY" and v.startswith("ffcore"))
    assert any(k == "RUN" and "torch" in v for k, v in steps[:first_source])
    for source in (s for v in (v for k, v in steps if k == "COPY") for s in v.split()[:-1]):
        assert (REPO / source).exists(), f"COPY {source}: not in the repository"
    assert ("ENTRYPOINT", '["ffstream"]') in steps
