"""The docs a newcomer reads hold together without the source: every relative link
resolves inside the repository (and its #anchor to a heading), nothing points outside
it, every page is in the index, and no page speaks of how the project was built."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
PAGES = sorted(
    [
        REPO / "README.md",
        *(REPO / "docs").glob("*.md"),
        *(REPO / "charts").rglob("README*.md"),
        *(REPO / "examples").rglob("*.md"),
    ]
)
LINK = re.compile(r"(?<!\!)\[[^\]]*\]\(([^)\s]+)(?:\s+\"[^\"]*\")?\)")
#: External standards a page may cite; nothing else outside the repository.
ALLOWED_HOSTS = (
    "modelcontextprotocol.io",
    "kubernetes.io",
    "helm.sh",
    "prometheus.io",
    "opentelemetry.io",
    "openbao.org",
    "cel.dev",
    "datatracker.ietf.org",
    "www.rfc-editor.org",
    "html.spec.whatwg.org",
    "docs.nvidia.com",
    "argo-cd.readthedocs.io",
    "kyverno.io",
    "cert-manager.io",
    "hvac.readthedocs.io",
    "github.com",
)
#: Phrases about how the project was made, not about the product.
BUILD_TALK = re.compile(
    r"by the \w+ engineer|the \w+ engineer's|by the \w+'s issue|\bissue #?\d+\b|"
    r"\.\./shared|DESIGN\.md|\bsubagent|\bhelper session",
    re.IGNORECASE,
)


def _slug(heading: str) -> str:
    text = re.sub(r"[`*~]|<[^>]+>", "", heading.strip().lower())
    text = re.sub(r"\[([^\]]*)\]\([^)]*\)", r"\1", text)
    return re.sub(r"[^\w\- ]", "", text).replace(" ", "-")


def _anchors(page: Path) -> set[str]:
    seen: dict[str, int] = {}
    out: set[str] = set()
    in_code = False
    for line in page.read_text().splitlines():
        if line.startswith("```"):
            in_code = not in_code
        if in_code or not line.startswith("#"):
            continue
        slug = _slug(line.lstrip("#"))
        n = seen.get(slug, 0)
        seen[slug] = n + 1
        out.add(slug if n == 0 else f"{slug}-{n}")
    return out


def _links(page: Path) -> list[str]:
    text = re.sub(r"```.*?```", "", page.read_text(), flags=re.DOTALL)
    text = re.sub(r"`[^`\n]*`", "", text)
    return LINK.findall(text)


@pytest.mark.parametrize("page", PAGES, ids=lambda p: str(p.relative_to(REPO)))
def test_every_link_resolves_inside_the_repository(page: Path) -> None:
    broken = []
    for target in _links(page):
        if target.startswith(("http://", "https://")):
            host = target.split("/")[2]
            if host not in ALLOWED_HOSTS:
                broken.append(f"{target}: outside the repository")
            continue
        if target.startswith("mailto:"):
            continue
        path, _, anchor = target.partition("#")
        dest = (page.parent / path).resolve() if path else page
        if not dest.is_relative_to(REPO):
            broken.append(f"{target}: outside the repository")
        elif not dest.exists():
            broken.append(f"{target}: no such file")
        elif anchor and dest.suffix == ".md" and anchor not in _anchors(dest):
            broken.append(f"{target}: no heading #{anchor} in {dest.name}")
    assert broken == []


@pytest.mark.parametrize("page", PAGES, ids=lambda p: str(p.relative_to(REPO)))
def test_no_page_speaks_of_how_the_project_was_built(page: Path) -> None:
    hits = [m.group(0) for m in BUILD_TALK.finditer(page.read_text())]
    assert hits == []


def test_the_index_lists_every_page_and_the_readme_links_it() -> None:
    index = REPO / "docs" / "README.md"
    listed = {Path(t.partition("#")[0]).name for t in _links(index)}
    pages = {p.name for p in (REPO / "docs").glob("*.md")} - {"README.md"}
    assert sorted(pages - listed) == []
    assert "docs/README.md" in _links(REPO / "README.md")


def test_the_slugs_are_githubs() -> None:
    assert _slug(" `palisade bundle replay` and CI") == "palisade-bundle-replay-and-ci"
    assert (
        _slug(" A real node (`node.py`, fixture `real_node`)")
        == "a-real-node-nodepy-fixture-real_node"
    )
    assert _slug("Install, upgrade: v1.2") == "install-upgrade-v12"
