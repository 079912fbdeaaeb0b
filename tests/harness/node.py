"""A real single-node Kubernetes cluster for tests: kubelet, containerd, CNI, DNS.

``RealNode`` is a :class:`~tests.harness.controlplane.ControlPlane` (so
``kubectl()``, ``helm()``, ``request()``, ``env()`` and ``kubeconfig`` work the
same) whose processes all run inside a private network namespace
(:mod:`tests.harness.netns`): etcd, kube-apiserver (bound to 0.0.0.0, advertised
at the node IP), kube-controller-manager with every controller, kube-scheduler,
containerd, kubelet and kube-proxy (iptables mode). Add-ons: CoreDNS behind
``kube-dns`` at 10.96.0.10 and a default StorageClass with pre-created hostPath
volumes (:mod:`tests.harness.node_manifests`). Images are imported from the
archives that scripts/setup.d/42-node.sh builds; there is no registry, so pods
use ``imagePullPolicy: Never`` (or ``IfNotPresent``).

Needs Linux and root. One node per machine: ``start()`` takes a machine-wide
lock, sweeps what a killed run left behind, and records a state file before it
creates anything; ``stop()`` tears down in order and checks the host is clean
(:mod:`tests.harness.node_teardown`, :mod:`tests.harness.node_cleanup`).

    with RealNode() as node:
        node.kubectl("apply", "-f", "deploy.yaml")
        node.wait_ready("deployment", "default", "web")

``python -m tests.harness.node up|down|status`` runs one detached (see
:mod:`tests.harness.node_cli`).
"""

from __future__ import annotations

import json
import logging
import os
import subprocess
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from tests.harness import node_config as cfg
from tests.harness import node_manifests, pki
from tests.harness.binaries import KubeBinaries
from tests.harness.commands import ADMISSION_PLUGINS
from tests.harness.controlplane import ControlPlane, ControlPlaneConfig, HarnessError
from tests.harness.netns import NetNamespace
from tests.harness.node_binaries import NodeBinaries, find_node_binaries
from tests.harness.node_cleanup import sweep
from tests.harness.node_state import (
    MachineLock,
    NodeState,
    ProcessRecord,
    snapshot_cgroups,
    snapshot_fixed_dirs,
)
from tests.harness.node_teardown import teardown
from tests.harness.node_wait import ready_check
from tests.harness.process import ManagedProcess

log = logging.getLogger(__name__)
_SYSTEM_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"


class NodeUnavailable(HarnessError):
    """The real node cannot run here (not root, not Linux, another node running)."""


@dataclass(frozen=True)
class NodeConfig:
    """How to start the real node."""

    lock_timeout: float = 300.0
    """Seconds to wait for another node on this machine to finish."""
    start_timeout: float = 240.0
    """Seconds for each readiness wait (two shared CPU cores are slow)."""
    extra_apiserver_args: tuple[str, ...] = ()
    """Appended to kube-apiserver's command line (e.g. ``--feature-gates=...``)."""
    pv_sizes_gi: tuple[int, ...] = cfg.PV_SIZES_GI
    """Sizes of the pre-created hostPath PersistentVolumes."""
    detached: bool = False
    """Processes outlive this Python process (the ``up`` CLI)."""
    keep_dir: bool = field(default_factory=lambda: os.environ.get("PALISADE_KUBE_KEEP") == "1")
    """Keep the work directory (logs, configs) after teardown."""


class RealNode(ControlPlane):
    """Control plane + containerd + kubelet + kube-proxy + CoreDNS in one netns."""

    def __init__(
        self,
        config: NodeConfig | None = None,
        binaries: KubeBinaries | None = None,
        node_binaries: NodeBinaries | None = None,
    ) -> None:
        if os.geteuid() != 0:
            raise NodeUnavailable(
                "the real node needs root (network namespaces, mounts, cgroups); "
                "run the node tests as root"
            )
        self.node_config = config or NodeConfig()
        self.node_binaries = node_binaries or find_node_binaries()
        self.netns = NetNamespace.for_pid(os.getpid())
        self._node_workdir = Path(tempfile.mkdtemp(prefix="palisade-node-"))
        self.paths = cfg.NodePaths(self._node_workdir)
        pki_dir = self._node_workdir / "pki"
        super().__init__(
            ControlPlaneConfig(
                controllers=("*",),
                extra_apiserver_args=self.node_config.extra_apiserver_args,
                start_timeout=self.node_config.start_timeout,
                keep_dir=self.node_config.keep_dir,
                authorization_modes=cfg.AUTHORIZATION_MODES,
                admission_plugins=(*ADMISSION_PLUGINS, *cfg.NODE_ADMISSION_PLUGINS),
                bind_address="0.0.0.0",
                advertise_address=self.netns.node_ip,
                apiserver_port=cfg.APISERVER_PORT,
                etcd_host=self.netns.node_ip,
                serving_ips=(self.netns.node_ip,),
                extra_controller_manager_args=cfg.controller_manager_node_args(pki_dir),
                command_prefix=self.netns.prefix,
                detached=self.node_config.detached,
            ),
            binaries,
        )
        self.lock = MachineLock()
        self.state: NodeState | None = None
        self.timings: dict[str, float] = {}
        self._node_procs: dict[str, ManagedProcess] = {}
        self._stopped = False

    # --- ControlPlane hooks ----------------------------------------------------

    def _make_workdir(self) -> Path:
        return self._node_workdir

    def _extra_pki(self, ca: pki.KeyPair) -> dict[str, bytes]:
        node, ip = cfg.NODE_NAME, self.netns.node_ip
        certs = {
            "kubelet": pki.issue(ca, node, dns_names=(node,), ip_addresses=(ip,)),
            "kubelet-client": pki.issue(
                ca,
                f"system:node:{node}",
                organizations=("system:nodes",),
                server=False,
                client=True,
            ),
            "apiserver-kubelet-client": pki.issue(
                ca,
                "kube-apiserver-kubelet-client",
                organizations=("system:masters",),
                server=False,
                client=True,
            ),
            "kube-proxy": pki.issue(ca, "system:kube-proxy", server=False, client=True),
            "kube-scheduler": pki.issue(ca, "system:kube-scheduler", server=False, client=True),
        }
        files: dict[str, bytes] = {}
        for name, pair in certs.items():
            files[f"{name}.crt"] = pair.cert_pem
            files[f"{name}.key"] = pair.key_pem
        return files

    def _apiserver_extra_args(self) -> tuple[str, ...]:
        node_args = cfg.apiserver_node_args(self.workdir / "pki")
        return (*node_args, *self.config.extra_apiserver_args)

    # --- facts -----------------------------------------------------------------

    @property
    def node_name(self) -> str:
        return cfg.NODE_NAME

    @property
    def node_ip(self) -> str:
        return self.netns.node_ip

    @property
    def images(self) -> dict[str, str]:
        """Image names the node has imported: ``pause``, ``coredns``, ``hello``."""
        i = self.node_binaries.images
        return {"pause": i.pause_name, "coredns": i.coredns_name, "hello": i.hello_name}

    # --- lifecycle -------------------------------------------------------------

    def start(self) -> None:
        """Lock, sweep, then bring up every piece; on any failure tear down and raise."""
        t0 = time.monotonic()
        self.lock.acquire(self.node_config.lock_timeout)
        try:
            self._sweep_stale()
            self._record_state()
            self._phase("netns", self.netns.create)
            self._write_node_files()
            self._phase("containerd", self._start_containerd)
            self._phase("images", self._import_images)
            self._phase("control plane", super().start)
            self._record_control_plane()
            self._phase("node", self._start_node)
            self._phase("add-ons", self._start_addons)
        except BaseException:
            self.stop()
            raise
        self.timings["total"] = time.monotonic() - t0
        log.info("real node up in %.1fs: %s", self.timings["total"], self.timings)
        if self.node_config.detached:
            self.lock.release()  # the state file marks the node as up from now on

    def _phase(self, name: str, fn: Callable[[], None]) -> None:
        t = time.monotonic()
        fn()
        self.timings[name] = round(time.monotonic() - t, 2)

    def _sweep_stale(self) -> None:
        stale = NodeState.load()
        if stale is None:
            return
        if stale.owner_alive():
            raise NodeUnavailable(
                f"a real node is already up (state {stale.workdir}, owner pid "
                f"{stale.owner_pid}, detached={stale.detached}); stop it with "
                "`python -m tests.harness.node down`"
            )
        log.warning("sweeping a real node left by pid %d", stale.owner_pid)
        sweep(stale)

    def _record_state(self) -> None:
        self.state = NodeState(
            owner_pid=os.getpid(),
            detached=self.node_config.detached,
            netns=self.netns.name,
            host_if=self.netns.host_if,
            subnet=str(self.netns.subnet),
            workdir=str(self.workdir),
            preexisting=snapshot_fixed_dirs(),
            preexisting_cgroups=snapshot_cgroups(),
            kubeconfig=str(self.kubeconfig),
            keep_dir=self.node_config.keep_dir,
            server=f"https://{self.netns.node_ip}:{cfg.APISERVER_PORT}",
        )
        self.state.save()

    def _record(self, name: str, proc: ManagedProcess, binary: Path) -> None:
        assert self.state is not None and proc.pid is not None
        self.state.processes[name] = ProcessRecord(proc.pid, str(binary))
        self.state.save()

    def _record_control_plane(self) -> None:
        b = self.binaries
        binaries = {
            "etcd": b.etcd,
            "kube-apiserver": b.kube_apiserver,
            "kube-controller-manager": b.kube_controller_manager,
        }
        for proc in self.processes():
            if proc.name in binaries:
                self._record(proc.name, proc, binaries[proc.name])

    def _write_node_files(self) -> None:
        p, ca_pem = self.paths, self.ca_pem
        p.containerd_dir.mkdir()
        p.cni_conf_dir.mkdir()
        p.pv_dir.mkdir()
        for i in range(len(self.node_config.pv_sizes_gi)):
            # world-writable, as a local-path provisioner makes them: pods run as any user
            (p.pv_dir / f"pv-{i}").mkdir()
            (p.pv_dir / f"pv-{i}").chmod(0o777)
        pause = self.node_binaries.images.pause_name
        p.containerd_config.write_text(
            cfg.containerd_config(p, pause_image=pause, cni_bin_dir=self.node_binaries.cni_dir)
        )
        (p.cni_conf_dir / "10-palisade.conflist").write_text(json.dumps(cfg.cni_conflist()))
        (p.cni_conf_dir / "99-loopback.conf").write_text(json.dumps(cfg.cni_loopback()))
        p.resolv_conf.write_text(cfg.resolv_conf())
        pki_dir = self.workdir / "pki"
        kubelet = cfg.kubelet_config(
            p,
            node_ip=self.node_ip,
            ca_file=pki_dir / "ca.crt",
            cert_file=pki_dir / "kubelet.crt",
            key_file=pki_dir / "kubelet.key",
        )
        p.kubelet_config.write_text(yaml.safe_dump(kubelet))
        p.kube_proxy_config.write_text(yaml.safe_dump(cfg.kube_proxy_config(p)))
        server = f"https://{self.node_ip}:{cfg.APISERVER_PORT}"
        for component, cert in (
            ("kubelet", "kubelet-client"),
            ("kube-proxy", "kube-proxy"),
            ("kube-scheduler", "kube-scheduler"),
        ):
            doc = cfg.cert_kubeconfig(
                server,
                ca_pem,
                (pki_dir / f"{cert}.crt").read_bytes(),
                (pki_dir / f"{cert}.key").read_bytes(),
                component,
            )
            path = p.kubeconfig_for(component)
            path.write_text(yaml.safe_dump(doc))
            path.chmod(0o600)

    def _spawn(self, name: str, argv: Sequence[str], binary: Path) -> ManagedProcess:
        env = {**self._child_env(), "PATH": f"{self.node_binaries.bin_dir}:{_SYSTEM_PATH}"}
        proc = ManagedProcess(
            name,
            [*self.netns.prefix, *argv],
            self.workdir / f"{name}.log",
            env,
            detached=self.node_config.detached,
        )
        proc.start()
        self._node_procs[name] = proc
        self._record(name, proc, binary)
        return proc

    def _start_containerd(self) -> None:
        b = self.node_binaries
        proc = self._spawn(
            "containerd",
            [str(b.containerd), f"--config={self.paths.containerd_config}"],
            b.containerd,
        )
        self._wait(
            proc, lambda: self.ctr("version", check=False).returncode == 0, "containerd socket"
        )

    def ctr(
        self, *args: str, check: bool = True, timeout: float = 120
    ) -> subprocess.CompletedProcess[str]:
        """The real ``ctr`` against the node's containerd, in its ``k8s.io`` namespace."""
        argv = [
            str(self.node_binaries.ctr),
            f"--address={self.paths.containerd_socket}",
            "--namespace=k8s.io",
            *args,
        ]
        r = subprocess.run(argv, capture_output=True, text=True, timeout=timeout, check=False)
        if check and r.returncode != 0:
            raise HarnessError(f"ctr {' '.join(args)} failed: {r.stderr.strip()}")
        return r

    def import_image(self, tar_path: Path | str) -> str:
        """Import an OCI/Docker image archive into the node's containerd; returns ctr's output."""
        return self.ctr("images", "import", str(tar_path)).stdout

    def _import_images(self) -> None:
        i = self.node_binaries.images
        for tar in (i.pause, i.coredns, i.hello):
            self.import_image(tar)

    def _start_node(self) -> None:
        b, p = self.node_binaries, self.paths
        self._spawn("kube-scheduler", cfg.scheduler_args(b.kube_scheduler, p), b.kube_scheduler)
        kubelet = self._spawn(
            "kubelet", cfg.kubelet_args(b.kubelet, p, node_ip=self.node_ip), b.kubelet
        )
        self._spawn("kube-proxy", cfg.kube_proxy_args(b.kube_proxy, p), b.kube_proxy)
        self._wait(kubelet, lambda: self._is_ready("node", "", self.node_name), "Node Ready")

    def _start_addons(self) -> None:
        objs = [
            *node_manifests.storage(self.paths.pv_dir, self.node_config.pv_sizes_gi),
            *node_manifests.coredns(self.images["coredns"]),
        ]
        self.kubectl("apply", "-f", "-", input=json.dumps(node_manifests.as_list(objs)))
        self.wait_ready("deployment", "kube-system", "coredns")

    def stop(self) -> None:
        """Tear down in order and sweep the host clean; raises ``CleanupError`` if not clean."""
        if self._stopped:
            return
        self._stopped = True
        try:
            if self.state is not None:
                teardown(self.state, kubectl=self.binaries.kubectl, ctr=self.node_binaries.ctr)
            elif not self.config.keep_dir:
                ControlPlane.stop(self)  # never started: only the work dir to remove
        finally:
            for proc in [*self._node_procs.values(), *self.processes()]:
                proc.stop(timeout=1)  # already stopped by pid: this reaps them
            self.lock.release()

    # --- helpers ---------------------------------------------------------------

    def in_netns(
        self, argv: Sequence[str], *, check: bool = True, timeout: float = 60
    ) -> subprocess.CompletedProcess[str]:
        """Run a command inside the node's network namespace (e.g. curl a pod IP)."""
        return self.netns.run(argv, check=check, timeout=timeout)

    def _get(self, kind: str, namespace: str, name: str) -> dict[str, Any] | None:
        from tests.harness.node_wait import api_path

        status, raw = self._raw("GET", api_path(kind, namespace, name), None, timeout=5)
        return json.loads(raw) if status == 200 else None

    def _is_ready(self, kind: str, namespace: str, name: str) -> bool:
        try:
            obj = self._get(kind, namespace, name)
        except OSError:
            return False
        return obj is not None and ready_check(kind)(obj)

    def wait_ready(
        self, kind: str, namespace: str, name: str, timeout: float | None = None
    ) -> dict[str, Any]:
        """Wait until the object is ready (see :func:`~tests.harness.node_wait.ready_check`).

        Returns the object; raises :class:`HarnessError` with its status and the
        namespace's recent events on timeout.
        """
        limit = timeout if timeout is not None else self.node_config.start_timeout
        deadline = time.monotonic() + limit
        check = ready_check(kind)
        obj: dict[str, Any] | None = None
        while time.monotonic() < deadline:
            try:
                obj = self._get(kind, namespace, name)
            except OSError:
                obj = None
            if obj is not None and check(obj):
                return obj
            time.sleep(0.5)
        events = self.kubectl(
            "get",
            "events",
            *(["-n", namespace] if namespace else ["-A"]),
            "--sort-by=.lastTimestamp",
            check=False,
        ).stdout
        status = json.dumps((obj or {}).get("status"), indent=1)[:3000]
        raise HarnessError(
            f"{kind} {namespace}/{name} not ready after {limit:.0f}s; status: {status}\n"
            f"events:\n{events[-3000:]}"
        )

    def wait_service(
        self,
        namespace: str,
        name: str,
        target_port: int,
        endpoints: int = 1,
        timeout: float | None = None,
    ) -> set[str]:
        """Wait until the Service has ``endpoints`` ready endpoints on ``target_port``
        and kube-proxy's rules send its traffic to every one of them.

        Ready pods alone do not make a Service answer: the EndpointSlice controller
        and then kube-proxy must catch up (until then the ClusterIP refuses).
        Returns the endpoints (``ip:port``).
        """
        from tests.harness.node_wait import programmed_endpoints, ready_endpoints

        limit = timeout if timeout is not None else self.node_config.start_timeout
        deadline = time.monotonic() + limit
        selector = f"kubernetes.io/service-name={name}"
        path = f"/apis/discovery.k8s.io/v1/namespaces/{namespace}/endpointslices"
        ready: set[str] = set()
        programmed: set[str] = set()
        while time.monotonic() < deadline:
            slices = self.request("GET", f"{path}?labelSelector={selector}")
            ready = ready_endpoints(slices, target_port)
            nat = self.in_netns(["iptables-save", "-t", "nat"]).stdout
            programmed = programmed_endpoints(nat, namespace, name)
            if len(ready) >= endpoints and ready <= programmed:
                return ready
            time.sleep(0.5)
        proxy_log = self._node_procs["kube-proxy"].log_path.read_text(errors="replace")
        raise HarnessError(
            f"service {namespace}/{name} not reachable after {limit:.0f}s: "
            f"ready endpoints {sorted(ready)}, in kube-proxy's rules {sorted(programmed)}\n"
            f"kube-proxy log:\n{proxy_log[-3000:]}"
        )

    def pod_logs(self, namespace: str, name: str, container: str | None = None) -> str:
        """The pod's (or one container's) log, as ``kubectl logs`` prints it."""
        extra = ["-c", container] if container else []
        return self.kubectl("logs", "-n", namespace, name, *extra).stdout

    def exec(
        self, namespace: str, pod: str, *argv: str, container: str = "", check: bool = True
    ) -> subprocess.CompletedProcess[str]:
        """``kubectl exec`` in a pod (through the API server and the kubelet)."""
        where = ["-c", container] if container else []
        return self.kubectl("exec", "-n", namespace, pod, *where, "--", *argv, check=check)

    def log_paths(self) -> dict[str, Path]:
        """Each process's log file (kept after teardown with ``PALISADE_KUBE_KEEP=1``)."""
        return {p.name: p.log_path for p in [*self.processes(), *self._node_procs.values()]}


if __name__ == "__main__":
    from tests.harness.node_cli import main

    main()
