"""deploy/: the files that matter are checked against the code they deploy, since no cluster runs here.

nats-server validates its own config files (`-t`); the Kubernetes manifests and the compose file
are parsed and held to what natrium really serves: every block of the registry has a workload,
probes ask endpoints that exist on the ports the processes open, the NATS address and password
come from where the NATS side puts them, and the components parse with natrium's own loader.
"""

from __future__ import annotations

import subprocess
import sys
import zipfile
from pathlib import Path
from typing import Any

import pytest
import yaml

from kernel.components import load_components
from kernel.nats_server import find_binary
from services import BLOCKS
from tests.conftest import REPO

DEPLOY = REPO / "deploy"
K8S = DEPLOY / "k8s"


def k8s_documents() -> list[dict[str, Any]]:
    docs: list[dict[str, Any]] = []
    for name in ("blocks.yaml", "gateway.yaml", "hpa.yaml"):
        docs += [d for d in yaml.safe_load_all((K8S / name).read_text()) if d]
    return docs


def deployments() -> dict[str, dict[str, Any]]:
    return {d["metadata"]["name"]: d for d in k8s_documents() if d["kind"] == "Deployment"}


def container(deployment: dict[str, Any]) -> dict[str, Any]:
    containers = deployment["spec"]["template"]["spec"]["containers"]
    assert len(containers) == 1
    return dict(containers[0])


def env_of(spec: dict[str, Any]) -> dict[str, Any]:
    return {e["name"]: e.get("value", e.get("valueFrom")) for e in spec["env"]}


def port_number(spec: dict[str, Any], port: int | str) -> int:
    if isinstance(port, int):
        return port
    return next(p["containerPort"] for p in spec["ports"] if p["name"] == port)


NATS_ENV = {
    "NATS_SERVER_NAME": "n1",
    "NATS_CLIENT_PORT": "4222",
    "NATS_CLUSTER_PORT": "6222",
    "NATS_MONITOR_PORT": "8222",
    "NATS_ROUTE_1": "nats-route://a:6222",
    "NATS_ROUTE_2": "nats-route://b:6222",
    "NATS_ROUTE_3": "nats-route://c:6222",
    "NATS_STORE_DIR": "/tmp/js",
    "NATS_PASSWORD": "p",
    "NATS_SYS_PASSWORD": "s",
}


@pytest.mark.parametrize("name", ["single.conf", "cluster.conf"])
def test_nats_server_accepts_its_config(name: str) -> None:
    out = subprocess.run(
        [find_binary(), "-t", "-c", str(DEPLOY / "nats" / name)], env=NATS_ENV, capture_output=True, text=True
    )
    assert out.returncode == 0, out.stdout + out.stderr
    assert "is valid" in out.stdout + out.stderr


def test_cluster_config_needs_every_variable() -> None:
    env = {k: v for k, v in NATS_ENV.items() if k != "NATS_ROUTE_2"}
    conf = str(DEPLOY / "nats" / "cluster.conf")
    out = subprocess.run([find_binary(), "-t", "-c", conf], env=env, capture_output=True)
    assert out.returncode != 0


def test_block_manifests_are_rendered_from_the_registry() -> None:
    out = subprocess.run([sys.executable, str(K8S / "render.py"), "--check"], capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    assert set(deployments()) >= {f"natrium-{block}" for block in BLOCKS} | {"natrium-gateway"}


def test_every_workload_reaches_nats_with_the_secret_password() -> None:
    secret = yaml.safe_load((K8S / "secret.example.yaml").read_text())
    values = yaml.safe_load((K8S / "nats-values.yaml").read_text())
    assert values["config"]["cluster"]["replicas"] == 3
    assert values["config"]["jetstream"]["enabled"] is True
    assert "natrium" in [u["user"] for u in values["config"]["merge"]["accounts"]["NATRIUM"]["users"]]
    server_env = {k: v["valueFrom"]["secretKeyRef"]["key"] for k, v in values["container"]["env"].items()}
    assert set(server_env.values()) <= set(secret["stringData"])
    assert server_env["NATS_SYS_PASSWORD"] != server_env["NATS_PASSWORD"]  # the system user has its own
    images = set()
    for name, deployment in deployments().items():
        spec = container(deployment)
        images.add(spec["image"])
        env = env_of(spec)
        assert env["NATS_URL"] == "nats://nats:4222", name  # the chart's client Service, release "nats"
        assert env["NATS_USER"] == "natrium"
        ref = env["NATS_PASSWORD"]["secretKeyRef"]
        assert ref["name"] == secret["metadata"]["name"] and ref["key"] in secret["stringData"], name
        assert env["NATRIUM_COMPONENTS"] == spec["volumeMounts"][0]["mountPath"]
        assert env["NATRIUM_ACTORS_REPLICAS"] == "3", name  # actor buckets on all three nodes
        block = spec["args"][1] if spec["args"][0] == "service" else None
        if block == "secrets":
            assert env["NATRIUM_SECRETS_KEY"]["secretKeyRef"]["key"] in secret["stringData"]
    assert len(images) == 1, images


def test_probes_ask_endpoints_the_processes_serve() -> None:
    from adapters.gateway.app import build_app
    from adapters.gateway.context import Gateway, GatewayConfig

    gateway_paths = {
        r.resource.canonical
        for r in build_app(Gateway(None, GatewayConfig(http_port=3500))).router.routes()  # type: ignore[arg-type]
        if r.resource is not None and r.method == "GET"
    }
    for name, deployment in deployments().items():
        spec = container(deployment)
        env = env_of(spec)
        for kind in ("readinessProbe", "livenessProbe"):
            probe = spec[kind]["httpGet"]
            port = port_number(spec, probe["port"])
            if port == int(env["NATRIUM_METRICS_PORT"]):
                assert probe["path"] == "/healthz", name  # kernel.metrics serves it beside /metrics
            else:
                assert spec["args"] == ["gateway"] and port == int(env["DAPR_HTTP_PORT"]), name
                assert probe["path"] in gateway_paths, probe
        if spec["args"] == ["gateway"]:  # the SDKs' gRPC clients reach it too
            assert port_number(spec, "grpc") == int(env["DAPR_GRPC_PORT"]), name


def test_hpas_scale_deployments_that_exist() -> None:
    names = set(deployments())
    hpas = [d for d in k8s_documents() if d["kind"] == "HorizontalPodAutoscaler"]
    assert hpas
    for hpa in hpas:
        assert hpa["spec"]["scaleTargetRef"]["name"] in names
        assert hpa["spec"]["minReplicas"] <= hpa["spec"]["maxReplicas"]


def test_components_parse_and_replicate_on_the_cluster(tmp_path: Path) -> None:
    kustomization = yaml.safe_load((K8S / "kustomization.yaml").read_text())
    for resource in kustomization["resources"]:
        assert (K8S / resource).is_file()
    (files,) = [g["files"] for g in kustomization["configMapGenerator"] if g["name"] == "natrium-components"]
    (tmp_path / "c").mkdir()
    for name in files:
        (tmp_path / "c" / name).write_text((K8S / name).read_text())
    components = load_components(str(tmp_path / "c")).components
    assert {c.name for c in components} >= {"statestore", "pubsub", "lockstore", "configstore", "secretstore", "dapr"}
    assert all(c.meta_int("replicas", 1) == 3 for c in components)
    local = load_components(str(DEPLOY / "components")).components
    assert {c.name for c in local} == {c.name for c in components}


def test_compose_runs_every_block_against_its_nats() -> None:
    compose = yaml.safe_load((DEPLOY / "compose.yaml").read_text())
    services = compose["services"]
    commands = {tuple(s["command"]) for s in services.values() if s.get("command")}
    assert {("service", block) for block in BLOCKS} <= commands
    assert ("gateway",) in commands
    nats = services["nats"]
    assert nats["entrypoint"][0] == "nats-server"
    conf_volume = next(v for v in nats["volumes"] if v.endswith(":ro"))
    assert (DEPLOY / conf_volume.split(":")[0]).resolve().is_file()
    assert f":{nats['environment']['NATS_MONITOR_PORT']}/healthz" in " ".join(nats["healthcheck"]["test"])
    for name, service in services.items():
        if name == "nats":
            continue
        env = service["environment"]
        assert env["NATS_URL"] == f"nats://nats:{nats['environment']['NATS_CLIENT_PORT']}", name
        assert (DEPLOY / service["volumes"][0].split(":")[0]).resolve().is_dir()
        health = " ".join(service["healthcheck"]["test"])
        assert f":{env['NATRIUM_METRICS_PORT']}/healthz" in health or ":3500/v1.0/healthz" in health, name


def test_the_image_builds_from_the_packages_it_copies(tmp_path: Path) -> None:
    dockerfile = (REPO / "Dockerfile").read_text()
    copied = {line.split()[1] for line in dockerfile.splitlines() if line.startswith("COPY ") and "--from" not in line}
    packages = {"kernel", "schemas", "services", "adapters"}
    assert packages <= copied
    assert 'ENTRYPOINT ["natrium"]' in dockerfile
    # The image's build step, for real: the wheel it installs holds every package and the CLI.
    out = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "-w", str(tmp_path), str(REPO)],
        capture_output=True,
        text=True,
    )
    assert out.returncode == 0, out.stderr[-2000:]
    (wheel,) = tmp_path.glob("natrium-*.whl")
    names = zipfile.ZipFile(wheel).namelist()
    assert {n.split("/")[0] for n in names} >= packages
    assert any(n.endswith("entry_points.txt") for n in names)
