"""docker/ (SPEC §2): the Dockerfile (gunicorn as a non-root user, a health check), the compose
file (two Redis-backed gateway replicas behind nginx on 12000), nginx.conf and the .env example.

The compose file is validated by ``docker-compose config`` (Debian's docker-compose package
checks a compose file without a Docker engine) when that command is on PATH; the other checks
read the files themselves and always run.
"""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

pytestmark = pytest.mark.integration

REPO = Path(__file__).resolve().parents[2]
DOCKER = REPO / "docker"
GATEWAYS = ("gateway-1", "gateway-2")


@pytest.fixture(scope="module")
def compose() -> dict:
    """docker/docker-compose.yml as data (YAML anchors resolved)."""
    return yaml.safe_load((DOCKER / "docker-compose.yml").read_text())


def environment(service: dict) -> dict:
    """A service's environment as a dict, whichever YAML form it uses."""
    env = service.get("environment") or {}
    if isinstance(env, list):
        env = dict(item.split("=", 1) for item in env)
    return {key: str(value) for key, value in env.items()}


def test_docker_compose_config_accepts_the_compose_file():
    binary = shutil.which("docker-compose")
    if binary is None:
        pytest.skip("docker-compose is not on PATH (Debian: apt-get install docker-compose)")
    result = subprocess.run([binary, "-f", "docker/docker-compose.yml", "config"], cwd=REPO,
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    resolved = yaml.safe_load(result.stdout)
    assert set(GATEWAYS) <= set(resolved["services"])
    assert resolved["services"]["redis"]["container_name"] == "plano-session-redis"


def test_dockerfile_runs_gunicorn_as_a_non_root_user_with_a_healthcheck():
    text = (DOCKER / "Dockerfile").read_text()
    instructions = [line.split(None, 1) for line in text.splitlines()
                    if line.strip() and not line.lstrip().startswith("#")]
    assert re.search(r"^FROM python:3\.11-slim\b", text, re.M)
    users = [args.strip() for word, *rest in instructions if word == "USER" for args in rest]
    assert users and users[-1] not in ("root", "0"), "the image must end as a non-root user"
    assert "pip install -r requirements-runtime.txt" in text
    for directory in ("app/", "config/", "bin/"):
        assert re.search(rf"^COPY {directory} ", text, re.M), directory
    assert re.search(r"^HEALTHCHECK .*\n?.*/healthz", text, re.M)
    assert re.search(r'^CMD \["gunicorn", "-c", "config/gunicorn.conf.py", "app.wsgi:app"\]',
                     text, re.M)


def test_compose_runs_two_redis_backed_replicas_behind_nginx_on_12000(compose):
    services = compose["services"]
    assert services["redis"]["container_name"] == "plano-session-redis"
    jaeger = services["jaeger"]
    assert environment(jaeger)["COLLECTOR_OTLP_ENABLED"] == "true"
    assert {"16686:16686", "4318:4318"} <= {str(port) for port in jaeger["ports"]}
    for name in GATEWAYS:
        gateway = services[name]
        assert gateway["build"]["dockerfile"] == "docker/Dockerfile"
        env = environment(gateway)
        assert env["SESSION_CACHE_TYPE"] == "redis"
        assert env["REDIS_URL"] == "redis://redis:6379"
        assert env["OTEL_EXPORTER_OTLP_ENDPOINT"] == "http://jaeger:4318"
        assert env["PLANO_EXPOSE_WORKER"] == "true"
        assert "OPENAI_API_KEY" in env
        assert "ports" not in gateway, "replicas are reached through nginx only"
    assert "12000:12000" in [str(port) for port in services["nginx"]["ports"]]
    assert any("nginx.conf" in volume for volume in services["nginx"]["volumes"])


def test_nginx_round_robins_over_both_replicas_without_buffering_streams():
    conf = "\n".join(line.split("#", 1)[0] for line in
                     (DOCKER / "nginx.conf").read_text().splitlines())
    upstream = re.search(r"upstream \w+ \{(.*?)\}", conf, re.S).group(1)
    assert re.findall(r"server (gateway-\d):12000;", upstream) == list(GATEWAYS)
    assert "ip_hash" not in conf and "sticky" not in conf
    assert re.search(r"^\s*listen 12000;", conf, re.M)
    assert re.search(r"^\s*proxy_buffering off;", conf, re.M)


def test_env_example_names_the_api_key():
    assert re.search(r"^OPENAI_API_KEY=", (DOCKER / ".env.example").read_text(), re.M)


def test_compose_runs_prometheus_scraping_both_replicas_and_a_provisioned_grafana(compose):
    services = compose["services"]
    prometheus, grafana = services["prometheus"], services["grafana"]
    assert any(volume.startswith("./prometheus/prometheus.yml:") for volume in
               prometheus["volumes"])
    scrape = yaml.safe_load((DOCKER / "prometheus" / "prometheus.yml").read_text())
    targets = [target for job in scrape["scrape_configs"]
               for group in job["static_configs"] for target in group["targets"]]
    assert sorted(targets) == [f"{name}:12000" for name in GATEWAYS]
    assert "3000:3000" in [str(port) for port in grafana["ports"]]
    assert {"./grafana/provisioning:/etc/grafana/provisioning:ro",
            "./grafana/dashboards:/var/lib/grafana/dashboards:ro"} <= set(grafana["volumes"])
    for name in GATEWAYS:
        assert "PLANO_ADMIN_TOKEN" in environment(services[name]), "the status page needs it"
