"""From verified claims to a bundle agent (pure).

The bundle's ``spec.agents[].identities`` say which credentials stand for which
agent (docs/bundle-format.md)::

    identities:
      - {issuer: "https://issuer.example", subject: "sre-bot"}
      - {serviceAccount: "payments/sre-agent"}

Delegation follows RFC 8693 section 4.1: when a token carries an ``act`` claim the
*subject* is the principal the token is about (the human) and ``act.sub`` is the
party acting for it (the agent); nested ``act`` claims are the earlier actors of
the chain. The agent decided is the outermost actor, and ``on_behalf_of`` is the
token's ``sub``; without ``act`` the agent is ``(iss, sub)`` and nobody else is
behind it.

An ``act`` chain never gives more than the issuer that *signed the token* may
grant: every hop is mapped within that issuer only. A hop whose ``act.iss``
names another issuer is refused, not looked up there (otherwise any trusted
issuer could mint a token whose actor is another issuer's most privileged
agent), and so is a hop that is malformed or maps to no agent of the signing
issuer. The whole chain, every hop with the agent it mapped to, is kept in
:attr:`Match.delegation` so that audit records show it, not only its outermost hop.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from sidecar.identity.principal import Actor

SA_PREFIX = "system:serviceaccount:"
#: Longest ``act`` chain accepted (hops, the outermost actor included).
MAX_DELEGATION_HOPS = 8
#: Longest issuer or subject kept, per hop, in what a refusal says of the chain.
_SHOWN_CHARS = 256


class MappingError(ValueError):
    """The claims are valid but name no agent, or name one ambiguously.

    ``delegation`` is the ``act`` chain as the token asserted it, outermost hop
    first (``{"issuer", "subject"}`` each, bounded), for the refusal's audit record.
    """

    def __init__(self, message: str, delegation: tuple[Mapping[str, str], ...] = ()) -> None:
        super().__init__(message)
        self.delegation = delegation


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
    #: The ``act`` chain, outermost actor (the agent decided) first; empty without ``act``.
    delegation: tuple[Actor, ...] = ()


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
        Every hop of an ``act`` chain must map to an agent of the token's own issuer
        (see the module docstring); anything else raises :class:`MappingError`.
        """
        issuer = str(claims.get("iss", ""))
        subject = str(claims.get("sub", ""))
        if "act" not in claims:
            ref = self.lookup(issuer, subject, cluster=cluster)
            if ref is None:
                raise MappingError(f"subject {subject!r} of issuer {issuer} is no known agent")
            return Match(agent=ref, subject=subject, issuer=issuer, on_behalf_of="")
        hops = _act_chain(claims["act"], issuer)
        asserted = tuple({"issuer": _shown(issuer), "subject": _shown(sub)} for sub in hops)
        chain: list[Actor] = []
        outer: AgentRef | None = None
        for depth, sub in enumerate(hops):
            ref = self.lookup(issuer, sub, cluster=cluster)
            if ref is None:
                role = "actor" if depth == 0 else f"earlier actor (hop {depth + 1})"
                raise MappingError(
                    f"{role} {_shown(sub)!r} of issuer {issuer} is no known agent", asserted
                )
            outer = outer or ref
            chain.append(Actor(issuer=issuer, subject=sub, agent=ref.agent, tenant=ref.tenant))
        assert outer is not None  # _act_chain returns at least one hop
        return Match(
            agent=outer,
            subject=hops[0],
            issuer=issuer,
            on_behalf_of=subject,
            delegation=tuple(chain),
        )


def _shown(text: str) -> str:
    return text if len(text) <= _SHOWN_CHARS else text[:_SHOWN_CHARS] + "..."


def _act_chain(act: Any, issuer: str) -> list[str]:
    """The subjects of an ``act`` chain, outermost first, every hop of ``issuer``.

    Raises :class:`MappingError` for a hop that is not an object with a string
    ``sub``, that names another issuer, or a chain longer than
    :data:`MAX_DELEGATION_HOPS`.
    """
    subjects: list[str] = []
    node: Any = act
    while True:
        asserted = tuple({"issuer": _shown(issuer), "subject": _shown(s)} for s in subjects)
        where = "the act claim" if not subjects else f"act hop {len(subjects) + 1}"
        if len(subjects) >= MAX_DELEGATION_HOPS:
            raise MappingError(
                f"the act chain is longer than {MAX_DELEGATION_HOPS} actors", asserted
            )
        if not isinstance(node, Mapping):
            raise MappingError(f"{where} must be an object with a sub", asserted)
        sub = node.get("sub")
        if not isinstance(sub, str) or not sub:
            raise MappingError(f"{where} must be an object with a sub", asserted)
        hop_iss = node.get("iss", issuer)
        if not isinstance(hop_iss, str) or hop_iss.rstrip("/") != issuer.rstrip("/"):
            shown = _shown(hop_iss) if isinstance(hop_iss, str) else repr(hop_iss)[:_SHOWN_CHARS]
            raise MappingError(
                f"actor {_shown(sub)!r} is asserted for issuer {shown!r}, but the token was "
                f"signed by {issuer}: an issuer may delegate only to its own agents",
                (*asserted, {"issuer": shown, "subject": _shown(sub)}),
            )
        subjects.append(sub)
        if "act" not in node:
            return subjects
        node = node["act"]
