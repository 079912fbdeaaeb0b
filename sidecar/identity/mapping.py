"""From verified claims to a bundle agent (pure).

The bundle's ``spec.agents[].identities`` say which credentials stand for which
agent (docs/bundle-format.md)::

    identities:
      - {issuer: "https://issuer.example", subject: "sre-bot"}
      - {serviceAccount: "payments/sre-agent"}

Delegation follows RFC 8693 section 4.1: when a token carries an ``act`` claim the
*subject* is the principal the token is about (the human) and ``act.sub`` is the
party acting for it (the agent). Nested ``act`` claims are earlier actors in the
chain and do not take part in access decisions. So with ``act`` the agent is found
by ``(act.iss or token iss, act.sub)`` and ``on_behalf_of`` is the token's ``sub``;
without ``act`` the agent is ``(iss, sub)`` and nobody else is behind it.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

SA_PREFIX = "system:serviceaccount:"


class MappingError(ValueError):
    """The claims are valid but name no agent, or name one ambiguously."""


@dataclass(frozen=True, slots=True)
class AgentRef:
    """The parts of a bundle agent that identity needs."""

    agent: str
    tenant: str = ""


@dataclass(frozen=True, slots=True)
class Match:
    """The agent a credential maps to, and who it acts for."""

    agent: AgentRef
    subject: str
    issuer: str
    on_behalf_of: str


def service_account_subject(namespace: str, name: str) -> str:
    return f"{SA_PREFIX}{namespace}:{name}"


class IdentityMap:
    """Lookup tables built once per bundle: ``(issuer, subject)`` and ServiceAccounts."""

    def __init__(self) -> None:
        self._by_subject: dict[tuple[str, str], AgentRef] = {}
        self._by_sa: dict[str, AgentRef] = {}

    @classmethod
    def from_agents(cls, agents: Iterable[Mapping[str, Any]]) -> IdentityMap:
        """Build from the bundle's ``spec.agents`` list (plain parsed YAML).

        Raises MappingError when two agents claim the same identity: the bundle is
        ambiguous and must not be guessed at.
        """
        table = cls()
        for raw in agents:
            agent_id = str(raw.get("id", ""))
            if not agent_id:
                raise MappingError("an agent without an id")
            ref = AgentRef(agent=agent_id, tenant=str(raw.get("tenant", "") or ""))
            for ident in raw.get("identities", []) or []:
                table.add(ref, ident)
        return table

    def add(self, ref: AgentRef, ident: Mapping[str, Any]) -> None:
        sa = ident.get("serviceAccount")
        if sa:
            namespace, sep, name = str(sa).partition("/")
            if not sep or not namespace or not name:
                raise MappingError(f"serviceAccount must be 'namespace/name', got {sa!r}")
            self._put(self._by_sa, f"{namespace}/{name}", ref)
            return
        issuer, subject = ident.get("issuer"), ident.get("subject")
        if not issuer or not subject:
            raise MappingError(f"agent {ref.agent}: an identity needs issuer and subject")
        self._put(self._by_subject, (str(issuer).rstrip("/"), str(subject)), ref)

    @staticmethod
    def _put(table: dict[Any, AgentRef], key: Any, ref: AgentRef) -> None:
        existing = table.get(key)
        if existing is not None and existing.agent != ref.agent:
            raise MappingError(
                f"identity {key!r} is claimed by both {existing.agent} and {ref.agent}"
            )
        table[key] = ref

    def lookup(self, issuer: str, subject: str, *, cluster: bool = False) -> AgentRef | None:
        """An agent by issuer and subject.

        ``serviceAccount`` identities match ``system:serviceaccount:ns:name`` subjects
        only when ``cluster`` is true, i.e. the token was issued by the cluster itself
        (TokenReview, or a configured cluster issuer): any other issuer could mint
        such a subject.
        """
        ref = self._by_subject.get((issuer.rstrip("/"), subject))
        if ref is None and cluster and subject.startswith(SA_PREFIX):
            namespace, _, name = subject.removeprefix(SA_PREFIX).partition(":")
            ref = self._by_sa.get(f"{namespace}/{name}")
        return ref

    def resolve(self, claims: Mapping[str, Any], *, cluster: bool = False) -> Match:
        """Map verified JWT claims to an agent, honouring RFC 8693 ``act`` delegation.

        ``cluster`` says the token came from the cluster's own issuer (see lookup).
        """
        issuer = str(claims.get("iss", ""))
        subject = str(claims.get("sub", ""))
        act = claims.get("act")
        if act is not None:
            if not isinstance(act, Mapping) or not act.get("sub"):
                raise MappingError("the act claim must be an object with a sub")
            actor_iss = str(act.get("iss") or issuer)
            actor_sub = str(act["sub"])
            ref = self.lookup(actor_iss, actor_sub, cluster=cluster and actor_iss == issuer)
            if ref is None:
                raise MappingError(f"actor {actor_sub!r} of issuer {actor_iss} is no known agent")
            return Match(agent=ref, subject=actor_sub, issuer=actor_iss, on_behalf_of=subject)
        ref = self.lookup(issuer, subject, cluster=cluster)
        if ref is None:
            raise MappingError(f"subject {subject!r} of issuer {issuer} is no known agent")
        return Match(agent=ref, subject=subject, issuer=issuer, on_behalf_of="")
