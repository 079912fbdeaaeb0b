"""What the images are: one definition that the daemonless build and kind/Dockerfile share.

Nothing here touches the disk or the network. ``images.build`` turns these values into
OCI images; ``tests/images/test_definition.py`` checks that kind/Dockerfile states the
same user, entrypoint, environment, lock file and Python path.
"""

from __future__ import annotations

from dataclasses import dataclass, field

SUITE = "bookworm"
"""The Debian release of the base: its python3 is CPython 3.11.2."""

VARIANT = "minbase"
"""debootstrap's smallest variant: Essential packages and apt."""

PACKAGES = ("python3", "python-is-python3", "iptables", "ca-certificates")
"""Debian packages on top of minbase. iptables: an init container of the same image
installs the pod's packet-filter rules (istio-init style). python-is-python3: the kind
manifests start the example server as ``python``."""

USER = "65532:65532"
"""Matches runAsUser in the chart and in the injected sidecar."""

WORKDIR = "/app"

PYTHON_VERSION = "3.11"
SITE_PACKAGES = "/usr/lib/python3/dist-packages"
"""Where the lock file and the project's wheel are installed: on bookworm python3's
default sys.path, so no PYTHONPATH and no virtualenv are needed."""

LOCK_FILE = "images/requirements.lock"

ENTRY_SCRIPT = "/usr/local/bin/palisade"
"""The console script, from images/files/palisade (pip's generated one names the
build machine's interpreter)."""

EXAMPLES_DIR = "/app/examples/mcp_servers"
"""examples/mcp_servers, for the example MCP server image and for kind's manifests."""

PIP_TARGET_FLAGS = (
    "--require-hashes",
    "--no-deps",
    "--only-binary=:all:",
    "--no-compile",
)
"""How both builds install the lock file: hashed wheels only, no resolver, no .pyc
(compiled afterwards by the image's interpreter)."""

PIP_PLATFORMS = (
    *(f"manylinux_2_{minor}_x86_64" for minor in range(36, 16, -1)),
    "manylinux2014_x86_64",
    "manylinux2010_x86_64",
    "manylinux1_x86_64",
)
PIP_INTERPRETER_FLAGS = (
    *(f"--platform={platform}" for platform in PIP_PLATFORMS),
    f"--python-version={PYTHON_VERSION}",
    "--implementation=cp",
    "--abi=cp311",
)
"""The daemonless build runs the build machine's pip: these pick the wheels of the
image's interpreter (glibc 2.36, CPython 3.11) whatever that machine runs. pip does
not expand a manylinux_2_x tag to the older ones, hence the list. In the Dockerfile
pip runs on the image's own python3 and needs none of them."""

COMPILE_FLAGS = ("-q", "--invalidation-mode", "unchecked-hash")
"""Byte-compiled by the image's own python3: a hash-based .pyc holds no mtime, and the
image's interpreter (not the build machine's) decides the bytes."""

ENV = (
    "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
    "LANG=C.UTF-8",
    "PYTHONDONTWRITEBYTECODE=1",
    "PYTHONUNBUFFERED=1",
)
"""The image's environment. The root filesystem is read-only in the pods; every
module is compiled at build time."""


@dataclass(frozen=True)
class ImageSpec:
    """One image: a name, the layers it stacks on the base, how it starts."""

    name: str
    """Repository name; the tag is the project version (the chart's appVersion)."""
    layers: tuple[str, ...]
    """Layer names above the base, bottom first (``deps``, ``examples``, ``app``)."""
    entrypoint: tuple[str, ...]
    cmd: tuple[str, ...] = ()
    description: str = ""
    exposed_ports: tuple[str, ...] = field(default_factory=tuple)


PALISADE = ImageSpec(
    name="palisade",
    # The examples layer sits below the app so both images share base+deps+examples.
    layers=("deps", "examples", "app"),
    entrypoint=("palisade",),
    description="Palisade: injector, sidecar, distributor and node agent",
)

EXAMPLE_MCP = ImageSpec(
    name="palisade-example-mcp",
    layers=("deps", "examples"),
    # All interfaces: the pod network is the way in (the sidecar, when injected).
    entrypoint=("python3", f"{EXAMPLES_DIR}/k8s_server.py", "--host", "0.0.0.0"),  # noqa: S104
    cmd=("--port", "8081"),
    description="The example Kubernetes MCP server (Streamable HTTP at /mcp)",
    exposed_ports=("8081/tcp",),
)

KUBE_MCP_VERSION = "0.0.67"
"""kubernetes-mcp-server (github.com/containers/kubernetes-mcp-server, Apache-2.0):
the npm package kubernetes-mcp-server-linux-amd64 at this version, pinned with its
integrity by scripts/setup.d/52-kubernetes-mcp-server.sh, which caches the binary
(tests/kube_mcp checks the two pins agree)."""

KUBE_MCP_BINARY = "/usr/local/bin/kubernetes-mcp-server"
KUBE_MCP_CONFIG_SOURCE = "images/files/kubernetes-mcp-server.toml"
KUBE_MCP_CONFIG = "/etc/kubernetes-mcp-server/config.toml"
"""``require_oauth`` with passthrough: a bearer token on every request, never the
server's own credentials (docs/credentials.md)."""
KUBE_MCP_TOOLSETS = "core,config,helm"
"""The toolsets the example bundle registers (helm for ``helm_install``)."""

KUBE_MCP = ImageSpec(
    name="palisade-kubernetes-mcp",
    # base + its own layer: no Python needed, but the base is shared with the others
    layers=("kube-mcp",),
    entrypoint=(KUBE_MCP_BINARY, "--config", KUBE_MCP_CONFIG),
    # loopback only: the sidecar in the same pod is the way in
    cmd=("--port", "8080", "--bind-address", "127.0.0.1", "--toolsets", KUBE_MCP_TOOLSETS),
    description=f"kubernetes-mcp-server {KUBE_MCP_VERSION}, for the Palisade sidecar",
    exposed_ports=("8080/tcp",),
)

IMAGES = (PALISADE, EXAMPLE_MCP, KUBE_MCP)
