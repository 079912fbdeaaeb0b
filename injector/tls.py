"""Serving certificates at run time: the live SSLContext, the shared Secret, caBundle.

Two modes (docs/injector.md, "TLS"):

self-signed  The CA and serving certificate live in one Secret in the injector's
             namespace, so every replica serves a certificate from the same CA.
             The first replica creates it (a create conflict means another won:
             read theirs); rotation is a compare-and-swap update on the Secret's
             resourceVersion. Each replica writes the files, reloads its
             SSLContext in place (new handshakes use the new certificate) and
             makes sure every webhook in its MutatingWebhookConfiguration carries
             the CA bundle; a watch on that object re-patches it at once when
             something overwrites it, and a periodic resync covers missed events.
mounted      tls.crt / tls.key come from a mounted Secret (cert-manager); they are
             reloaded when the files change; caBundle is cert-manager's job.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import datetime as dt
import logging
import os
import random
import ssl
from collections.abc import Callable
from pathlib import Path
from typing import Any

from kubernetes_asyncio import client, watch
from kubernetes_asyncio.client.rest import ApiException

from injector import certs
from injector.certs import CertSet
from injector.settings import TLSSettings

log = logging.getLogger(__name__)

Clock = Callable[[], dt.datetime]
_SECRET_KEYS = {
    "ca_cert": "ca.crt",
    "ca_key": "ca.key",
    "cert": "tls.crt",
    "key": "tls.key",
    "previous_ca": "previous-ca.crt",
}


def utcnow() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


class ServingContext:
    """An SSLContext whose certificate can be swapped while the server runs."""

    def __init__(self, directory: str) -> None:
        self.directory = Path(directory)
        self.context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        self.context.minimum_version = ssl.TLSVersion.TLSv1_2
        self.loaded_cert = ""

    @property
    def ready(self) -> bool:
        return bool(self.loaded_cert)

    def load_pem(self, cert: str, key: str, ca: str = "") -> bool:
        """Write the files (atomically) and load them; False when already loaded."""
        if cert == self.loaded_cert:
            return False
        self.directory.mkdir(parents=True, exist_ok=True)
        for name, text in (("tls.crt", cert), ("tls.key", key), ("ca.crt", ca)):
            if not text:
                continue
            tmp = self.directory / f".{name}.tmp"
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
            with os.fdopen(fd, "w") as fh:
                fh.write(text)
            tmp.replace(self.directory / name)
        self.load_files()
        return True

    def load_files(self) -> None:
        """Load tls.crt / tls.key from the directory into the live context."""
        cert_file = self.directory / "tls.crt"
        self.context.load_cert_chain(cert_file, self.directory / "tls.key")
        self.loaded_cert = cert_file.read_text()
        log.info(
            "serving certificate loaded",
            extra={"not_after": str(certs.not_after(self.loaded_cert))},
        )


def encode_bundle(pem: str) -> str:
    """caBundle as it appears in the API's JSON (base64 of the PEM bytes)."""
    return base64.b64encode(pem.encode()).decode()


def ca_bundle_ops(config: Any, wanted_b64: str) -> list[dict[str, Any]]:
    """JSON Patch ops that set caBundle on every webhook that lacks it (pure)."""
    ops: list[dict[str, Any]] = []
    for i, hook in enumerate(config.get("webhooks") or []):
        current = (hook.get("clientConfig") or {}).get("caBundle")
        if current != wanted_b64:
            ops.append({"op": "test", "path": f"/webhooks/{i}/name", "value": hook.get("name")})
            ops.append(
                {"op": "add", "path": f"/webhooks/{i}/clientConfig/caBundle", "value": wanted_b64}
            )
    return ops


class CABundleKeeper:
    """Keeps caBundle of one MutatingWebhookConfiguration equal to the CA bundle."""

    def __init__(self, api: client.ApiClient, name: str) -> None:
        self.api = api
        self.name = name
        self.admission = client.AdmissionregistrationV1Api(api)
        self.wanted = ""
        self.patches = 0

    async def _read(self) -> dict[str, Any] | None:
        try:
            obj = await self.admission.read_mutating_webhook_configuration(self.name)
        except ApiException as exc:
            if exc.status == 404:
                return None
            raise
        doc: dict[str, Any] = self.api.sanitize_for_serialization(obj)
        return doc

    async def ensure(self, bundle_pem: str) -> bool:
        """Patch when needed; True when a patch was sent. Retries on a lost race."""
        self.wanted = encode_bundle(bundle_pem)
        for _ in range(5):
            doc = await self._read()
            if doc is None:
                log.warning("webhook configuration not found", extra={"webhook_config": self.name})
                return False
            ops = ca_bundle_ops(doc, self.wanted)
            if not ops:
                return False
            try:
                await self.admission.patch_mutating_webhook_configuration(self.name, ops)
            except ApiException as exc:
                if exc.status in (409, 422):  # changed under us: read again
                    continue
                raise
            self.patches += 1
            log.info(
                "caBundle patched", extra={"webhook_config": self.name, "webhooks": len(ops) // 2}
            )
            return True
        return False

    async def watch(self, stop: asyncio.Event) -> None:
        """Re-patch as soon as the configuration changes; reconnect with backoff."""
        delay = 1.0
        while not stop.is_set():
            try:
                async with watch.Watch() as w:
                    stream = w.stream(
                        self.admission.list_mutating_webhook_configuration,
                        field_selector=f"metadata.name={self.name}",
                        timeout_seconds=300,
                    )
                    async for event in stream:
                        delay = 1.0
                        obj = event["raw_object"]
                        if (
                            self.wanted
                            and event["type"] != "DELETED"
                            and ca_bundle_ops(obj, self.wanted)
                        ):
                            log.warning(
                                "caBundle was overwritten; restoring",
                                extra={"webhook_config": self.name},
                            )
                            await self.ensure_current()
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                log.warning(
                    "webhook configuration watch failed", extra={"error": type(exc).__name__}
                )
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(stop.wait(), delay + random.uniform(0, delay))  # noqa: S311
                delay = min(delay * 2, 30.0)

    async def ensure_current(self) -> None:
        if not self.wanted:
            return
        await self.ensure(base64.b64decode(self.wanted).decode())


class SecretStore:
    """The shared CertSet in a Secret; updates are compare-and-swap on resourceVersion."""

    def __init__(self, api: client.ApiClient, namespace: str, name: str) -> None:
        self.core = client.CoreV1Api(api)
        self.namespace = namespace
        self.name = name

    async def read(self) -> tuple[CertSet | None, str] | None:
        """None: no Secret. ``(None, version)``: the chart's empty Secret, to be filled."""
        try:
            secret = await self.core.read_namespaced_secret(self.name, self.namespace)
        except ApiException as exc:
            if exc.status == 404:
                return None
            raise
        data = secret.data or {}
        version = str(secret.metadata.resource_version)
        if not any(data.get(key) for key in _SECRET_KEYS.values()):
            return None, version
        fields = {
            attr: base64.b64decode(data.get(key, "")).decode() for attr, key in _SECRET_KEYS.items()
        }
        if not all(fields[a] for a in ("ca_cert", "ca_key", "cert", "key")):
            raise ValueError(f"Secret {self.namespace}/{self.name} lacks certificate keys")
        return CertSet(**fields), version

    def _body(self, cert_set: CertSet, resource_version: str | None) -> client.V1Secret:
        data = {
            key: base64.b64encode(getattr(cert_set, attr).encode()).decode()
            for attr, key in _SECRET_KEYS.items()
        }
        meta = client.V1ObjectMeta(
            name=self.name,
            namespace=self.namespace,
            labels={
                "app.kubernetes.io/component": "injector",
                "app.kubernetes.io/part-of": "palisade",
            },
            resource_version=resource_version,
        )
        return client.V1Secret(
            api_version="v1", kind="Secret", metadata=meta, type="Opaque", data=data
        )

    async def create(self, cert_set: CertSet) -> bool:
        """False when another replica created it first."""
        try:
            await self.core.create_namespaced_secret(self.namespace, self._body(cert_set, None))
        except ApiException as exc:
            if exc.status == 409:
                return False
            raise
        return True

    async def swap(self, cert_set: CertSet, resource_version: str) -> bool:
        """False when the Secret changed since ``resource_version`` was read."""
        try:
            await self.core.replace_namespaced_secret(
                self.name, self.namespace, self._body(cert_set, resource_version)
            )
        except ApiException as exc:
            if exc.status == 409:
                return False
            raise
        return True


class SelfSignedTLS:
    """Own CA and certificate, shared by replicas through a Secret; caBundle kept."""

    def __init__(
        self,
        settings: TLSSettings,
        namespace: str,
        api: client.ApiClient,
        serving: ServingContext,
        clock: Clock = utcnow,
    ) -> None:
        self.settings = settings
        self.names = certs.service_names(settings.service_name, namespace, settings.extra_sans)
        self.store = SecretStore(api, namespace, settings.secret_name)
        self.keeper = CABundleKeeper(api, settings.webhook_config)
        self.serving = serving
        self.clock = clock
        self.current: CertSet | None = None

    async def reconcile(self) -> CertSet:
        """Read or create the shared set, rotate it when due, load it, keep caBundle."""
        s = self.settings
        rotate_before = dt.timedelta(days=s.rotate_before_days)
        for _ in range(5):
            now = self.clock()
            found = await self.store.read()
            held = found[0] if found is not None else None
            if held is None:
                fresh = certs.create(self.names, now, s.ca_validity_days, s.cert_validity_days)
                # the chart makes the Secret empty (so uninstall removes it): fill it
                made = await (
                    self.store.create(fresh) if found is None else self.store.swap(fresh, found[1])
                )
                if not made:
                    continue
                cert_set = fresh
            else:
                assert found is not None
                cert_set, version = held, found[1]
                action = certs.plan(cert_set, self.names, now, rotate_before)
                rotated = certs.rotate(
                    cert_set, action, self.names, now, s.ca_validity_days, s.cert_validity_days
                )
                if rotated != cert_set:
                    log.info("rotating certificates", extra={"action": action})
                    if not await self.store.swap(rotated, version):
                        continue
                    cert_set = rotated
            # caBundle first: the API server must trust a new CA before we serve from it.
            await self.keeper.ensure(cert_set.ca_bundle)
            self.serving.load_pem(cert_set.cert, cert_set.key, cert_set.ca_bundle)
            self.current = cert_set
            return cert_set
        raise RuntimeError(
            f"could not settle Secret {self.settings.secret_name}: too many conflicts"
        )

    async def run(self, stop: asyncio.Event) -> None:
        """Watch caBundle and resync periodically until ``stop``."""
        watcher = asyncio.create_task(self.keeper.watch(stop))
        try:
            while not stop.is_set():
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(stop.wait(), self.settings.resync_seconds)
                if stop.is_set():
                    break
                try:
                    await self.reconcile()
                except Exception as exc:
                    log.warning("certificate resync failed", extra={"error": type(exc).__name__})
        finally:
            watcher.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await watcher


class MountedTLS:
    """Certificates from mounted files (cert-manager); reloaded when they change."""

    def __init__(self, settings: TLSSettings, serving: ServingContext) -> None:
        self.settings = settings
        self.serving = serving

    async def reconcile(self) -> None:
        await asyncio.to_thread(self._reload_if_changed)

    def _reload_if_changed(self) -> None:
        cert_file = self.serving.directory / "tls.crt"
        if cert_file.read_text() != self.serving.loaded_cert:
            self.serving.load_files()

    async def run(self, stop: asyncio.Event) -> None:
        while not stop.is_set():
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), min(self.settings.resync_seconds, 30.0))
            try:
                await self.reconcile()
            except (OSError, ssl.SSLError) as exc:
                log.warning("reloading mounted certificate failed", extra={"error": str(exc)})
