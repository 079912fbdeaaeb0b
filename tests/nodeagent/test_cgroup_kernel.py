"""The cgroup parser on lines the running kernel writes, not on samples typed by hand.

The test lays out a kubelet's cgroup tree (cgroupfs and systemd shapes) under a
root of its own in every writable hierarchy of this machine (cgroup v1
controllers and the unified cgroup2 of a hybrid host, or a pure cgroup2), moves
real child processes into it, and reads their ``/proc/<pid>/cgroup``. It then
reads the same processes from inside a private cgroup namespace rooted at
another pod's container (``unshare -C``), as an agent container does under
cgroup v2, where the kernel writes the paths relative to that root (``/../..``).

Needs root and a writable cgroup filesystem (skipped otherwise). It never
touches the real ``/kubepods`` trees a kubelet on this machine may own.
"""

from __future__ import annotations

import contextlib
import json
import os
import secrets
import shutil
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from nodeagent.attribution import owner_of
from nodeagent.cgroup import Namespace, ProcCgroupReader, locate, parse
from nodeagent.pods import PodIndex, PodInfo

ROOT = Path(__file__).resolve().parents[2]
UID = "8dbc5577-d0e2-4706-8787-57d52c03ddf2"
AGENT_UID = "0b7e8a1c-1d2e-4f3a-9b8c-7d6e5f4a3b2c"
CID = "14011c7d92a9e513dfd69211da0413dbf319a5e45a02b354ba6e98e10272542d"
AGENT_CID = "d" * 64
SANDBOX = "b" * 64


def _hierarchies() -> list[Path]:
    """Mount points of every cgroup (v1) and cgroup2 filesystem of this process."""
    out: list[Path] = []
    try:
        lines = Path("/proc/self/mountinfo").read_text().splitlines()
    except OSError:
        return out
    for line in lines:
        left, _, right = line.partition(" - ")
        fstype = right.split(" ", 1)[0]
        if fstype in ("cgroup", "cgroup2"):
            out.append(Path(left.split()[4]))
    return out


Place = Callable[[str, int], None]


@pytest.fixture
def cgroups() -> Iterator[Place]:
    if os.geteuid() != 0:
        pytest.skip("needs root to create cgroups")
    base = f"palisade-test-{os.getpid()}-{secrets.token_hex(4)}"
    made: list[Path] = []
    usable: list[Path] = []
    for h in _hierarchies():
        try:
            (h / base).mkdir()
        except OSError:
            continue
        made.append(h / base)
        usable.append(h)

    def place(rel: str, pid: int) -> None:
        for h in list(usable):
            d = h / base / rel.strip("/")
            try:
                d.mkdir(parents=True, exist_ok=True)
                (d / "cgroup.procs").write_text(str(pid))
            except OSError:
                # e.g. cpuset needs cpus/mems first: leave this hierarchy out
                usable.remove(h)
        if not usable:
            pytest.skip("no cgroup hierarchy accepts processes here")

    try:
        if not made:
            pytest.skip("no writable cgroup filesystem")
        place.base = base  # type: ignore[attr-defined]
        yield place
    finally:
        for top in made:
            _remove_tree(top)


def _remove_tree(top: Path) -> None:
    deadline = time.monotonic() + 5
    while top.exists() and time.monotonic() < deadline:
        dirs = sorted((p for p in top.rglob("*") if p.is_dir()), key=lambda p: -len(p.parts))
        for d in [*dirs, top]:
            with contextlib.suppress(OSError):
                d.rmdir()
        if top.exists():
            time.sleep(0.05)


@pytest.fixture
def sleepers() -> Iterator[Callable[[], subprocess.Popen[bytes]]]:
    started: list[subprocess.Popen[bytes]] = []

    def start() -> subprocess.Popen[bytes]:
        p = subprocess.Popen(["sleep", "60"])
        started.append(p)
        return p

    yield start
    for p in started:
        p.kill()
        p.wait()


def _index() -> PodIndex:
    pods = PodIndex()
    pods.upsert(PodInfo(UID, "payments-api-0", "payments", {CID: "mcp-server"}))
    pods.set_namespace("payments", {"palisade.dev/tenant": "payments"})
    pods.synced = True
    return pods


def test_kernel_written_lines_for_a_cgroupfs_pod_name_the_pod_and_container(
    cgroups: Place, sleepers: Callable[[], subprocess.Popen[bytes]]
) -> None:
    proc = sleepers()
    cgroups(f"kubepods/besteffort/pod{UID}/{CID}", proc.pid)
    text = ProcCgroupReader().read(proc.pid)
    assert text is not None and f"pod{UID}/{CID}" in text
    ident = parse(text)
    assert ident is not None and (ident.pod_uid, ident.container_id) == (UID, CID)
    assert ident.driver == "cgroupfs"
    owner = owner_of(proc.pid, text, _index())
    assert (owner.namespace, owner.pod, owner.container, owner.tenant) == (
        "payments",
        "payments-api-0",
        "mcp-server",
        "payments",
    )


def test_kernel_written_lines_for_a_systemd_driver_pod_name_the_pod_and_container(
    cgroups: Place, sleepers: Callable[[], subprocess.Popen[bytes]]
) -> None:
    proc = sleepers()
    u = UID.replace("-", "_")
    cgroups(
        f"kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod{u}.slice/"
        f"cri-containerd-{CID}.scope",
        proc.pid,
    )
    text = ProcCgroupReader().read(proc.pid) or ""
    ident = parse(text)
    assert ident is not None
    assert (ident.pod_uid, ident.container_id, ident.runtime, ident.driver) == (
        UID,
        CID,
        "containerd",
        "systemd",
    )


_READER = """
import json, sys
from nodeagent.cgroup import Namespace
pids = [int(p) for p in sys.argv[1:]]
texts = {str(p): open(f"/proc/{p}/cgroup").read() for p in pids}
texts["self"] = open("/proc/self/cgroup").read()
ns = Namespace.detect("/proc")
print(json.dumps({"texts": texts, "private": ns.private}))
"""


def test_from_inside_a_pods_cgroup_namespace_other_pods_are_named_and_its_own_placed(
    cgroups: Place, sleepers: Callable[[], subprocess.Popen[bytes]]
) -> None:
    unshare = shutil.which("unshare")
    if unshare is None:
        pytest.skip("util-linux unshare is not installed")
    other, sibling = sleepers(), sleepers()
    cgroups(f"kubepods/burstable/pod{UID}/{CID}", other.pid)
    cgroups(f"kubepods/besteffort/pod{AGENT_UID}/{SANDBOX}", sibling.pid)
    base = cgroups.base  # type: ignore[attr-defined]
    # The reader joins the agent container's cgroup, then unshares its cgroup
    # namespace there: the kernel then writes every path relative to that root.
    agent_dir = f"{base}/kubepods/besteffort/pod{AGENT_UID}/{AGENT_CID}"
    files = []
    for h in _hierarchies():
        d = h / agent_dir
        if (h / base).is_dir():
            with contextlib.suppress(OSError):
                d.mkdir(parents=True, exist_ok=True)
            if (d.parent / SANDBOX).is_dir():
                files.append(str(d / "cgroup.procs"))
    script = (
        'for f in "$@"; do echo $$ > "$f" || exit 3; done; exec "$UNSHARE" -C "$PY" -c "$CODE" '
    )
    script += f"{other.pid} {sibling.pid} 1"
    run = subprocess.run(
        ["sh", "-c", script, "sh", *files],
        env={**os.environ, "UNSHARE": unshare, "PY": sys.executable, "CODE": _READER},
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=30,
    )
    if run.returncode != 0 and "unshare" in run.stderr:
        pytest.skip(f"no cgroup namespaces here: {run.stderr.strip()}")
    assert run.returncode == 0, run.stderr
    seen = json.loads(run.stdout)
    texts = seen["texts"]
    assert seen["private"] is True, texts["1"]
    ns = Namespace(private=True, pod_uid=AGENT_UID)
    assert "/../" in texts[str(other.pid)]
    # another pod: still named, through the relative path
    ident = parse(texts[str(other.pid)], ns)
    assert ident is not None and (ident.pod_uid, ident.container_id) == (UID, CID)
    # the agent's own pod: the sandbox beside it, and the agent itself
    sib = locate(texts[str(sibling.pid)], ns)
    assert sib.kind == "own-pod" and sib.identity is not None
    assert (sib.identity.pod_uid, sib.identity.container_id) == (AGENT_UID, SANDBOX)
    own = locate(texts["self"], ns)
    assert own.kind == "own-pod" and own.identity is not None
    assert own.identity.pod_uid == AGENT_UID
    # host init: above the namespace root, no pod: a host process
    assert locate(texts["1"], ns).kind == "host"
    assert owner_of(1, texts["1"], _index(), ns).kind == "host"
