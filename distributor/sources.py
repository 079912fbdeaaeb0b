"""Where policy comes from: a directory of YAML files, or PolicyBundle custom resources.

A source yields snapshots: a list of ``(name, yaml_text)`` pairs, in a stable
order, each time its content may have changed. The server debounces the
snapshots, compiles the last one and publishes it when it compiles.

- ``FileSource`` polls the directory (``*.yaml``/``*.yml``, recursively) by
  (path, size, mtime); polling works the same on every filesystem, including
  the symlink swaps of a mounted ConfigMap, and costs one ``stat`` per file.
- ``CrdSource`` lists and watches ``policybundles.palisade.dev`` with
  kubernetes_asyncio and writes each resource's status (validity with file,
  line and field, revision, digest, rollout) back through the status subresource.
  Its snapshots are isolated (``distributor.compiler.isolate``): a resource that
  does not validate is set aside, served from its last valid spec (or left out
  if it never was valid), so the others keep flowing; ``rejected``,
  ``substituted`` and ``left_out`` say which, for the status reporter.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import yaml

from distributor.compiler import SourceError, isolate

log = logging.getLogger(__name__)

Snapshot = list[tuple[str, str]]
GROUP = "palisade.dev"
VERSION = "v1alpha1"
PLURAL = "policybundles"


def _is_policy_file(root: Path, path: Path) -> bool:
    """A ``*.yaml``/``*.yml`` file outside hidden directories: a mounted ConfigMap
    keeps the real files in ``..<timestamp>/`` and shows each key as a link to
    them, so reading the hidden copy too would load every document twice."""
    hidden = any(part.startswith(".") for part in path.relative_to(root).parts)
    return path.suffix in (".yaml", ".yml") and not hidden and path.is_file()


class FileSource:
    def published(self) -> None:
        """Files keep no last valid text: each snapshot is the directory as it is."""

    def __init__(self, directory: str | Path, *, interval_s: float = 1.0) -> None:
        self.dir = Path(directory)
        self.interval_s = interval_s

    def _signature(self) -> tuple[tuple[str, int, int], ...]:
        out = []
        for path in sorted(self.dir.rglob("*")):
            if _is_policy_file(self.dir, path):
                st = path.stat()
                out.append((str(path), st.st_size, st.st_mtime_ns))
        return tuple(out)

    def read(self) -> Snapshot:
        out: Snapshot = []
        for path in sorted(self.dir.rglob("*")):
            if _is_policy_file(self.dir, path):
                out.append((str(path.relative_to(self.dir)), path.read_text()))
        return out

    async def snapshots(self) -> AsyncIterator[Snapshot]:
        last: tuple[tuple[str, int, int], ...] | None = None
        while True:
            try:
                sig = await asyncio.to_thread(self._signature)
                if sig != last:
                    last = sig
                    yield await asyncio.to_thread(self.read)
            except OSError as exc:
                log.error(
                    "cannot read policy directory", extra={"dir": str(self.dir), "error": str(exc)}
                )
            await asyncio.sleep(self.interval_s)


def generation_of(d: Mapping[str, Any], key: str) -> int:
    """An integer field of metadata or status, 0 when absent or not an integer."""
    value = d.get(key)
    return value if isinstance(value, int) and not isinstance(value, bool) else 0


def cr_source_name(obj: Mapping[str, Any]) -> str:
    meta = obj.get("metadata", {})
    return f"policybundle/{meta.get('namespace', '')}/{meta.get('name', '')}"


def cr_to_yaml(obj: Mapping[str, Any]) -> str:
    """The parts of a PolicyBundle resource that make policy (no status, no server fields)."""
    meta = obj.get("metadata", {})
    doc = {
        "apiVersion": obj.get("apiVersion", f"{GROUP}/{VERSION}"),
        "kind": obj.get("kind", "PolicyBundle"),
        "metadata": {"name": meta.get("name", "")},
        "spec": obj.get("spec", {}),
    }
    return yaml.safe_dump(doc, sort_keys=False)


def with_transition_times(
    old: Mapping[str, Any], status: Mapping[str, Any], now: Callable[[], str]
) -> dict[str, Any]:
    """``status`` with each condition's lastTransitionTime (pure but for ``now``).

    As the Kubernetes API conventions ask, the time moves only when the condition's
    ``status`` changes; a new reason, message or observedGeneration keeps it.
    """
    prior = {c.get("type"): c for c in old.get("conditions") or [] if isinstance(c, dict)}
    conditions = []
    for cond in status.get("conditions", []):
        before = prior.get(cond["type"])
        kept = before.get("lastTransitionTime") if before else None
        same = before is not None and before.get("status") == cond["status"] and kept
        conditions.append({**cond, "lastTransitionTime": kept if same else now()})
    return {**status, "conditions": conditions}


class CrdSource:
    """List+watch PolicyBundles (all namespaces or one) and report status on them."""

    def __init__(self, api_client: Any, *, namespace: str = "") -> None:
        from kubernetes_asyncio import client

        self.api: Any = client.CustomObjectsApi(api_client)
        self.namespace = namespace
        self.objects: dict[str, dict[str, Any]] = {}
        #: Per resource: the last spec (as YAML) that compiled with the others, and its
        #: metadata.generation. Kept in memory; status.validGeneration survives restarts.
        self.last_valid: dict[str, str] = {}
        self.valid_generation: dict[str, int] = {}
        #: From the last snapshot: resources set aside, with their own errors.
        self.rejected: dict[str, tuple[SourceError, ...]] = {}
        self.substituted: frozenset[str] = frozenset()
        self.left_out: frozenset[str] = frozenset()
        #: From the last snapshot: (text, generation) of what compiled, until published.
        self._proposed: dict[str, tuple[str, int]] = {}

    def current(self) -> Snapshot:
        """Every resource's spec as it is now."""
        return [(name, cr_to_yaml(obj)) for name, obj in sorted(self.objects.items())]

    def snapshot(self) -> Snapshot:
        """What to compile: :meth:`current` with broken resources set aside (see isolate)."""
        current = self.current()
        known: dict[str, str | None] = {}
        for name, _ in current:
            if name in self.last_valid:
                known[name] = self.last_valid[name]
            elif generation_of((self.objects[name].get("status") or {}), "validGeneration"):
                known[name] = None  # valid once (before a restart); its text is gone
        result = isolate(current, known)
        self.rejected = dict(result.rejected)
        self.substituted, self.left_out = result.substituted, result.left_out
        # What compiled becomes each resource's last valid text only once it is published
        # (:meth:`published`): the replay gate may still refuse it.
        self._proposed = {}
        if not result.held:
            now = dict(current)
            for name, text in result.sources:
                if now.get(name) == text:
                    gen = generation_of(self.objects[name].get("metadata") or {}, "generation")
                    self._proposed[name] = (text, gen)
        for name in set(self.last_valid) - set(self.objects):
            self.last_valid.pop(name, None)
            self.valid_generation.pop(name, None)
        return list(result.sources)

    def published(self) -> None:
        """The last snapshot was published: what it held is each resource's last valid."""
        for name, (text, gen) in self._proposed.items():
            if name in self.objects:
                self.last_valid[name] = text
                self.valid_generation[name] = gen
        self._proposed = {}

    async def _list(self) -> tuple[list[dict[str, Any]], str]:
        if self.namespace:
            resp = await self.api.list_namespaced_custom_object(
                GROUP, VERSION, self.namespace, PLURAL
            )
        else:
            resp = await self.api.list_cluster_custom_object(GROUP, VERSION, PLURAL)
        return list(resp.get("items", [])), str(resp["metadata"].get("resourceVersion", ""))

    async def snapshots(self) -> AsyncIterator[Snapshot]:
        from kubernetes_asyncio import watch

        while True:
            try:
                items, rv = await self._list()
                self.objects = {cr_source_name(o): o for o in items}
                yield await asyncio.to_thread(self.snapshot)
                w = watch.Watch()
                func = (
                    self.api.list_namespaced_custom_object
                    if self.namespace
                    else self.api.list_cluster_custom_object
                )
                args: Sequence[str] = (
                    (GROUP, VERSION, self.namespace, PLURAL)
                    if self.namespace
                    else (GROUP, VERSION, PLURAL)
                )
                async with w.stream(func, *args, resource_version=rv, timeout_seconds=300) as s:
                    async for event in s:
                        obj = event["object"]
                        if not isinstance(obj, dict) or event["type"] == "ERROR":
                            break
                        name = cr_source_name(obj)
                        old = self.objects.get(name)
                        if event["type"] == "DELETED":
                            self.objects.pop(name, None)
                        else:
                            self.objects[name] = obj
                            if old is not None and old.get("spec") == obj.get("spec"):
                                continue  # a status write of ours, not a policy change
                        yield await asyncio.to_thread(self.snapshot)
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                log.warning("PolicyBundle watch restarting", extra={"error": str(exc)})
                await asyncio.sleep(1.0)

    async def write_status(
        self, name: str, status: Mapping[str, Any], *, now: Callable[[], str]
    ) -> None:
        """Patch one resource's status; ``conditions`` get lastTransitionTime ``now()``."""
        _, namespace, cr_name = name.split("/", 2)
        obj = self.objects.get(name)
        if obj is None:
            return
        old = obj.get("status") or {}
        body_status = with_transition_times(old, status, now)
        if old == body_status:
            return
        with contextlib.suppress(Exception):
            obj["status"] = body_status
        await self.api.patch_namespaced_custom_object_status(
            GROUP,
            VERSION,
            namespace,
            PLURAL,
            cr_name,
            {"status": body_status},
            _content_type="application/merge-patch+json",
        )
