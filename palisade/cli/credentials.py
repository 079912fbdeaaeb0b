"""The person's own bearer token for ``palisade approvals``, found as kubectl finds it.

In order, the first that gives one:

1. ``--token TOKEN``, then ``--token-file FILE``;
2. the environment variable ``PALISADE_TOKEN``;
3. the kubeconfig's current user (``--kubeconfig``, else ``$KUBECONFIG`` (the first
   file of the list that names a current context), else ``~/.kube/config``): its
   ``token``, its ``tokenFile``, or the token its ``exec`` credential plugin prints
   (an ``ExecCredential``, as ``kubectl`` runs it: ``kubelogin``, ``aws eks
   get-token``, ``gke-gcloud-auth-plugin``...). A user with only a client
   certificate has no token the distributor can verify: an error says so;
4. ``PALISADE_ADMIN_TOKEN``: only a distributor in ``--insecure-approvers`` mode
   accepts it for an answer.

The token is never printed, nor put in an error message.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

EXEC_TIMEOUT_S = 120.0


class CredentialError(Exception):
    """No usable token where one was expected (the message names where, never a token)."""


@dataclass(frozen=True)
class Found:
    token: str
    #: where it came from, for messages ("--token", "kubeconfig user alice", ...)
    source: str


def kubeconfig_paths(explicit: str = "") -> list[Path]:
    if explicit:
        return [Path(explicit).expanduser()]
    env = os.environ.get("KUBECONFIG", "")
    if env:
        return [Path(p).expanduser() for p in env.split(os.pathsep) if p]
    return [Path.home() / ".kube" / "config"]


def _load(path: Path) -> dict[str, Any] | None:
    try:
        doc = yaml.safe_load(path.read_text())
    except FileNotFoundError:
        return None
    except (OSError, yaml.YAMLError) as exc:
        raise CredentialError(f"cannot read kubeconfig {path}: {exc}") from None
    return doc if isinstance(doc, dict) else None


def _named(items: Any, name: str, key: str) -> dict[str, Any] | None:
    for item in items or ():
        if isinstance(item, dict) and item.get("name") == name:
            value = item.get(key)
            return value if isinstance(value, dict) else {}
    return None


def kubeconfig_token(explicit: str = "", context: str = "") -> Found | None:
    """The token of the user of ``context`` (default: the current one); None without kubeconfig."""
    docs = [(p, d) for p in kubeconfig_paths(explicit) if (d := _load(p)) is not None]
    if not docs:
        if explicit:
            raise CredentialError(f"kubeconfig {explicit} does not exist")
        return None
    current = context or next(
        (str(d["current-context"]) for _, d in docs if d.get("current-context")), ""
    )
    if not current:
        return None
    found_context = next(
        (c for _, d in docs if (c := _named(d.get("contexts"), current, "context")) is not None),
        None,
    )
    if found_context is None and context:
        raise CredentialError(f"kubeconfig has no context {context!r}")
    user_name = str((found_context or {}).get("user") or "")
    if not user_name:
        raise CredentialError(f"kubeconfig context {current!r} names no user")
    found = [
        (p, u) for p, d in docs if (u := _named(d.get("users"), user_name, "user")) is not None
    ]
    if not found:
        raise CredentialError(f"kubeconfig has no user {user_name!r}")
    path, user = found[0]
    where = f"kubeconfig user {user_name!r}"
    if user.get("token"):
        return Found(str(user["token"]).strip(), where)
    if user.get("tokenFile"):
        token_path = (path.parent / str(user["tokenFile"])).expanduser()
        try:
            return Found(token_path.read_text().strip(), f"{where} (tokenFile)")
        except OSError as exc:
            raise CredentialError(f"{where}: cannot read its tokenFile: {exc}") from None
    if isinstance(user.get("exec"), dict):
        return Found(_exec_token(user["exec"], where), f"{where} (exec plugin)")
    raise CredentialError(
        f"{where} has no token (a client certificate or auth-provider cannot be verified by"
        " the distributor); give --token or PALISADE_TOKEN, e.g."
        ' --token "$(kubectl create token NAME)"'
    )


def _exec_token(spec: dict[str, Any], where: str) -> str:
    """Run an exec credential plugin as kubectl does; the token of its ExecCredential."""
    command = str(spec.get("command") or "")
    if not command:
        raise CredentialError(f"{where}: exec plugin without a command")
    env = dict(os.environ)
    for item in spec.get("env") or ():
        if isinstance(item, dict) and "name" in item:
            env[str(item["name"])] = str(item.get("value") or "")
    api_version = str(spec.get("apiVersion") or "client.authentication.k8s.io/v1")
    env["KUBERNETES_EXEC_INFO"] = json.dumps(
        {
            "apiVersion": api_version,
            "kind": "ExecCredential",
            "spec": {"interactive": sys.stdin.isatty()},
        }
    )
    argv = [command, *(str(a) for a in spec.get("args") or ())]
    try:
        done = subprocess.run(  # the user's own kubeconfig names the command
            argv,
            stdout=subprocess.PIPE,
            env=env,
            timeout=EXEC_TIMEOUT_S,
            check=False,
        )
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise CredentialError(f"{where}: exec plugin {command!r} failed: {exc}") from None
    if done.returncode != 0:
        raise CredentialError(f"{where}: exec plugin {command!r} exited {done.returncode}")
    try:
        cred = json.loads(done.stdout)
        token = str((cred.get("status") or {}).get("token") or "")
    except (ValueError, AttributeError):
        raise CredentialError(
            f"{where}: exec plugin {command!r} printed no ExecCredential"
        ) from None
    if not token:
        raise CredentialError(f"{where}: exec plugin {command!r} gave no token")
    return token.strip()


def person_token(
    *, token: str = "", token_file: Path | None = None, kubeconfig: str = "", context: str = ""
) -> Found | None:
    """The approver's token (see the module docstring for the order); None when none."""
    if token:
        return Found(token.strip(), "--token")
    if token_file is not None:
        try:
            return Found(token_file.read_text().strip(), "--token-file")
        except OSError as exc:
            raise CredentialError(f"cannot read --token-file: {exc}") from None
    if os.environ.get("PALISADE_TOKEN"):
        return Found(os.environ["PALISADE_TOKEN"].strip(), "PALISADE_TOKEN")
    found = kubeconfig_token(kubeconfig, context)
    if found is not None:
        return found
    if os.environ.get("PALISADE_ADMIN_TOKEN"):
        return Found(os.environ["PALISADE_ADMIN_TOKEN"].strip(), "PALISADE_ADMIN_TOKEN")
    return None
