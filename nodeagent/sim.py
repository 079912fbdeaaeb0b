"""A simulated GPU node described by a YAML scenario, on an injected clock.

For development, tests, demos and the benchmark. One file describes GPUs (with
an optional MIG layout), processes and their memory over time, the pods the
kubelet knows with their device allocations, namespace labels, and events (a
GPU disappearing, an XID error). Time is seconds since the scenario started,
read from the injected clock, so tests step through a scenario deterministically.

Values that change over time are either a number or a list of ``[t, value]``
steps (the value of the last step at or before ``t``). See
``examples/gpu-sim/README.md`` for the full format.
"""

from __future__ import annotations

import bisect
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from nodeagent.gpu import BackendMode, Clock, GpuSample, MigSample, NodeSnapshot, ProcessSample
from nodeagent.pods import ContainerDevices, PodIndex, PodInfo, StaticAllocations, strip_runtime

GIB = 2**30


class ScenarioError(ValueError):
    """The scenario file is malformed; the message names the field."""


Timeline = Callable[[float], float]


def _timeline(value: Any, where: str) -> Timeline:
    if isinstance(value, int | float) and not isinstance(value, bool):
        v = float(value)
        return lambda _t: v
    if isinstance(value, list) and value:
        steps: list[tuple[float, float]] = []
        for step in value:
            if not (isinstance(step, list | tuple) and len(step) == 2):
                raise ScenarioError(f"{where}: each step must be [t, value], got {step!r}")
            try:
                steps.append((float(step[0]), float(step[1])))
            except (TypeError, ValueError) as exc:
                raise ScenarioError(f"{where}: step {step!r} is not numeric") from exc
        steps.sort()
        times = [s[0] for s in steps]

        def at(t: float) -> float:
            i = bisect.bisect_right(times, t) - 1
            return steps[i][1] if i >= 0 else 0.0

        return at
    raise ScenarioError(f"{where}: expected a number or a list of [t, value] steps")


def _bytes(spec: Mapping[str, Any], key: str, where: str, default: Any = 0) -> Timeline:
    """``<key>Bytes`` or ``<key>GiB`` (number or timeline)."""
    if f"{key}GiB" in spec:
        inner = _timeline(spec[f"{key}GiB"], f"{where}.{key}GiB")
        return lambda t: inner(t) * GIB
    return _timeline(spec.get(f"{key}Bytes", default), f"{where}.{key}Bytes")


@dataclass
class _Mig:
    gi_id: int
    ci_id: int
    profile: str
    uuid: str
    slices: int
    memory_total: float


@dataclass
class _Gpu:
    index: int
    uuid: str
    name: str
    memory_total: float
    utilization: Timeline
    power: Timeline
    temperature: Timeline
    sm_clock: Timeline
    mem_clock: Timeline
    mig: list[_Mig]
    lost_at: float | None
    unsupported: tuple[str, ...]


@dataclass
class _Proc:
    pid: int
    gpu_uuid: str
    gi_id: int | None
    memory: Timeline
    start: float
    end: float | None
    cgroup: str


def _cgroup_for(pod_uid: str, container_id: str, qos: str = "besteffort") -> str:
    """What a containerd pod's process shows under cgroup v2 with the systemd driver."""
    u = pod_uid.replace("-", "_")
    return (
        f"0::/kubepods.slice/kubepods-{qos}.slice/kubepods-{qos}-pod{u}.slice/"
        f"cri-containerd-{container_id}.scope\n"
    )


class Scenario:
    """A parsed scenario; the backend, pod index and allocations are views of it."""

    def __init__(self, doc: Mapping[str, Any]) -> None:
        if not isinstance(doc, Mapping):
            raise ScenarioError("scenario must be a mapping")
        self.node = str(doc.get("node", "sim-node"))
        self.gpus: list[_Gpu] = []
        self.procs: list[_Proc] = []
        self.pods: list[PodInfo] = []
        self.allocations: list[ContainerDevices] = []
        self.namespaces: dict[str, dict[str, str]] = {}
        self.xids: list[tuple[float, str, int]] = []
        self._parse_gpus(doc.get("gpus") or [])
        self._parse_pods(doc.get("pods") or [])
        self._parse_procs(doc.get("processes") or [])
        for ns, labels in (doc.get("namespaces") or {}).items():
            self.namespaces[str(ns)] = {str(k): str(v) for k, v in (labels or {}).items()}
        self._parse_events(doc.get("events") or [])

    @classmethod
    def load(cls, path: str | Path) -> Scenario:
        try:
            doc = yaml.safe_load(Path(path).read_text())
        except (OSError, yaml.YAMLError) as exc:
            raise ScenarioError(f"cannot read scenario {path}: {exc}") from exc
        return cls(doc)

    def _uuid_of(self, ref: Any, where: str) -> str:
        for g in self.gpus:
            if ref in (g.uuid, g.index):
                return g.uuid
        raise ScenarioError(f"{where}: no GPU {ref!r}")

    def _parse_gpus(self, items: list[Any]) -> None:
        for i, g in enumerate(items):
            where = f"gpus[{i}]"
            if not isinstance(g, Mapping):
                raise ScenarioError(f"{where}: expected a mapping")
            index = int(g.get("index", i))
            uuid = str(g.get("uuid", f"GPU-{index:08d}-0000-0000-0000-000000000000"))
            mig: list[_Mig] = []
            for j, m in enumerate(g.get("mig") or []):
                mw = f"{where}.mig[{j}]"
                if not isinstance(m, Mapping) or "profile" not in m:
                    raise ScenarioError(f"{mw}: needs a profile")
                profile = str(m["profile"])
                slices = int(m.get("slices", int(profile.split("g", 1)[0] or 1)))
                gi = int(m.get("giId", j + 1))
                default_uuid = f"MIG-{index:04d}{gi:04d}-0000-0000-0000-000000000000"
                mig.append(
                    _Mig(
                        gi_id=gi,
                        ci_id=int(m.get("ciId", 0)),
                        profile=profile,
                        uuid=str(m.get("uuid", default_uuid)),
                        slices=slices,
                        memory_total=_bytes(m, "memoryTotal", mw, 10 * GIB)(0),
                    )
                )
            lost = g.get("lostAt")
            self.gpus.append(
                _Gpu(
                    index=index,
                    uuid=uuid,
                    name=str(g.get("name", "NVIDIA H100 80GB HBM3")),
                    memory_total=_bytes(g, "memoryTotal", where, 80 * GIB)(0),
                    utilization=_timeline(g.get("utilization", 0), f"{where}.utilization"),
                    power=_timeline(g.get("powerWatts", 100), f"{where}.powerWatts"),
                    temperature=_timeline(g.get("temperatureC", 40), f"{where}.temperatureC"),
                    sm_clock=_timeline(g.get("smClockMHz", 1980), f"{where}.smClockMHz"),
                    mem_clock=_timeline(g.get("memClockMHz", 2619), f"{where}.memClockMHz"),
                    mig=mig,
                    lost_at=float(lost) if lost is not None else None,
                    unsupported=tuple(str(x) for x in g.get("unsupported") or []),
                )
            )

    def _parse_pods(self, items: list[Any]) -> None:
        for i, p in enumerate(items):
            where = f"pods[{i}]"
            if not isinstance(p, Mapping) or not {"uid", "name", "namespace"} <= set(p):
                raise ScenarioError(f"{where}: needs uid, name and namespace")
            containers: dict[str, str] = {}
            for c in p.get("containers") or []:
                cid = strip_runtime(str(c.get("id", "")))
                containers[cid] = str(c.get("name", ""))
                for resource, ids in (c.get("devices") or {}).items():
                    devs = tuple(
                        self._uuid_of(d, where) if not str(d).startswith("MIG-") else str(d)
                        for d in ids
                    )
                    self.allocations.append(
                        ContainerDevices(
                            namespace=str(p["namespace"]),
                            pod=str(p["name"]),
                            container=str(c.get("name", "")),
                            resource=str(resource),
                            device_ids=devs,
                        )
                    )
            self.pods.append(
                PodInfo(
                    uid=str(p["uid"]),
                    name=str(p["name"]),
                    namespace=str(p["namespace"]),
                    containers=containers,
                )
            )

    def _parse_procs(self, items: list[Any]) -> None:
        pods = {p.name: p for p in self.pods}
        for i, p in enumerate(items):
            where = f"processes[{i}]"
            if not isinstance(p, Mapping) or "pid" not in p or "gpu" not in p:
                raise ScenarioError(f"{where}: needs pid and gpu")
            cgroup = p.get("cgroup")
            if cgroup is None and "pod" in p:
                pod = pods.get(str(p["pod"]))
                if pod is None:
                    raise ScenarioError(f"{where}: no pod {p['pod']!r}")
                cid = str(p.get("container", next(iter(pod.containers), "")))
                cgroup = _cgroup_for(pod.uid, cid)
            end = p.get("end")
            self.procs.append(
                _Proc(
                    pid=int(p["pid"]),
                    gpu_uuid=self._uuid_of(p["gpu"], where),
                    gi_id=int(p["gi"]) if "gi" in p else None,
                    memory=_bytes(p, "memory", where),
                    start=float(p.get("start", 0)),
                    end=float(end) if end is not None else None,
                    cgroup=str(cgroup) if cgroup is not None else "0::/system.slice/host.service\n",
                )
            )

    def _parse_events(self, items: list[Any]) -> None:
        for i, e in enumerate(items):
            where = f"events[{i}]"
            if not isinstance(e, Mapping) or "at" not in e or "gpu" not in e:
                raise ScenarioError(f"{where}: needs at and gpu")
            uuid = self._uuid_of(e["gpu"], where)
            kind = e.get("type")
            if kind == "lost":
                for g in self.gpus:
                    if g.uuid == uuid:
                        g.lost_at = float(e["at"])
            elif kind == "xid":
                self.xids.append((float(e["at"]), uuid, int(e.get("code", 0))))
            else:
                raise ScenarioError(f"{where}: unknown event type {kind!r} (lost, xid)")

    def pod_index(self) -> PodIndex:
        index = PodIndex()
        index.replace_all(self.pods)
        for ns, labels in self.namespaces.items():
            index.set_namespace(ns, labels)
        index.synced = True
        return index

    def static_allocations(self) -> StaticAllocations:
        return StaticAllocations(self.allocations)


class ScenarioCgroups:
    """The cgroup files of the scenario's processes (a :class:`CgroupReader`)."""

    def __init__(self, scenario: Scenario) -> None:
        self._by_pid = {p.pid: p.cgroup for p in scenario.procs}

    def read(self, pid: int) -> str | None:
        return self._by_pid.get(pid)


class SimulatedBackend:
    """A :class:`nodeagent.gpu.GpuBackend` playing a :class:`Scenario` on a clock."""

    def __init__(self, scenario: Scenario, clock: Clock) -> None:
        self.scenario = scenario
        self._clock = clock
        self._start = clock()
        self._energy: dict[str, float] = {g.uuid: 0.0 for g in scenario.gpus}
        self._last_t = 0.0
        self._last_xid_t = -1.0

    @property
    def mode(self) -> BackendMode:
        return BackendMode.SIMULATED

    def sample(self) -> NodeSnapshot:
        now = self._clock()
        t = now - self._start
        dt = max(0.0, t - self._last_t)
        gpus = tuple(self._gpu(g, t, dt) for g in self.scenario.gpus)
        self._last_t = t
        self._last_xid_t = t
        return NodeSnapshot(time=now, mode=BackendMode.SIMULATED, gpus=gpus, driver_version="sim")

    def _gpu(self, g: _Gpu, t: float, dt: float) -> GpuSample:
        if g.lost_at is not None and t >= g.lost_at:
            return GpuSample(index=g.index, uuid=g.uuid, name=g.name, ok=False, error="GPU is lost")
        procs = [
            p
            for p in self.scenario.procs
            if p.gpu_uuid == g.uuid and p.start <= t and (p.end is None or t < p.end)
        ]
        samples = tuple(
            ProcessSample(
                pid=p.pid,
                gpu_uuid=g.uuid,
                gi_id=p.gi_id,
                ci_id=0 if p.gi_id is not None else None,
                used_memory_bytes=int(p.memory(t)),
            )
            for p in procs
        )
        power = g.power(t)
        self._energy[g.uuid] += power * dt
        mig = tuple(
            MigSample(
                gi_id=m.gi_id,
                ci_id=m.ci_id,
                profile=m.profile,
                uuid=m.uuid,
                slices=m.slices,
                memory_used_bytes=sum(
                    s.used_memory_bytes or 0 for s in samples if s.gi_id == m.gi_id
                ),
                memory_total_bytes=int(m.memory_total),
                unsupported=("utilization",),
            )
            for m in g.mig
        )
        xids = tuple(
            code
            for at, uuid, code in self.scenario.xids
            if uuid == g.uuid and self._last_xid_t < at <= t
        )
        unsupported = g.unsupported
        if g.mig and "utilization" not in unsupported:
            unsupported = (*unsupported, "utilization")
        return GpuSample(
            index=g.index,
            uuid=g.uuid,
            name=g.name,
            mig_enabled=bool(g.mig),
            # Like NVML: no whole-GPU utilisation in MIG mode.
            utilization_pct=None if "utilization" in unsupported else g.utilization(t),
            memory_used_bytes=sum(s.used_memory_bytes or 0 for s in samples),
            memory_total_bytes=int(g.memory_total),
            power_watts=None if "power" in g.unsupported else power,
            energy_joules=None if "energy" in g.unsupported else self._energy[g.uuid],
            temperature_c=g.temperature(t),
            sm_clock_mhz=g.sm_clock(t),
            memory_clock_mhz=g.mem_clock(t),
            ecc_corrected=None if "ecc" in g.unsupported else 0,
            ecc_uncorrected=None if "ecc" in g.unsupported else 0,
            xid_events=xids,
            processes=samples,
            mig=mig,
            unsupported=unsupported,
        )

    def close(self) -> None:
        return None
