"""A small synchronous client for the distributor's HTTP/JSON fleet API (used by the CLI).

The address comes from ``--url`` or ``PALISADE_DISTRIBUTOR_URL``; the bearer
token from ``--token-file`` or ``PALISADE_ADMIN_TOKEN``. Errors become
``ApiError`` with the server's message; the token never appears in one.
"""

from __future__ import annotations

import json
import urllib.error
import urllib.parse
import urllib.request
from dataclasses import dataclass, field
from typing import Any

DEFAULT_URL = "http://127.0.0.1:8080"


class ApiError(Exception):
    """The distributor refused a request or could not be reached."""


@dataclass(frozen=True)
class FleetApi:
    url: str = DEFAULT_URL
    token: str = field(default="", repr=False)
    timeout_s: float = 10.0

    def request(self, method: str, path: str, body: Any = None, **query: Any) -> Any:
        q = {k: v for k, v in query.items() if v not in (None, "", 0, False)}
        full = self.url.rstrip("/") + path + (f"?{urllib.parse.urlencode(q)}" if q else "")
        if not full.startswith(("http://", "https://")):
            raise ApiError(f"distributor URL must be http(s): {self.url!r}")
        data = None if body is None else json.dumps(body).encode()
        req = urllib.request.Request(full, data=data, method=method)  # noqa: S310 - checked
        req.add_header("Content-Type", "application/json")
        if self.token:
            req.add_header("Authorization", f"Bearer {self.token}")
        try:
            with urllib.request.urlopen(req, timeout=self.timeout_s) as resp:  # noqa: S310
                return json.loads(resp.read() or b"{}")
        except urllib.error.HTTPError as exc:
            try:
                message = json.loads(exc.read() or b"{}").get("error", "")
            except ValueError:
                message = ""
            raise ApiError(f"{method} {path}: HTTP {exc.code}: {message or exc.reason}") from None
        except (urllib.error.URLError, OSError, ValueError) as exc:
            raise ApiError(f"cannot reach the distributor at {self.url}: {exc}") from None

    def fleet(self, kind: str = "", include_gone: bool = False) -> list[dict[str, Any]]:
        return list(self.request("GET", "/v1/fleet", kind=kind, all=int(include_gone))["clients"])

    def bundles(self) -> dict[str, Any]:
        return dict(self.request("GET", "/v1/bundles"))

    def rollback(self, to: int, by: str) -> dict[str, Any]:
        return dict(self.request("POST", "/v1/bundles/rollback", {"to": to, "by": by}))

    def approvals(self, status: str = "") -> list[dict[str, Any]]:
        return list(self.request("GET", "/v1/approvals", status=status)["approvals"])

    def decide(self, approval_id: str, approve: bool, by: str, comment: str) -> dict[str, Any]:
        body = {"decision": "approve" if approve else "deny", "by": by, "comment": comment}
        path = f"/v1/approvals/{urllib.parse.quote(approval_id, safe='')}"
        return dict(self.request("POST", path, body)["approval"])

    def audit(self, **filters: Any) -> list[dict[str, Any]]:
        return list(self.request("GET", "/v1/audit", **filters)["records"])
