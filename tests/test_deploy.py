"""Deployment files under deploy/: Kubernetes manifests against the Kubernetes schemas
(kubernetes-validate, strict: unknown fields fail) plus what the schemas cannot know (replicas,
probes, numeric uid, directory mount, settings that ``router serve`` accepts); the systemd
unit with ``systemd-analyze verify`` and its sandbox with ``systemd-analyze security``; the
compose demo. Tools that are missing fail the test (.ci/ops.sh installs them)."""

from __future__ import annotations

import argparse
import re
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest
import yaml

from router.config import resolve
from router.serve import configure
from scopemap import load_text

ROOT = Path(__file__).resolve().parents[1]
K8S = ROOT / "deploy" / "kubernetes"
UNIT = ROOT / "deploy" / "systemd" / "arrakis-router.service"
COMPOSE = ROOT / "deploy" / "compose"
K8S_VERSION = "1.30.0"


def _docs(path: Path) -> list[dict[str, Any]]:
    return [d for d in yaml.safe_load_all(path.read_text()) if d is not None]


def _kustomization() -> dict[str, Any]:
    doc = yaml.safe_load((K8S / "kustomization.yaml").read_text())
    assert isinstance(doc, dict)
    return doc


def _resources() -> list[dict[str, Any]]:
    return [d for name in _kustomization()["resources"] for d in _docs(K8S / name)]


def _one(kind: str, name: str | None = None) -> dict[str, Any]:
    found = [d for d in _resources() if d["kind"] == kind and name in (None, d["metadata"]["name"])]
    assert len(found) == 1, (kind, name, len(found))
    return found[0]


def test_kustomization_lists_every_manifest() -> None:
    listed = set(_kustomization()["resources"])
    present = {p.name for p in K8S.glob("*.yaml")} - {"kustomization.yaml"}
    assert listed == present


@pytest.mark.parametrize("path", sorted(K8S.glob("*.yaml")), ids=lambda p: p.name)
def test_manifests_validate_against_the_kubernetes_schemas(path: Path) -> None:
    if path.name == "kustomization.yaml":
        return  # a kustomize file, not a Kubernetes resource (checked above)
    for doc in _docs(path):
        kubernetes_validate.validate(doc, K8S_VERSION, strict=True)


def test_a_wrong_field_is_caught_by_the_schema_check() -> None:
    deployment = _one("Deployment")
    broken = yaml.safe_load(yaml.safe_dump(deployment))
    broken["spec"]["template"]["spec"]["containers"][0]["securityContext"]["runAsUser"] = "me"
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(broken, K8S_VERSION, strict=True)


def _serve_settings(env: dict[str, str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="router serve")
    configure(parser)
    return resolve(parser.parse_args([]), parser, env).args


def test_deployment_is_what_an_operator_needs() -> None:
    deployment = _one("Deployment")
    spec = deployment["spec"]
    assert spec["replicas"] >= 2
    pod = spec["template"]["spec"]
    labels = spec["template"]["metadata"]["labels"]
    assert spec["selector"]["matchLabels"].items() <= labels.items()
    (container,) = pod["containers"]
    # numeric non-root user, enforced by the kubelet
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert isinstance(pod["securityContext"]["runAsUser"], int)
    assert pod["securityContext"]["runAsUser"] > 0
    sc = container["securityContext"]
    assert sc["readOnlyRootFilesystem"] is True
    assert sc["allowPrivilegeEscalation"] is False
    assert sc["capabilities"]["drop"] == ["ALL"]
    assert container["resources"]["requests"]["cpu"]
    assert container["resources"]["requests"]["memory"]
    assert container["readinessProbe"] and container["livenessProbe"]
    # the settings ConfigMap holds valid `router serve` settings (the router would refuse
    # an unknown value at start)
    (source,) = container["envFrom"]
    settings = _one("ConfigMap", source["configMapRef"]["name"])["data"]
    args = _serve_settings(settings)
    ports = {p["name"]: p["containerPort"] for p in container["ports"]}
    assert args.url.endswith(f":{ports['flight']}")
    assert args.metrics_port == ports["metrics"]
    # the pod is given time to drain before SIGKILL
    assert pod["terminationGracePeriodSeconds"] >= args.drain_timeout + 2
    # the scope map is a directory mount of the ConfigMap (updates reach the router)
    mount = next(m for m in container["volumeMounts"] if m["name"] == "scope-map")
    assert "subPath" not in mount
    assert args.scope_map.startswith(mount["mountPath"].rstrip("/") + "/")
    volume = next(v for v in pod["volumes"] if v["name"] == "scope-map")
    scope_maps = _one("ConfigMap", volume["configMap"]["name"])["data"]
    filename = args.scope_map.rsplit("/", 1)[1]
    result = load_text(scope_maps[filename], filename)
    assert result.ok, [d.format() for d in result.diagnostics]
    # the image's user is the pod's
    dockerfile = (ROOT / "Dockerfile").read_text()
    user = re.search(r"^USER (\d+)(?::(\d+))?$", dockerfile, re.M)
    assert user is not None and int(user.group(1)) == pod["securityContext"]["runAsUser"]


def test_service_and_disruption_budget_select_the_pods() -> None:
    labels = _one("Deployment")["spec"]["template"]["metadata"]["labels"]
    for service in (d for d in _resources() if d["kind"] == "Service"):
        assert service["spec"]["selector"].items() <= labels.items()
        assert any(p["port"] == 31206 for p in service["spec"]["ports"])
    pdb = _one("PodDisruptionBudget")
    assert pdb["spec"]["selector"]["matchLabels"].items() <= labels.items()
    assert pdb["spec"]["minAvailable"] >= 1
    assert _one("Deployment")["spec"]["replicas"] > pdb["spec"]["minAvailable"]


def _installed_unit(tmp_path: Path) -> Path:
    """The unit as installed here: its router path pointed at this environment's router
    (``systemd-analyze verify`` checks that ExecStart exists); nothing else changed."""
    router = Path(sys.executable).parent / "router"
    assert router.exists()
    text = UNIT.read_text()
    assert "/opt/arrakis-router/bin/router" in text
    unit = tmp_path / UNIT.name
    unit.write_text(text.replace("/opt/arrakis-router/bin/router", str(router)))
    return unit


def _systemd_analyze() -> str:
    tool = shutil.which("systemd-analyze")
    assert tool, "systemd-analyze is not installed (Debian: apt-get install systemd; .ci/ops.sh)"
    return tool


def test_systemd_unit_verifies(tmp_path: Path) -> None:
    res = subprocess.run(
        [_systemd_analyze(), "verify", str(_installed_unit(tmp_path))],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert res.returncode == 0 and not res.stderr.strip(), res.stdout + res.stderr


def test_systemd_unit_reloads_with_sighup_and_is_sandboxed(tmp_path: Path) -> None:
    text = UNIT.read_text()
    assert re.search(r"^ExecReload=/bin/kill -HUP \$MAINPID$", text, re.M)
    assert re.search(r"^KillSignal=SIGTERM$", text, re.M)
    stop = re.search(r"^TimeoutStopSec=(\d+)$", text, re.M)
    assert stop is not None and int(stop.group(1)) >= 20 + 2  # default drain + bound
    # the sandbox, scored by systemd itself (0 = locked down, 10 = unprotected): at most 2
    res = subprocess.run(
        [
            _systemd_analyze(),
            "security",
            "--offline=yes",
            "--threshold=20",  # of 100: the 0-10 score shown times 10
            str(_installed_unit(tmp_path)),
        ],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert res.returncode == 0, res.stdout[-2000:] + res.stderr


def test_compose_demo_is_consistent() -> None:
    doc = yaml.safe_load((COMPOSE / "compose.yaml").read_text())
    services = doc["services"]
    assert {"router", "live", "archive"} <= set(services)
    router = services["router"]
    assert router["read_only"] is True and router["cap_drop"] == ["ALL"]
    assert re.fullmatch(r"\d+:\d+", router["user"])
    # the map names the two downstream services, and it is valid
    result = load_text((COMPOSE / "maps" / "scope-map.yaml").read_text(), "scope-map.yaml")
    assert result.ok and result.scope_map is not None
    hosts = {ep.url.split("//")[1].split(":")[0] for ep in result.scope_map.endpoints}
    assert hosts == {"live", "archive"}
    # a directory mount at the image's map folder
    (volume,) = router["volumes"]
    source, target, *_ = volume.split(":")
    assert (COMPOSE / source).is_dir() and target == "/etc/arrakis-router/maps"
    env = {k: str(v) for k, v in router["environment"].items()}
    args = _serve_settings(env)
    grace = int(router["stop_grace_period"].rstrip("s"))
    assert grace >= args.drain_timeout + 2
