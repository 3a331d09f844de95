"""The Kubernetes manifests under ``deploy/kubernetes/``: every resource the
kustomization lists is valid against the Kubernetes API schema
(``kubernetes-validate``, strict: no unknown fields), the monitor has
readiness and liveness probes that a real monitor answers, the sync worker
runs two replicas, and every setting in the ConfigMap and Secret is one the
product documents."""
from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest
import requests
import yaml

from testing.paths import REPO_ROOT
from testing.processes import Monitor

pytestmark = pytest.mark.timeout(120)

K8S = REPO_ROOT / "deploy" / "kubernetes"
KUBERNETES_VERSION = "1.30"


def _resources() -> list[tuple[Path, dict[str, Any]]]:
    kustomization = yaml.safe_load((K8S / "kustomization.yaml").read_text())
    found = []
    for name in kustomization["resources"]:
        path = K8S / name
        found += [(path, doc) for doc in yaml.safe_load_all(path.read_text()) if doc]
    return found


def _one(kind: str, name: str) -> dict[str, Any]:
    matches = [doc for _, doc in _resources()
               if doc["kind"] == kind and doc["metadata"]["name"] == name]
    assert len(matches) == 1, f"{kind}/{name}: {len(matches)} found"
    return matches[0]


def test_every_manifest_is_valid_against_the_kubernetes_schema() -> None:
    resources = _resources()
    kinds = sorted({doc["kind"] for _, doc in resources})
    assert kinds == ["ConfigMap", "Deployment", "Secret", "Service"]
    listed = {path.name for path, _ in resources}
    on_disk = {p.name for p in K8S.glob("*.yaml")} - {"kustomization.yaml"}
    assert listed == on_disk, "a manifest is not in kustomization.yaml"
    for path, doc in resources:
        try:
            kubernetes_validate.validate(doc, KUBERNETES_VERSION, strict=True)
        except kubernetes_validate.ValidationError as error:
            pytest.fail(f"{path.name} {doc['kind']}/{doc['metadata']['name']}: {error}")


def test_a_broken_manifest_is_refused_by_the_validator() -> None:
    """The validator is strict enough to catch a typo (so the test above can fail)."""
    monitor = _one("Deployment", "flower-ops-monitor")
    broken = yaml.safe_load(yaml.safe_dump(monitor))
    broken["spec"]["template"]["spec"]["containers"][0]["readinessProbes"] = {}
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(broken, KUBERNETES_VERSION, strict=True)


def _container(deployment: dict[str, Any]) -> dict[str, Any]:
    containers = deployment["spec"]["template"]["spec"]["containers"]
    assert len(containers) == 1
    return dict(containers[0])


def test_the_monitor_and_the_sync_worker_are_wired_to_their_settings() -> None:
    monitor = _one("Deployment", "flower-ops-monitor")
    sync = _one("Deployment", "flower-ops-sync-worker")
    assert sync["spec"]["replicas"] == 2
    service = _one("Service", "flower-ops-monitor")
    labels = monitor["spec"]["template"]["metadata"]["labels"]
    assert service["spec"]["selector"].items() <= labels.items()
    for deployment in (monitor, sync):
        container = _container(deployment)
        sources = {next(iter(ref.values()))["name"] for ref in container["envFrom"]}
        assert sources == {"flower-ops-settings", "flower-ops-secrets"}
        for probe in ("readinessProbe", "livenessProbe"):
            assert container[probe]["httpGet"]["port"] in {
                p["name"] for p in container["ports"]}
    assert _container(monitor)["command"][:4] == ["celery", "-A", "worker", "flower-ops"]
    assert _container(monitor)["readinessProbe"]["httpGet"]["path"] == "/healthcheck"
    assert _container(sync)["command"] == ["sync-worker"]

    documented: set[str] = set()
    # rows of the README's settings tables: `NAME` or `NAME_PORT` / `_ADDRESS`
    for name, suffix in re.findall(r"^\| `([A-Z_]+)`(?: / `(_[A-Z_]+)`)? \|",
                                   (REPO_ROOT / "README.md").read_text(), re.MULTILINE):
        documented.add(name)
        if suffix:
            documented.add(name[:name.rfind("_")] + suffix)
    settings = {**_one("ConfigMap", "flower-ops-settings")["data"],
                **_one("Secret", "flower-ops-secrets")["stringData"]}
    unknown = sorted(set(settings) - documented)
    assert not unknown, f"settings the README does not document: {unknown}"


def test_the_probe_path_answers_on_a_real_monitor_without_credentials(redis_url: str) -> None:
    """Kubelet probes carry no credentials: /healthcheck must answer 200 on a
    monitor that has basic auth on, while the API still refuses."""
    monitor = Monitor(redis_url).start().wait_ready()
    try:
        assert monitor.basic_auth is not None
        assert requests.get(f"{monitor.base_url}/healthcheck", timeout=5).status_code == 200
        assert requests.get(f"{monitor.api}/tasks", timeout=5).status_code == 401
    finally:
        monitor.stop()
