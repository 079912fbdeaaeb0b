"""Render charts/palisade with the real helm binary and index the objects."""

from __future__ import annotations

import subprocess
import tempfile
from pathlib import Path
from typing import Any

import yaml

from tests.harness import find_binaries

CHART = Path(__file__).resolve().parents[2] / "charts" / "palisade"


def helm(*args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    """Run helm with private config/cache dirs (no cluster needed)."""
    with tempfile.TemporaryDirectory(prefix="palisade-helm-") as home:
        env = {
            "PATH": "/usr/bin:/bin",
            "HOME": home,
            "HELM_CACHE_HOME": f"{home}/cache",
            "HELM_CONFIG_HOME": f"{home}/config",
            "HELM_DATA_HOME": f"{home}/data",
        }
        result = subprocess.run(
            [str(find_binaries().helm), *args],
            capture_output=True,
            text=True,
            env=env,
            timeout=120,
            check=False,
        )
    if check and result.returncode != 0:
        raise AssertionError(f"helm {' '.join(args)} failed:\n{result.stderr}")
    return result


def values_args(values: dict[str, Any] | None, tmp: Path) -> list[str]:
    if not values:
        return []
    path = tmp / "values.yaml"
    path.write_text(yaml.safe_dump(values))
    return ["-f", str(path)]


def render_text(
    values: dict[str, Any] | None = None,
    *,
    release: str = "palisade",
    namespace: str = "palisade",
    extra: tuple[str, ...] = (),
) -> str:
    with tempfile.TemporaryDirectory() as tmp:
        args = values_args(values, Path(tmp))
        return helm("template", release, str(CHART), "-n", namespace, *args, *extra).stdout


def render(values: dict[str, Any] | None = None, **kw: Any) -> list[dict[str, Any]]:
    """The rendered objects (empty documents dropped)."""
    return [d for d in yaml.safe_load_all(render_text(values, **kw)) if d]


def by_kind(objects: list[dict[str, Any]], kind: str) -> list[dict[str, Any]]:
    return [o for o in objects if o["kind"] == kind]


def one(objects: list[dict[str, Any]], kind: str, name: str | None = None) -> dict[str, Any]:
    found = [o for o in by_kind(objects, kind) if name is None or o["metadata"]["name"] == name]
    assert len(found) == 1, f"expected one {kind} {name or ''}, found {len(found)}"
    return found[0]


def container_env(deployment: dict[str, Any]) -> dict[str, Any]:
    container = deployment["spec"]["template"]["spec"]["containers"][0]
    return {e["name"]: e.get("value", e.get("valueFrom")) for e in container["env"]}


CRD_NAME = "policybundles.palisade.dev"


def ensure_crds(kube: Any, timeout: float = 60) -> None:
    """The chart's CRDs applied and Established on ``kube`` (a tests.harness ControlPlane).

    Another test may just have deleted them with ``--wait=false``: wait until that
    deletion finished before applying again, or the apply lands on a dying object.
    """
    import time

    from tests.harness import ApiError

    path = f"/apis/apiextensions.k8s.io/v1/customresourcedefinitions/{CRD_NAME}"
    deadline = time.monotonic() + timeout
    while True:
        try:
            if not kube.request("GET", path)["metadata"].get("deletionTimestamp"):
                break
        except ApiError as e:
            if e.status != 404:
                raise
            break
        assert time.monotonic() < deadline, f"{CRD_NAME} never finished deleting"
        time.sleep(0.5)
    for f in sorted((CHART / "crds").glob("*.yaml")):
        kube.kubectl("apply", "--server-side", "--field-manager=chart-test", "-f", str(f))
    kube.kubectl(
        "wait", "--for=condition=Established", f"--timeout={int(timeout)}s", f"crd/{CRD_NAME}"
    )
