"""``palisade injector``: flags and environment -> Settings -> the running webhook.

The only place that reads the environment. Start-up, in order: a Kubernetes
client (in-cluster, or ``--kubeconfig``); the API server version, which decides
native sidecars in ``auto`` mode; the serving certificate (self-signed: from
the shared Secret, caBundle patched before serving; mounted: from files); then
the HTTPS listener. SIGTERM/SIGINT stop it through palisade.runtime.lifecycle:
the listener stops accepting, in-flight reviews finish, watches end.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import dataclasses
import logging
import os
import shlex
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from aiohttp import web
from cryptography import x509
from cryptography.hazmat.primitives import serialization

from injector import kube, tls, trust
from injector.choices import check_template
from injector.keysource import ConfigMapKeys
from injector.settings import (
    InjectionSettings,
    KeySourceSettings,
    ServerSettings,
    Settings,
    SidecarSettings,
    TLSSettings,
)
from injector.webhook import Webhook
from palisade.runtime.lifecycle import run_daemon
from palisade.runtime.logs import setup_logging

log = logging.getLogger(__name__)

_IN_CLUSTER_NAMESPACE = Path("/var/run/secrets/kubernetes.io/serviceaccount/namespace")
_DEFAULTS_SERVER = ServerSettings()
_DEFAULTS_TLS = TLSSettings()
_DEFAULTS_SIDECAR = SidecarSettings()
_DEFAULTS_KEYS = KeySourceSettings()


def _default_namespace(env: Mapping[str, str]) -> str:
    if env.get("PALISADE_INJECTOR_NAMESPACE"):
        return env["PALISADE_INJECTOR_NAMESPACE"]
    if env.get("POD_NAMESPACE"):
        return env["POD_NAMESPACE"]
    with contextlib.suppress(OSError):
        return _IN_CLUSTER_NAMESPACE.read_text().strip()
    return "palisade"


def register(parser: argparse.ArgumentParser, env: Mapping[str, str] | None = None) -> None:
    """Add the injector's flags; each defaults to its environment variable."""
    e = os.environ if env is None else env

    def opt(flag: str, var: str, default: object, help_text: str, **kw: Any) -> None:
        parser.add_argument(
            flag, default=e.get(var, default), help=f"{help_text} (env {var})", **kw
        )

    opt(
        "--listen",
        "PALISADE_INJECTOR_LISTEN",
        f"{_DEFAULTS_SERVER.host}:{_DEFAULTS_SERVER.port}",
        "HTTPS host:port",
    )
    parser.add_argument(
        "--namespace",
        default=_default_namespace(e),
        help="own namespace, never injected (env PALISADE_INJECTOR_NAMESPACE or POD_NAMESPACE)",
    )
    opt(
        "--service-name",
        "PALISADE_INJECTOR_SERVICE",
        _DEFAULTS_TLS.service_name,
        "the webhook's Service",
    )
    opt(
        "--webhook-config",
        "PALISADE_INJECTOR_WEBHOOK_CONFIG",
        _DEFAULTS_TLS.webhook_config,
        "MutatingWebhookConfiguration name",
    )
    opt(
        "--tls-mode",
        "PALISADE_INJECTOR_TLS_MODE",
        _DEFAULTS_TLS.mode,
        "self-signed or mounted",
        choices=["self-signed", "mounted"],
    )
    opt("--tls-dir", "PALISADE_INJECTOR_TLS_DIR", _DEFAULTS_TLS.directory, "certificate directory")
    opt(
        "--tls-secret",
        "PALISADE_INJECTOR_TLS_SECRET",
        _DEFAULTS_TLS.secret_name,
        "Secret shared by replicas (self-signed)",
    )
    parser.add_argument(
        "--extra-san",
        action="append",
        default=[s for s in e.get("PALISADE_INJECTOR_EXTRA_SANS", "").split(",") if s.strip()],
        help="more DNS names or IPs for the certificate (env PALISADE_INJECTOR_EXTRA_SANS)",
    )
    opt(
        "--cert-validity-days",
        "PALISADE_INJECTOR_CERT_VALIDITY_DAYS",
        _DEFAULTS_TLS.cert_validity_days,
        "serving certificate lifetime",
        type=int,
    )
    opt(
        "--ca-validity-days",
        "PALISADE_INJECTOR_CA_VALIDITY_DAYS",
        _DEFAULTS_TLS.ca_validity_days,
        "CA lifetime",
        type=int,
    )
    opt(
        "--rotate-before-days",
        "PALISADE_INJECTOR_ROTATE_BEFORE_DAYS",
        _DEFAULTS_TLS.rotate_before_days,
        "rotate with less than this left",
        type=int,
    )
    opt(
        "--resync-seconds",
        "PALISADE_INJECTOR_RESYNC_SECONDS",
        _DEFAULTS_TLS.resync_seconds,
        "caBundle/certificate recheck period",
        type=float,
    )
    opt("--kubeconfig", "KUBECONFIG", None, "kubeconfig for out-of-cluster runs")
    opt("--sidecar-image", "PALISADE_SIDECAR_IMAGE", _DEFAULTS_SIDECAR.image, "sidecar image")
    opt(
        "--sidecar-pull-policy",
        "PALISADE_SIDECAR_PULL_POLICY",
        _DEFAULTS_SIDECAR.pull_policy,
        "sidecar imagePullPolicy",
    )
    opt(
        "--sidecar-port",
        "PALISADE_SIDECAR_PORT",
        _DEFAULTS_SIDECAR.port,
        "sidecar listen port",
        type=int,
    )
    opt(
        "--port-name",
        "PALISADE_PORT_NAME",
        _DEFAULTS_SIDECAR.port_name,
        "MCP named port to take over",
    )
    opt(
        "--native-sidecar",
        "PALISADE_NATIVE_SIDECAR",
        "auto",
        "auto, always or never",
        choices=["auto", "always", "never"],
    )
    opt("--distributor", "PALISADE_DISTRIBUTOR", None, "distributor address for the sidecar")
    opt(
        "--sidecar-bundle-configmap",
        "PALISADE_SIDECAR_BUNDLE_CONFIGMAP",
        None,
        "without --distributor: ConfigMap (in each pod's namespace) holding the signed bundle",
    )
    parser.add_argument(
        "--sidecar-trusted-key",
        action="append",
        default=[e["PALISADE_SIDECAR_TRUSTED_KEYS"]]
        if e.get("PALISADE_SIDECAR_TRUSTED_KEYS", "").strip()
        else [],
        help="Ed25519 public key(s) that sign bundles, given to every sidecar: PEM text, "
        "a file or a directory of *.pem, repeatable; required with --distributor "
        "(env PALISADE_SIDECAR_TRUSTED_KEYS: PEM text, one or more blocks)",
    )
    opt(
        "--sidecar-distributor-ca",
        "PALISADE_SIDECAR_DISTRIBUTOR_CA",
        "",
        "with --distributor: CA certificate(s) (PEM text or a file) the sidecars verify the "
        "distributor's TLS certificate with; empty: plaintext gRPC",
    )
    opt(
        "--sidecar-trusted-keys-configmap",
        "PALISADE_SIDECAR_TRUSTED_KEYS_CONFIGMAP",
        None,
        "a ConfigMap in --namespace holding the bundle signing public key(s), watched: the "
        "distributor publishes its key there at first start; until a key is known, MCP "
        "server pods are refused with 'retry in a few seconds'",
    )
    opt(
        "--sidecar-trusted-keys-configmap-key",
        "PALISADE_SIDECAR_TRUSTED_KEYS_CONFIGMAP_KEY",
        _DEFAULTS_KEYS.key,
        "that ConfigMap's data key",
    )
    opt(
        "--sidecar-identity",
        "PALISADE_SIDECAR_IDENTITY",
        _DEFAULTS_SIDECAR.identity,
        "how sidecars verify callers: cluster-oidc (ServiceAccount tokens, the cluster's "
        "OIDC keys; no RBAC), token-review (needs system:auth-delegator), none",
        choices=["cluster-oidc", "token-review", "none"],
    )
    opt(
        "--sidecar-audience-template",
        "PALISADE_SIDECAR_AUDIENCE_TEMPLATE",
        _DEFAULTS_SIDECAR.audience_template,
        "token audience per MCP server ({namespace}, {server}); pods may override it with "
        "the annotation palisade.dev/audience",
    )
    opt(
        "--pod-firewall",
        "PALISADE_POD_FIREWALL",
        "enabled",
        "enabled: add the palisade-init packet filter (NET_ADMIN) so only the sidecar "
        "reaches the MCP container's port; disabled: rely on NetworkPolicy",
        choices=["enabled", "disabled"],
    )
    opt(
        "--sidecar-cpu-request",
        "PALISADE_SIDECAR_CPU_REQUEST",
        _DEFAULTS_SIDECAR.cpu_request,
        "sidecar CPU request",
    )
    opt(
        "--sidecar-memory-request",
        "PALISADE_SIDECAR_MEMORY_REQUEST",
        _DEFAULTS_SIDECAR.memory_request,
        "sidecar memory request",
    )
    opt(
        "--sidecar-cpu-limit",
        "PALISADE_SIDECAR_CPU_LIMIT",
        _DEFAULTS_SIDECAR.cpu_limit,
        "sidecar CPU limit",
    )
    opt(
        "--sidecar-memory-limit",
        "PALISADE_SIDECAR_MEMORY_LIMIT",
        _DEFAULTS_SIDECAR.memory_limit,
        "sidecar memory limit",
    )
    parser.add_argument(
        "--sidecar-extra-arg",
        action="append",
        default=shlex.split(e.get("PALISADE_SIDECAR_EXTRA_ARGS", "")),
        help="one more argument for `palisade sidecar`, repeatable "
        "(env PALISADE_SIDECAR_EXTRA_ARGS, shell-quoted)",
    )
    opt(
        "--namespace-cache-seconds",
        "PALISADE_INJECTOR_NAMESPACE_CACHE_SECONDS",
        _DEFAULTS_SERVER.namespace_cache_seconds,
        "namespace label cache",
        type=float,
    )
    opt("--log-level", "PALISADE_LOG_LEVEL", "info", "debug, info, warning, error")
    parser.set_defaults(func=run)


def _host_port(listen: str) -> tuple[str, int]:
    host, sep, port = listen.rpartition(":")
    if not sep or not port.isdigit():
        raise SystemExit(f"palisade injector: --listen must be host:port, got {listen!r}")
    return host.strip("[]") or "0.0.0.0", int(port)  # noqa: S104


def _key_texts(specs: list[str]) -> list[str]:
    """PEM texts from flags: inline PEM as it is, a file's text, a directory's ``*.pem``."""
    texts: list[str] = []
    for spec in specs:
        if "-----BEGIN" in spec:
            texts.append(spec)
            continue
        path = Path(spec)
        files = sorted(path.glob("*.pem")) if path.is_dir() else [path]
        for f in files:
            try:
                texts.append(f.read_text())
            except (OSError, UnicodeDecodeError) as exc:
                raise SystemExit(
                    f"palisade injector: cannot read trusted key {f}: {type(exc).__name__}"
                ) from None
    return texts


def trusted_keys_from(ns: argparse.Namespace) -> tuple[str, ...]:
    """The sidecars' trusted bundle keys; a distributor without one stops here."""
    try:
        keys = trust.normalize(_key_texts(list(ns.sidecar_trusted_key)))
    except trust.TrustError as exc:
        raise SystemExit(f"palisade injector: {exc}") from None
    if keys or ns.sidecar_trusted_keys_configmap:
        return keys  # with a ConfigMap, keys may appear later: pods wait for them
    if ns.sidecar_bundle_configmap and not ns.distributor:
        raise SystemExit(
            "palisade injector: --sidecar-bundle-configmap needs --sidecar-trusted-key (env "
            "PALISADE_SIDECAR_TRUSTED_KEYS): sidecars accept only bundles signed by a trusted key"
        )
    if ns.distributor:
        raise SystemExit(
            "palisade injector: --distributor needs --sidecar-trusted-key (env "
            "PALISADE_SIDECAR_TRUSTED_KEYS) or --sidecar-trusted-keys-configmap: injected "
            "sidecars verify every bundle with the distributor's public signing key(s) and "
            "refuse to start without one"
        )
    return keys


def distributor_ca_from(ns: argparse.Namespace) -> str:
    """The CA the sidecars trust for the distributor's TLS, as PEM text ("" for none)."""
    spec = (ns.sidecar_distributor_ca or "").strip()
    if not spec:
        return ""
    if not ns.distributor:
        raise SystemExit("palisade injector: --sidecar-distributor-ca needs --distributor")
    text = "".join(_key_texts([spec]))
    try:
        certs = x509.load_pem_x509_certificates(text.encode())
    except ValueError:
        raise SystemExit(
            "palisade injector: --sidecar-distributor-ca is not a PEM certificate"
        ) from None
    return "".join(c.public_bytes(serialization.Encoding.PEM).decode() for c in certs)


def _template(template: str) -> str:
    try:
        return check_template(template)
    except ValueError as exc:
        raise SystemExit(f"palisade injector: --sidecar-audience-template: {exc}") from None


def settings_from(ns: argparse.Namespace) -> Settings:
    """Settings from parsed flags (reads only key files named by ``--sidecar-trusted-key``)."""
    host, port = _host_port(ns.listen)
    return Settings(
        server=ServerSettings(
            host=host, port=port, namespace_cache_seconds=float(ns.namespace_cache_seconds)
        ),
        injection=InjectionSettings(
            own_namespace=ns.namespace,
            native_sidecar=ns.native_sidecar,
            sidecar=SidecarSettings(
                image=ns.sidecar_image,
                pull_policy=ns.sidecar_pull_policy,
                port=int(ns.sidecar_port),
                port_name=ns.port_name,
                distributor=ns.distributor or None,
                trusted_keys=trusted_keys_from(ns),
                distributor_ca=distributor_ca_from(ns),
                bundle_configmap=ns.sidecar_bundle_configmap or None,
                cpu_request=ns.sidecar_cpu_request,
                memory_request=ns.sidecar_memory_request,
                cpu_limit=ns.sidecar_cpu_limit,
                memory_limit=ns.sidecar_memory_limit,
                extra_args=tuple(ns.sidecar_extra_arg),
                identity=ns.sidecar_identity,
                audience_template=_template(ns.sidecar_audience_template),
                pod_firewall=ns.pod_firewall == "enabled",
            ),
        ),
        keys=KeySourceSettings(
            configmap=ns.sidecar_trusted_keys_configmap or None,
            key=ns.sidecar_trusted_keys_configmap_key,
        ),
        tls=TLSSettings(
            mode=ns.tls_mode,
            directory=ns.tls_dir,
            secret_name=ns.tls_secret,
            service_name=ns.service_name,
            webhook_config=ns.webhook_config,
            extra_sans=tuple(ns.extra_san),
            cert_validity_days=int(ns.cert_validity_days),
            ca_validity_days=int(ns.ca_validity_days),
            rotate_before_days=int(ns.rotate_before_days),
            resync_seconds=float(ns.resync_seconds),
        ),
        kubeconfig=ns.kubeconfig or None,
    )


async def serve(
    settings: Settings, stop: asyncio.Event, started: asyncio.Event | None = None
) -> None:
    """Run the webhook until ``stop`` is set."""
    api = await kube.api_client(settings.kubeconfig)
    try:
        injection = settings.injection
        if injection.native_sidecar == "auto":
            try:
                major, minor = await kube.server_version(api)
                supported = kube.native_sidecars_supported(major, minor)
            except Exception as exc:
                log.warning(
                    "API server version unknown; regular containers",
                    extra={"error": type(exc).__name__},
                )
                supported = False
            injection = dataclasses.replace(injection, cluster_supports_native=supported)
            log.info("native sidecars", extra={"supported": supported})
        serving = tls.ServingContext(settings.tls.directory)
        manager: tls.SelfSignedTLS | tls.MountedTLS
        if settings.tls.mode == "mounted":
            manager = tls.MountedTLS(settings.tls, serving)
        else:
            manager = tls.SelfSignedTLS(settings.tls, injection.own_namespace, api, serving)
        if not await _first_reconcile(manager, stop):
            return
        keys: ConfigMapKeys | None = None
        tasks: list[asyncio.Task[None]] = []
        if settings.keys.configmap:
            keys = ConfigMapKeys(
                api,
                injection.own_namespace,
                settings.keys.configmap,
                settings.keys.key,
                static=injection.sidecar.trusted_keys,
                min_refresh_seconds=settings.keys.min_refresh_seconds,
            )
            tasks.append(asyncio.create_task(keys.run(stop)))
        webhook = Webhook(
            injection,
            kube.KubeNamespaces(api, ttl=settings.server.namespace_cache_seconds),
            ready=lambda: serving.ready,
            max_body_bytes=settings.server.max_body_bytes,
            keys=keys,
        )
        runner = web.AppRunner(
            webhook.app(),
            handle_signals=False,
            access_log=None,
            shutdown_timeout=settings.server.shutdown_seconds,
        )
        await runner.setup()
        site = web.TCPSite(
            runner, settings.server.host, settings.server.port, ssl_context=serving.context
        )
        await site.start()
        log.info(
            "injector listening", extra={"host": settings.server.host, "port": settings.server.port}
        )
        tasks.append(asyncio.create_task(manager.run(stop)))
        if started is not None:
            started.set()
        try:
            await stop.wait()
        finally:
            await runner.cleanup()
            for task in tasks:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task
    finally:
        await api.close()


async def _first_reconcile(
    manager: tls.SelfSignedTLS | tls.MountedTLS, stop: asyncio.Event
) -> bool:
    """Get a serving certificate before listening; retry with backoff until ``stop``."""
    delay = 1.0
    while not stop.is_set():
        try:
            await manager.reconcile()
            return True
        except Exception as exc:
            log.warning(
                "no serving certificate yet; retrying",
                extra={
                    "error": type(exc).__name__,
                    "status": getattr(exc, "status", None),
                    "retry_s": delay,
                },
            )
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), delay)
        delay = min(delay * 2, 30.0)
    return False


def run(ns: argparse.Namespace) -> int:
    setup_logging(ns.log_level)
    settings = settings_from(ns)
    sidecar = settings.injection.sidecar
    if sidecar.distributor:
        log.info(
            "sidecars join the distributor",
            extra={
                "distributor": sidecar.distributor,
                "key_ids": trust.key_ids(sidecar.trusted_keys),
                "keys_configmap": settings.keys.configmap,
            },
        )
        if sidecar.bundle_configmap:
            log.warning("--sidecar-bundle-configmap is ignored: the distributor pushes bundles")
    elif sidecar.bundle_configmap:
        log.info(
            "sidecars read their bundle from a ConfigMap in their namespace",
            extra={
                "configmap": sidecar.bundle_configmap,
                "key_ids": trust.key_ids(sidecar.trusted_keys),
            },
        )
    elif sidecar.trusted_keys or settings.keys.configmap:
        log.warning("trusted keys given without a distributor or bundle ConfigMap: unused")
    else:
        log.warning("no distributor and no bundle ConfigMap: injected sidecars deny every call")

    async def main(stop: asyncio.Event) -> None:
        await serve(settings, stop)

    return run_daemon(main, grace_s=settings.server.shutdown_seconds + 5)
