"""The injector: admission latency in the handler, over HTTPS, and through kube-apiserver.

Rows:
- ``handler``: ``Webhook.review`` on a decoded AdmissionReview plus the JSON
  encode/decode around it (everything but HTTP), in this process pinned to one
  core; reviews/s is single-threaded throughput on that core.
- ``https``: the real aiohttp app over TLS on loopback, one keep-alive client,
  one review in flight.
- ``apiserver-baseline``: a dry-run pod create through the real kube-apiserver in
  a namespace the webhook does not select (no webhook call): the baseline.
- ``apiserver+webhook``: the same create in a labelled namespace, so the API
  server calls a real ``palisade injector`` process over HTTPS and applies
  its patch. ``x_baseline`` is the ratio to the baseline row's p50.
The API server rows need the harness binaries (``make setup``); without them
they are left out with a note.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import json
import os
import ssl
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from aiohttp import ClientSession, TCPConnector, web

from bench.common import Report, Target, summarize_us
from injector import certs
from injector.settings import InjectionSettings
from injector.tls import ServingContext
from injector.webhook import StaticNamespaces, Webhook

ROOT = Path(__file__).resolve().parent.parent
COLUMNS = ["path", "n", "p50_us", "p99_us", "mean_us", "max_us", "reviews_per_s", "x_baseline"]


def _pod(name: str = "mcp-0") -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {
            "name": name,
            "labels": {"palisade.dev/mcp-server": "kubernetes-mcp", "app": "mcp"},
            "annotations": {"team": "sre"},
        },
        "spec": {
            "initContainers": [{"name": "migrate", "image": "migrate:1"}],
            "containers": [
                {
                    "name": "server",
                    "image": "example/mcp:1",
                    "ports": [
                        {"name": "metrics", "containerPort": 9090},
                        {"name": "mcp", "containerPort": 8080},
                    ],
                    "readinessProbe": {"httpGet": {"path": "/health", "port": "mcp"}},
                    "volumeMounts": [{"name": "data", "mountPath": "/data"}],
                },
                {"name": "shipper", "image": "shipper:1"},
            ],
            "volumes": [{"name": "data", "emptyDir": {}}],
        },
    }


def _review_body(i: int) -> bytes:
    doc = {
        "apiVersion": "admission.k8s.io/v1",
        "kind": "AdmissionReview",
        "request": {
            "uid": f"bench-{i}",
            "kind": {"group": "", "version": "v1", "kind": "Pod"},
            "resource": {"group": "", "version": "v1", "resource": "pods"},
            "operation": "CREATE",
            "namespace": "payments",
            "userInfo": {"username": "system:serviceaccount:kube-system:replicaset-controller"},
            "object": _pod(),
        },
    }
    return json.dumps(doc).encode()


def _webhook() -> Webhook:
    labels = {"payments": {"palisade.dev/inject": "enabled", "palisade.dev/tenant": "payments"}}
    return Webhook(InjectionSettings(native_sidecar="always"), StaticNamespaces(labels))


def _row(name: str, samples: list[float], wall: float | None = None) -> dict[str, Any]:
    row: dict[str, Any] = {"path": name, "n": len(samples), **summarize_us(samples)}
    total = wall if wall is not None else sum(samples)
    row["reviews_per_s"] = len(samples) / total if total else float("nan")
    return row


async def _handler(n: int) -> dict[str, Any]:
    hook = _webhook()
    bodies = [_review_body(i) for i in range(64)]
    for body in bodies:  # warm-up
        json.dumps(await hook.review(json.loads(body)))
    samples = []
    started = time.perf_counter()
    for i in range(n):
        t0 = time.perf_counter()
        answer = await hook.review(json.loads(bodies[i % 64]))
        json.dumps(answer)
        samples.append(time.perf_counter() - t0)
    wall = time.perf_counter() - started
    assert "patch" in answer["response"], "the benchmark pod must be injected"
    return _row("handler", samples, wall)


async def _https(n: int) -> dict[str, Any]:
    hook = _webhook()
    with tempfile.TemporaryDirectory() as tmp:
        cert_set = certs.create(["127.0.0.1"], dt.datetime.now(dt.UTC), 1, 1)
        serving = ServingContext(tmp)
        serving.load_pem(cert_set.cert, cert_set.key)
        runner = web.AppRunner(hook.app(), handle_signals=False, access_log=None)
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", 0, ssl_context=serving.context)
        await site.start()
        port = runner.addresses[0][1]
        ctx = ssl.create_default_context(cadata=cert_set.ca_cert)
        try:
            async with ClientSession(connector=TCPConnector(ssl=ctx, limit=1)) as client:
                url = f"https://127.0.0.1:{port}/mutate"
                bodies = [_review_body(i) for i in range(64)]
                samples = []
                for i in range(n + 50):
                    t0 = time.perf_counter()
                    async with client.post(url, data=bodies[i % 64]) as r:
                        await r.read()
                    if i >= 50:
                        samples.append(time.perf_counter() - t0)
        finally:
            await runner.cleanup()
    return _row("https", samples)


def _apiserver_rows(n: int, notes: list[str]) -> list[dict[str, Any]]:
    sys.path.insert(0, str(ROOT))
    try:
        from tests.harness.binaries import BinariesMissing
        from tests.harness.controlplane import ControlPlane
        from tests.harness.process import ManagedProcess, free_port
    except ImportError as exc:
        notes.append(f"API server rows left out: harness not importable ({exc})")
        return []
    try:
        plane = ControlPlane()
    except BinariesMissing as exc:
        notes.append(f"API server rows left out: {exc}")
        return []
    rows: list[dict[str, Any]] = []
    with plane, tempfile.TemporaryDirectory(prefix="bench-injector-") as tmp:
        plane.create_namespace("palisade")
        plane.create_namespace("plain")
        plane.create_namespace("payments", labels={"palisade.dev/inject": "enabled"})
        port = free_port()
        plane.request(
            "POST",
            "/apis/admissionregistration.k8s.io/v1/mutatingwebhookconfigurations",
            _configuration(port),
        )
        argv = [
            sys.executable, "-m", "palisade.cli.main", "injector",
            "--kubeconfig", str(plane.kubeconfig), "--listen", f"127.0.0.1:{port}",
            "--namespace", "palisade", "--extra-san", "127.0.0.1",
            "--tls-dir", str(Path(tmp) / "tls"), "--log-level", "warning",
        ]  # fmt: skip
        proc = ManagedProcess("injector", argv, Path(tmp) / "injector.log", env=plane.env())
        proc.start()
        try:
            _wait_ready(plane, proc)
            base = asyncio.run(_creates(plane, "plain", n))
            hooked = asyncio.run(_creates(plane, "payments", n))
        finally:
            proc.stop()
    base_row = _row("apiserver-baseline", base)
    hook_row = _row("apiserver+webhook", hooked)
    hook_row["x_baseline"] = hook_row["p50_us"] / base_row["p50_us"]
    base_row["x_baseline"] = 1.0
    notes.append(
        "apiserver rows: sequential POST pods?dryRun=All over one keep-alive connection; "
        f"webhook adds {hook_row['p50_us'] - base_row['p50_us']:.0f} us at p50"
    )
    rows += [base_row, hook_row]
    return rows


def _configuration(port: int) -> dict[str, Any]:
    return {
        "apiVersion": "admissionregistration.k8s.io/v1",
        "kind": "MutatingWebhookConfiguration",
        "metadata": {"name": "palisade-injector"},
        "webhooks": [
            {
                "name": "inject.palisade.dev",
                "admissionReviewVersions": ["v1"],
                "clientConfig": {"url": f"https://127.0.0.1:{port}/mutate"},
                "rules": [
                    {
                        "operations": ["CREATE"],
                        "apiGroups": [""],
                        "apiVersions": ["v1"],
                        "resources": ["pods"],
                    }
                ],
                "failurePolicy": "Fail",
                "sideEffects": "None",
                "reinvocationPolicy": "IfNeeded",
                "timeoutSeconds": 5,
                "namespaceSelector": {
                    "matchExpressions": [
                        {
                            "key": "palisade.dev/inject",
                            "operator": "In",
                            "values": ["enabled", "required"],
                        }
                    ]
                },
                "objectSelector": {
                    "matchExpressions": [{"key": "palisade.dev/mcp-server", "operator": "Exists"}]
                },
            }
        ],
    }


def _wait_ready(plane: Any, proc: Any) -> None:
    path = "/apis/admissionregistration.k8s.io/v1/mutatingwebhookconfigurations/palisade-injector"
    deadline = time.monotonic() + 30
    while True:
        doc = plane.request("GET", path)
        if doc["webhooks"][0]["clientConfig"].get("caBundle"):
            return
        if not proc.running() or time.monotonic() > deadline:
            raise RuntimeError(f"injector did not start:\n{proc.log_tail()}")
        time.sleep(0.2)


async def _creates(plane: Any, namespace: str, n: int) -> list[float]:
    ctx = ssl.create_default_context(cafile=str(plane.ca_file))
    headers = {"Authorization": f"Bearer {plane.admin_token}", "Content-Type": "application/json"}
    url = f"{plane.server}/api/v1/namespaces/{namespace}/pods?dryRun=All"
    samples = []
    async with ClientSession(connector=TCPConnector(ssl=ctx, limit=1), headers=headers) as client:
        for i in range(n + 20):
            body = json.dumps(_pod(f"mcp-{i}"))
            t0 = time.perf_counter()
            async with client.post(url, data=body) as r:
                doc = await r.json()
                if r.status != 201:
                    raise RuntimeError(f"create failed: {r.status} {doc.get('message')}")
            if i >= 20:
                samples.append(time.perf_counter() - t0)
    injected = any(c["name"] == "palisade-sidecar" for c in doc["spec"].get("initContainers", []))
    if injected != (namespace == "payments"):
        raise RuntimeError(f"unexpected injection result in {namespace}")
    return samples


def run(quick: bool) -> Report:
    n = 2_000 if quick else 20_000
    notes: list[str] = []
    original = os.sched_getaffinity(0)
    core = min(original)
    os.sched_setaffinity(0, {core})
    try:
        handler = asyncio.run(_handler(n))
    finally:
        os.sched_setaffinity(0, original)
    notes.append(f"handler row pinned to CPU {core}; pod: 2 containers, 2 ports, init container")
    rows = [handler, asyncio.run(_https(200 if quick else 2_000))]
    rows += _apiserver_rows(50 if quick else 300, notes)
    report = Report(
        name="injector",
        title="palisade injector: admission latency (us) and reviews/s",
        columns=COLUMNS,
        rows=rows,
        targets=[
            Target("handler p99 <= 5 ms", "handler", "p99_us", "<=", 5_000.0),
            Target(">= 1,000 reviews/s on one core", "handler", "reviews_per_s", ">=", 1_000.0),
        ],
        notes=notes,
    )
    return report
