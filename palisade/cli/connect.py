"""How a command reaches the distributor's HTTP API.

In order: ``--url``; ``PALISADE_DISTRIBUTOR_URL``; else the kubeconfig, as
``istioctl`` reaches istiod: the distributor is found in ``-n/--namespace``
(default ``palisade``) and port-forwarded to through the API server
(:mod:`palisade.cli.kube_target`, :mod:`palisade.cli.portforward`). Without
any kubeconfig either, ``http://127.0.0.1:8080`` (a distributor on this
machine).

The admin token: ``--token-file``, else ``PALISADE_ADMIN_TOKEN``, else (through
the kubeconfig) the chart's admin Secret, read with the user's own
credentials. A command that acts as the person (``approvals approve|deny``)
passes that person's token instead and no Secret is read.
"""

from __future__ import annotations

import argparse
import asyncio
import os
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

from palisade.cli.kube_target import DEFAULT_NAMESPACE, DiscoveryError, KubeAccess, discover
from palisade.cli.portforward import PortForward, PortForwardError
from palisade.distribution.api import DEFAULT_URL, ApiError, FleetApi

URL_ENV = "PALISADE_DISTRIBUTOR_URL"
TOKEN_ENV = "PALISADE_ADMIN_TOKEN"  # noqa: S105 - the variable's name, not a token


class UsageError(Exception):
    """Bad input on the command line (exit status 2)."""


def add_connection_args(parser: argparse.ArgumentParser, *, nested: bool = False) -> None:
    """The flags; ``nested``: under a parser that has them too, so unset ones leave its values."""

    def default(value: object) -> object:
        return argparse.SUPPRESS if nested else value

    g = parser.add_argument_group("reaching the distributor")
    g.add_argument(
        "--url",
        default=default(""),
        help=f"distributor HTTP API (env {URL_ENV}); default: found through the kubeconfig",
    )
    g.add_argument(
        "--token-file",
        type=Path,
        default=default(None),
        help=f"admin bearer token file (else env {TOKEN_ENV})",
    )
    g.add_argument(
        "--kubeconfig",
        default=default(""),
        help="kubeconfig to use (default: $KUBECONFIG, ~/.kube/config)",
    )
    g.add_argument(
        "--context", default=default(""), help="kubeconfig context (default: the current one)"
    )
    g.add_argument(
        "-n",
        "--namespace",
        default=default(DEFAULT_NAMESPACE),
        help=f"namespace the chart is installed in (default: {DEFAULT_NAMESPACE})",
    )


def admin_token(ns: argparse.Namespace) -> str:
    """The admin token given by flag or environment ('' when none was given)."""
    token_file = getattr(ns, "token_file", None)
    if token_file:
        try:
            return Path(token_file).read_text().strip()
        except OSError as exc:
            raise UsageError(f"cannot read --token-file: {exc.strerror or exc}") from None
    return os.environ.get(TOKEN_ENV, "").strip()


def explicit_url(ns: argparse.Namespace) -> str:
    return str(getattr(ns, "url", "") or os.environ.get(URL_ENV, ""))


def access_of(ns: argparse.Namespace) -> KubeAccess:
    return KubeAccess(
        kubeconfig=getattr(ns, "kubeconfig", "") or "",
        context=getattr(ns, "context", "") or "",
        namespace=getattr(ns, "namespace", DEFAULT_NAMESPACE) or DEFAULT_NAMESPACE,
    )


@contextmanager
def distributor(
    ns: argparse.Namespace,
    *,
    token: str | None = None,
    fallback: Callable[[], str] | None = None,
) -> Iterator[FleetApi]:
    """A client for the distributor ``ns`` names.

    ``token`` given: that token, and no admin Secret is read. Else the admin
    token (flag, environment, the chart's Secret); where there is none,
    ``fallback()`` (the person's own token). Raises :class:`ApiError` (exit 1)
    when the distributor cannot be reached, with the reason the kubeconfig path
    gave (RBAC refusal, no ready pod, tunnel error).
    """
    chosen = admin_token(ns) if token is None else token
    url = explicit_url(ns)
    access = access_of(ns)
    if url or not (access.kubeconfig or access.context or access.exists()):
        yield FleetApi(url or DEFAULT_URL, chosen or (fallback() if fallback else ""))
        return
    try:
        found = asyncio.run(discover(access, want_admin_token=token is None and not chosen))
    except DiscoveryError as exc:
        raise ApiError(str(exc)) from None
    target = found.target
    chosen = chosen or found.admin_token or (fallback() if fallback else "")
    forward = PortForward(found.configuration, target.namespace, target.pod, target.port)
    try:
        with forward as local:
            try:
                yield FleetApi(local, chosen)
            except ApiError as exc:
                raise ApiError(_explain(exc, forward.errors, found.token_problem)) from None
    except PortForwardError as exc:
        raise ApiError(str(exc)) from None


def _explain(exc: ApiError, tunnel_errors: list[str], token_problem: str) -> str:
    text = str(exc)
    if tunnel_errors:
        return tunnel_errors[0]
    if "HTTP 401" in text and token_problem:
        return f"{text} (no admin token: {token_problem})"
    return text
