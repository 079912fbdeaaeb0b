"""The agent as the DaemonSet runs it: read-only root filesystem, no capabilities, no driver.

The agent is started inside a private mount namespace whose ``/`` is remounted
read-only, with one writable tmpfs (the chart's ``/tmp`` emptyDir; mounted on a
fresh directory, so a checkout under ``/tmp`` stays visible) that also
holds its state directory (the chart's hostPath), every capability dropped
from its bounding set and ``no_new_privs`` set (``setpriv``): as root without
capabilities (the chart's choice, for the kubelet's root-only PodResources
socket), and as an unprivileged user where this machine's interpreter can be
reached by one. It must come up in no-GPU mode, healthy and ready, and
attribute a root-owned process (host PID 1) read through ``/proc``.

Needs root, util-linux ``unshare`` and ``setpriv`` (skipped otherwise).
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest

from tests.harness.process import free_port

ROOT = Path(__file__).resolve().parents[2]

_SCRIPT = r"""
set -e
mount -o remount,bind,ro /
mount -t tmpfs -o mode=1777,size=16m tmpfs "$SCRATCH"
if touch "$ROOT/.palisade-rootfs-probe" 2>/dev/null; then echo "root is writable" >&2; exit 9; fi
exec setpriv $IDS --inh-caps=-all --bounding-set=-all --no-new-privs \
    "$PY" -m palisade.cli.main nodeagent run --backend auto --kube off \
    --state-dir "$SCRATCH/palisade-nodeagent" --listen "127.0.0.1:$PORT" --node hardened-node
"""


def _get(url: str) -> tuple[int, dict[str, object]]:
    try:
        with urllib.request.urlopen(url, timeout=5) as r:
            return int(r.status), dict(json.loads(r.read()))
    except urllib.error.HTTPError as e:
        return int(e.code), dict(json.loads(e.read()))


def _interpreter_for_nobody() -> tuple[str, dict[str, str]] | None:
    """An interpreter user 65534 can run with the project importable, if any."""
    site = next(iter(Path(sys.prefix).glob("lib/python3*/site-packages")), None)
    candidates: list[tuple[str, dict[str, str]]] = [(sys.executable, {})]
    system = shutil.which("python3", path="/usr/bin:/usr/local/bin")
    if system and site is not None:
        candidates.append((system, {"PYTHONPATH": f"{ROOT}:{site}"}))
    for exe, env in candidates:
        probe = subprocess.run(
            [
                "setpriv",
                "--reuid=65534",
                "--regid=65534",
                "--clear-groups",
                exe,
                "-c",
                f"import sys; assert sys.version_info[:2] == {tuple(sys.version_info[:2])}; "
                "import nodeagent.app, pynvml",
            ],
            env={**os.environ, **env},
            cwd=ROOT,
            capture_output=True,
            timeout=60,
        )
        if probe.returncode == 0:
            return exe, env
    return None


@pytest.mark.parametrize("user", ["root-without-capabilities", "nobody"])
def test_the_agent_runs_ready_on_a_read_only_root_without_capabilities_or_driver(
    tmp_path: Path, user: str
) -> None:
    if os.geteuid() != 0 or not (shutil.which("unshare") and shutil.which("setpriv")):
        pytest.skip("needs root, unshare and setpriv")
    py, extra = sys.executable, dict[str, str]()
    ids = ""
    if user == "nobody":
        found = _interpreter_for_nobody()
        if found is None:
            pytest.skip("no interpreter with the project that user 65534 can run")
        py, extra = found
        ids = "--reuid=65534 --regid=65534 --clear-groups"
        # the kubelet's PodResources socket is root-only, as on a node: the agent runs without it
        kubelet_dir = tmp_path / "pod-resources"
        kubelet_dir.mkdir(mode=0o700)
        listener = socket.socket(socket.AF_UNIX)
        listener.bind(str(kubelet_dir / "kubelet.sock"))
        extra["PALISADE_NODEAGENT_POD_RESOURCES_SOCKET"] = str(kubelet_dir / "kubelet.sock")
    port = free_port()
    # not under tmp_path: pytest's folders are root-only, and user 65534 must reach it
    scratch = Path(tempfile.mkdtemp(prefix="palisade-podsec-"))
    scratch.chmod(0o755)
    log = (tmp_path / "agent.log").open("wb")
    proc = subprocess.Popen(
        ["unshare", "-m", "--propagation", "private", "sh", "-c", _SCRIPT],
        env={
            **os.environ,
            **extra,
            "KUBERNETES_SERVICE_HOST": "",
            "PORT": str(port),
            "PY": py,
            "IDS": ids,
            "ROOT": str(ROOT),
            "SCRATCH": str(scratch),
            "TMPDIR": str(scratch),
        },
        cwd=ROOT,
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 30
        ready: tuple[int, dict[str, object]] = (0, {})
        while time.monotonic() < deadline and proc.poll() is None:
            try:
                ready = _get(url + "/readyz")
                if ready[0] == 200:
                    break
            except OSError:
                pass
            time.sleep(0.1)
        logged = (tmp_path / "agent.log").read_text()
        if proc.poll() is not None and "unshare" in logged and "Operation not permitted" in logged:
            pytest.skip(f"no mount namespaces here: {logged.strip()}")
        assert ready == (200, {"ready": True, "mode": "no-gpu"}), logged
        assert _get(url + "/healthz") == (200, {"health": "ok: no GPU"})
        code, owner = _get(url + "/attribution?pid=1")
        assert code == 200 and owner["pid"] == 1, owner
        assert owner["kind"] in ("host", "unknown-pod") and owner["attributed"] is False
        status = _get(url + "/status")[1]
        assert "no NVIDIA driver" in str(status["detail"])
    finally:
        with contextlib.suppress(ProcessLookupError):  # it may have exited already
            os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(15)
        finally:
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()
            log.close()
            shutil.rmtree(scratch, ignore_errors=True)
    assert proc.returncode == 0, (tmp_path / "agent.log").read_text()
    assert not (ROOT / ".palisade-rootfs-probe").exists()
