"""docker/k8s/: every manifest validates offline, and the manifests agree with each other,
with docker/Dockerfile, with config/gunicorn.conf.py and with the gateway's config schema
(SPEC §17).

Schemas come with ``kubernetes-validate`` (pinned in requirements.txt): no cluster, no
network. Strict mode rejects unknown fields, so a misspelt key fails here, not at apply.
"""

from __future__ import annotations

import re
from pathlib import Path

import kubernetes_validate
import pytest
import yaml

from app.config import config_from_dict

ROOT = Path(__file__).resolve().parents[2]
K8S = ROOT / "docker" / "k8s"
#: The oldest Kubernetes the manifests are written for, and the newest schema shipped.
KUBERNETES_VERSIONS = ("1.30.0", kubernetes_validate.latest_version())
KUBERNETES_VERSION = KUBERNETES_VERSIONS[0]
MANIFESTS = sorted(K8S.rglob("*.yaml"))
#: Values for the ${VAR}s of the ConfigMaps, as the Secret would provide them.
SECRET_ENV = {"OPENAI_API_KEY": "sk-test", "PLANO_ADMIN_TOKEN": "a" * 24,
              "PLANO_API_KEYS": "", "REDIS_URL": "redis://:pw@redis:6379/0",
              "OTEL_EXPORTER_OTLP_ENDPOINT": ""}


def documents(path: Path) -> list[dict]:
    return [doc for doc in yaml.safe_load_all(path.read_text()) if doc]


@pytest.fixture(scope="module")
def resources() -> dict[tuple[str, str], list[tuple[Path, dict]]]:
    """Every resource by (kind, name), with the file it is in."""
    found: dict[tuple[str, str], list[tuple[Path, dict]]] = {}
    for path in MANIFESTS:
        for doc in documents(path):
            found.setdefault((doc["kind"], doc["metadata"]["name"]), []).append((path, doc))
    return found


def one(resources, kind: str, name: str, base_only: bool = True) -> dict:
    """The resource of that kind and name in docker/k8s/ itself (not the examples)."""
    matches = [doc for path, doc in resources.get((kind, name), [])
               if not base_only or path.parent == K8S]
    assert len(matches) == 1, f"{kind}/{name}: {len(matches)} definitions"
    return matches[0]


@pytest.fixture(scope="module")
def deployment(resources) -> dict:
    return one(resources, "Deployment", "plano-gateway")


@pytest.fixture(scope="module")
def container(deployment) -> dict:
    (gateway,) = deployment["spec"]["template"]["spec"]["containers"]
    return gateway


def env_of(container: dict) -> dict[str, dict]:
    return {item["name"]: item for item in container["env"]}


def test_the_expected_manifests_are_there(resources):
    kinds = {kind for kind, _ in resources}
    assert {"Deployment", "Service", "HorizontalPodAutoscaler", "PodDisruptionBudget",
            "ConfigMap", "Secret"} <= kinds


@pytest.mark.parametrize("version", KUBERNETES_VERSIONS)
@pytest.mark.parametrize("path", MANIFESTS, ids=lambda p: str(p.relative_to(K8S)))
def test_manifest_validates_against_the_kubernetes_schema(path, version):
    docs = documents(path)
    assert docs, f"{path} holds no resource"
    for doc in docs:
        kubernetes_validate.validate(doc, version, strict=True)


def test_strict_validation_rejects_a_misspelt_field(resources):
    pdb = one(resources, "PodDisruptionBudget", "plano-gateway")
    broken = {**pdb, "spec": {**pdb["spec"], "maxUnavailabel": 1}}
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(broken, KUBERNETES_VERSION, strict=True)


def test_selectors_match_the_pod_labels(resources, deployment):
    labels = deployment["spec"]["template"]["metadata"]["labels"]
    selectors = {
        "Deployment": deployment["spec"]["selector"]["matchLabels"],
        "Service": one(resources, "Service", "plano-gateway")["spec"]["selector"],
        "PodDisruptionBudget": one(resources, "PodDisruptionBudget",
                                   "plano-gateway")["spec"]["selector"]["matchLabels"],
    }
    for kind, selector in selectors.items():
        assert selector and selector.items() <= labels.items(), kind
    hpa = one(resources, "HorizontalPodAutoscaler", "plano-gateway")
    assert hpa["spec"]["scaleTargetRef"] == {"apiVersion": "apps/v1", "kind": "Deployment",
                                             "name": deployment["metadata"]["name"]}
    assert hpa["spec"]["minReplicas"] >= 2  # the PDB then always leaves one serving


def test_service_reaches_the_containers_port_of_the_listener(resources, container):
    (port,) = container["ports"]
    assert port == {"name": "http", "containerPort": 12000, "protocol": "TCP"}
    (service_port,) = one(resources, "Service", "plano-gateway")["spec"]["ports"]
    assert service_port["targetPort"] in ("http", 12000)
    dockerfile = (ROOT / "docker" / "Dockerfile").read_text()
    assert re.search(r"^EXPOSE 12000$", dockerfile, re.M)


def test_configmaps_and_secrets_named_by_the_deployment_exist(resources, deployment,
                                                              container):
    volumes = deployment["spec"]["template"]["spec"]["volumes"]
    for volume in volumes:
        if "configMap" in volume:
            one(resources, "ConfigMap", volume["configMap"]["name"])
    secret_refs = [item["valueFrom"]["secretKeyRef"] for item in container["env"]
                   if "secretKeyRef" in item.get("valueFrom", {})]
    assert secret_refs
    for ref in secret_refs:
        (secret,) = [doc for _, doc in resources[("Secret", ref["name"])]]
        assert ref["key"] in secret["stringData"], ref


def test_probes_are_on_healthz_and_the_grace_period_covers_the_drain(deployment, container):
    for probe in ("startupProbe", "readinessProbe", "livenessProbe"):
        assert container[probe]["httpGet"] == {"path": "/healthz", "port": "http"}, probe
    command = container["lifecycle"]["preStop"]["exec"]["command"]
    assert command[0] == "sleep"
    pause = int(command[1])
    graceful = int(env_of(container)["PLANO_GRACEFUL_TIMEOUT"]["value"])
    grace = deployment["spec"]["template"]["spec"]["terminationGracePeriodSeconds"]
    assert grace > pause + graceful
    # And gunicorn reads that variable (its default would be the same 30 s).
    gunicorn_conf = (ROOT / "config" / "gunicorn.conf.py").read_text()
    default = re.search(r'graceful_timeout = int\(os\.environ\.get\("PLANO_GRACEFUL_TIMEOUT", '
                        r'"(\d+)"\)\)', gunicorn_conf)
    assert default and grace > pause + int(default.group(1))


def test_runs_as_the_images_non_root_user_on_a_read_only_root(deployment, container):
    pod_security = deployment["spec"]["template"]["spec"]["securityContext"]
    uid = re.search(r"useradd .*--uid (\d+)", (ROOT / "docker" / "Dockerfile").read_text())
    assert pod_security["runAsNonRoot"] is True
    assert pod_security["runAsUser"] == int(uid.group(1))
    security = container["securityContext"]
    assert security["readOnlyRootFilesystem"] is True
    assert security["allowPrivilegeEscalation"] is False
    assert security["capabilities"]["drop"] == ["ALL"]
    assert "command" not in container and "args" not in container  # the image's gunicorn
    resources = container["resources"]
    assert {"cpu", "memory"} <= resources["requests"].keys() <= resources["limits"].keys()


def test_every_writable_path_is_an_empty_dir(deployment, container):
    volumes = {v["name"]: v for v in deployment["spec"]["template"]["spec"]["volumes"]}
    mounts = {m["mountPath"]: volumes[m["name"]] for m in container["volumeMounts"]}
    env = env_of(container)
    for path in ("/tmp", env["PROMETHEUS_MULTIPROC_DIR"]["value"]):
        assert "emptyDir" in mounts[path], path
    config_path = Path(env["PLANO_CONFIG"]["value"])
    assert config_path.name == "config.yaml"  # the ConfigMap's key
    assert "configMap" in mounts[str(config_path.parent)]
    # A subPath mount would never see a ConfigMap update, so a SIGHUP could not pick it up.
    assert all("subPath" not in mount for mount in container["volumeMounts"])


@pytest.mark.parametrize("where", ["base", "sentinel example"])
def test_configmap_holds_a_config_the_gateway_accepts(resources, container, where):
    base_only = where == "base"
    candidates = [(path, doc) for path, doc in resources[("ConfigMap", "plano-gateway-config")]
                  if (path.parent == K8S) == base_only]
    ((path, configmap),) = candidates
    raw = yaml.safe_load(configmap["data"]["config.yaml"])
    config = config_from_dict(raw, environ=SECRET_ENV, source=str(path))
    assert config.model_listener.port == container["ports"][0]["containerPort"]
    cache = config.routing.session_cache
    assert cache.type == "redis"  # replicas share pins only through Redis
    if not base_only:
        assert cache.mode == "sentinel" and cache.master_name and len(cache.sentinels) >= 3
    used = set(re.findall(r"\$\{([A-Z_]+)", configmap["data"]["config.yaml"]))
    assert used <= env_of(container).keys(), used - env_of(container).keys()


def test_tracing_excludes_health_and_metrics(container):
    from opentelemetry.util.http import parse_excluded_urls

    rules = parse_excluded_urls(env_of(container)["OTEL_PYTHON_FLASK_EXCLUDED_URLS"]["value"])
    assert rules.url_disabled("http://10.0.0.7:12000/healthz")
    assert rules.url_disabled("http://10.0.0.7:12000/metrics")
    assert not rules.url_disabled("http://10.0.0.7:12000/v1/chat/completions")
