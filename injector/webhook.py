"""The aiohttp adapter: HTTP in, ``admission.respond`` in the middle, HTTP out.

It never looks inside the pod: it reads the body, checks the envelope, fetches
the namespace's labels through a ``NamespaceLabels`` (a Kubernetes client with
a short cache in production, a dict in tests and benchmarks) and hands both to
the pure engine. HTTP status codes are chosen only here: every answer to
``POST /mutate`` is HTTP 200 with an AdmissionReview, because the API server
reads a non-200 as a webhook failure and the reason would be lost; a body that
is not JSON or too large still gets a review (with whatever UID could be read).

Routes: ``POST /mutate``, ``GET /healthz`` (the process answers), ``GET /readyz``
(a serving certificate is loaded), ``GET /metrics`` (Prometheus).
"""

from __future__ import annotations

import dataclasses
import json
import logging
import time
from collections.abc import Callable, Mapping
from typing import Protocol

from aiohttp import web
from aiohttp.typedefs import Handler, Middleware
from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.exposition import CONTENT_TYPE_LATEST

from injector import admission
from injector.keysource import KeySource, KeyState
from injector.review import Review, ReviewError, deny, parse_review
from injector.settings import SYSTEM_NAMESPACES, InjectionSettings

log = logging.getLogger(__name__)


class NamespaceLookupError(Exception):
    """The namespace's labels could not be read (the pod is refused: fail closed)."""


class NamespaceLabels(Protocol):
    """Where namespace labels come from."""

    async def labels(self, namespace: str) -> Mapping[str, str] | None:
        """Labels of ``namespace``; None when it does not exist. Raises NamespaceLookupError."""
        ...


class StaticNamespaces:
    """Namespace labels from a dict (tests, benchmarks, out-of-cluster trials)."""

    def __init__(self, labels: Mapping[str, Mapping[str, str]]) -> None:
        self._labels = labels

    async def labels(self, namespace: str) -> Mapping[str, str] | None:
        return self._labels.get(namespace)


class Metrics:
    """The webhook's Prometheus metrics, in their own registry."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.reviews = Counter(
            "palisade_injector_reviews_total",
            "Admission reviews answered, by result.",
            ["result"],
            registry=self.registry,
        )
        self.duration = Histogram(
            "palisade_injector_review_duration_seconds",
            "Time to answer one admission review.",
            buckets=(0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1.0),
            registry=self.registry,
        )


def _result(review: Review) -> str:
    response = review.get("response")
    if response is None or not response["allowed"]:
        return "refused"
    return "injected" if "patch" in response else "allowed"


class Webhook:
    """The request handlers; ``settings`` is read on every review so it can be swapped."""

    def __init__(
        self,
        settings: InjectionSettings,
        namespaces: NamespaceLabels,
        ready: Callable[[], bool] = lambda: True,
        max_body_bytes: int = 8 * 2**20,
        keys: KeySource | None = None,
    ) -> None:
        self.settings = settings
        self.namespaces = namespaces
        #: The current trusted bundle keys (a watched ConfigMap); None: those in settings.
        self.keys = keys
        self._keyed: tuple[InjectionSettings, KeyState, InjectionSettings] | None = None
        self.ready = ready
        self.max_body_bytes = max_body_bytes
        self.metrics = Metrics()

    async def review(self, doc: object) -> Review:
        """One review, from a decoded JSON body to the answer (no HTTP)."""
        try:
            request = parse_review(doc)
        except ReviewError as exc:
            return deny(exc.uid, f"palisade injector: {exc.message}", code=400, reason="BadRequest")
        namespace = admission.request_namespace(request)
        labels: Mapping[str, str] | None = None
        kind = request.get("kind") or {}
        if (
            kind.get("kind") == "Pod"
            and request.get("operation") in ("CREATE", "UPDATE")
            and namespace
            and namespace not in SYSTEM_NAMESPACES
            and namespace != self.settings.own_namespace
        ):
            try:
                labels = await self.namespaces.labels(namespace)
            except NamespaceLookupError as exc:
                log.warning("namespace lookup failed", extra={"namespace": namespace})
                return deny(
                    request["uid"],
                    f"palisade injector: cannot read the labels of namespace {namespace}: {exc}",
                    code=500,
                    reason="InternalError",
                )
        settings = self.settings
        if self.keys is not None and labels and labels.get("palisade.dev/inject"):
            settings = self._with_keys(settings, await self.keys.current())
        return admission.respond(request, labels, settings)

    def _with_keys(self, settings: InjectionSettings, state: KeyState) -> InjectionSettings:
        """``settings`` with the current keys; rebuilt only when they (or settings) change."""
        cached = self._keyed
        if cached is not None and cached[0] is settings and cached[1] == state:
            return cached[2]
        sidecar = dataclasses.replace(settings.sidecar, trusted_keys=state.keys)
        keyed = dataclasses.replace(settings, sidecar=sidecar, trusted_keys_problem=state.problem)
        self._keyed = (settings, state, keyed)
        return keyed

    async def mutate(self, http: web.Request) -> web.Response:
        started = time.perf_counter()
        body = await http.read()
        try:
            doc: object = json.loads(body)
        except ValueError:
            answer = deny(
                "", "palisade injector: the body is not JSON", code=400, reason="BadRequest"
            )
        else:
            answer = await self.review(doc)
        self.metrics.reviews.labels(_result(answer)).inc()
        self.metrics.duration.observe(time.perf_counter() - started)
        return web.json_response(answer)

    async def healthz(self, _: web.Request) -> web.Response:
        return web.Response(text="ok\n")

    async def readyz(self, _: web.Request) -> web.Response:
        if self.ready():
            return web.Response(text="ready\n")
        return web.Response(status=503, text="no serving certificate yet\n")

    async def metrics_page(self, _: web.Request) -> web.Response:
        return web.Response(
            body=generate_latest(self.metrics.registry),
            headers={"Content-Type": CONTENT_TYPE_LATEST},
        )

    def app(self) -> web.Application:
        application = web.Application(
            client_max_size=self.max_body_bytes, middlewares=[self._too_large_middleware()]
        )
        application.router.add_post("/mutate", self.mutate)
        application.router.add_get("/healthz", self.healthz)
        application.router.add_get("/readyz", self.readyz)
        application.router.add_get("/metrics", self.metrics_page)
        return application

    def _too_large_middleware(self) -> Middleware:
        limit = self.max_body_bytes

        @web.middleware
        async def too_large(request: web.Request, handler: Handler) -> web.StreamResponse:
            try:
                return await handler(request)
            except web.HTTPRequestEntityTooLarge:
                message = f"palisade injector: the review is larger than {limit} bytes"
                return web.json_response(
                    deny("", message, code=413, reason="RequestEntityTooLarge")
                )

        return too_large
