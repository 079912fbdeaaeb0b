"""The Debian base: debootstrap from the machine's configured mirror, trimmed, normalised
for reproducibility and cached; and running a command inside a root filesystem.

The base is cached under ``<cache>/base-<key>/`` (``rootfs/`` plus ``base.json``), the
key being a hash of the suite, variant, package list, mirror and :data:`RECIPE` (bump
it when the trimming or normalising changes). Its epoch is the ``Date:`` of the
suite's Release file, so two bootstraps from the same mirror state agree, and the
base layer does not change with every commit.

What varies between two debootstraps and is fixed here: the host's /etc/hostname and
/etc/resolv.conf (copied in by debootstrap), the day of the last password change in
/etc/shadow, the ``-old`` and ``-`` backups of dpkg, debconf and shadow, the ldconfig
aux cache, logs, apt's lists and caches, and every mtime newer than the epoch.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import re
import shutil
import subprocess
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from email.utils import parsedate_to_datetime
from pathlib import Path

from images import definition

log = logging.getLogger(__name__)

RECIPE = 1
"""Version of the trimming and normalising below; part of the cache key."""

MIRROR_ENV = "PALISADE_DEBIAN_MIRROR"

TRIM_CONTENTS = (
    "var/lib/apt/lists",
    "var/cache/apt",
    "var/log",
    "usr/share/man",
    "usr/share/info",
    "usr/share/lintian",
    "usr/share/linda",
    "tmp",
    "var/tmp",
)
"""Directories kept, emptied (sub-directories stay: apt wants lists/partial)."""

TRIM_FILES = (
    "etc/passwd-",
    "etc/group-",
    "etc/shadow-",
    "etc/gshadow-",
    "etc/.pwd.lock",
    "etc/machine-id",
    "etc/apt/sources.list",
    "var/cache/ldconfig/aux-cache",
    "var/cache/debconf/config.dat-old",
    "var/cache/debconf/templates.dat-old",
    "var/cache/debconf/passwords.dat-old",
    "var/lib/dpkg/status-old",
    "var/lib/dpkg/available-old",
    "var/lib/dpkg/diversions-old",
    "var/lib/dpkg/statoverride-old",
)

PLACEHOLDERS = {
    # The runtime bind-mounts these; debootstrap copied the build machine's.
    "etc/hostname": "",
    "etc/resolv.conf": "",
    "etc/hosts": "127.0.0.1\tlocalhost\n::1\tlocalhost ip6-localhost ip6-loopback\n",
}

LAYER_EXCLUDE_PARENTS = ("dev/", "proc/", "sys/")
"""Left out of the base layer below these: debootstrap's device nodes."""


@dataclass(frozen=True)
class Base:
    """A cached, normalised base root filesystem."""

    key: str
    dir: Path
    """``<cache>/base-<key>``: holds ``rootfs/`` and ``base.json``."""
    epoch: int
    mirror: str
    created_by: str

    @property
    def rootfs(self) -> Path:
        return self.dir / "rootfs"


def run(argv: Sequence[str], *, env: Mapping[str, str] | None = None) -> None:
    log.debug("run %s", " ".join(argv))
    subprocess.run(list(argv), check=True, env=None if env is None else dict(env))


# --- the mirror -----------------------------------------------------------------------


def _deb822_entries(text: str) -> Iterable[tuple[str, list[str]]]:
    for stanza in re.split(r"\n\s*\n", text):
        fields: dict[str, str] = {}
        for line in stanza.splitlines():
            if line.startswith("#") or ":" not in line or line[:1].isspace():
                continue
            key, _, value = line.partition(":")
            fields[key.strip().lower()] = value.strip()
        if "deb" in fields.get("types", "").split() and fields.get("enabled", "yes") != "no":
            for uri in fields.get("uris", "").split():
                yield uri, fields.get("suites", "").split()


def _one_line_entries(text: str) -> Iterable[tuple[str, list[str]]]:
    for line in text.splitlines():
        words = re.sub(r"\[[^]]*\]", " ", line.split("#", 1)[0]).split()  # drop [options]
        if len(words) >= 3 and words[0] == "deb":
            yield words[1], [words[2]]


def apt_sources(etc_apt: Path = Path("/etc/apt")) -> list[tuple[str, list[str]]]:
    """The ``deb`` entries of the machine's apt configuration: (URI, suites)."""
    entries: list[tuple[str, list[str]]] = []
    one_line = [etc_apt / "sources.list", *sorted((etc_apt / "sources.list.d").glob("*.list"))]
    for path in one_line:
        if path.is_file():
            entries += _one_line_entries(path.read_text())
    for path in sorted((etc_apt / "sources.list.d").glob("*.sources")):
        entries += _deb822_entries(path.read_text())
    return entries


def debian_mirror(
    suite: str = definition.SUITE,
    env: Mapping[str, str] = os.environ,
    etc_apt: Path = Path("/etc/apt"),
) -> str:
    """The Debian mirror to bootstrap from: ``$PALISADE_DEBIAN_MIRROR``, else the apt
    source that carries ``suite`` itself (not -updates or -security)."""
    if env.get(MIRROR_ENV):
        return env[MIRROR_ENV].rstrip("/")
    entries = apt_sources(etc_apt)
    for uri, suites in entries:
        if suite in suites:
            return uri.rstrip("/")
    for uri, _ in entries:
        if uri.rstrip("/").endswith("/debian"):
            return uri.rstrip("/")
    raise SystemExit(
        f"no Debian mirror for {suite} in {etc_apt}/sources.list(.d); set {MIRROR_ENV}"
    )


# --- bootstrap, trim, normalise -------------------------------------------------------


def base_key(suite: str, variant: str, packages: Sequence[str], mirror: str) -> str:
    recipe = {
        "suite": suite,
        "variant": variant,
        "packages": sorted(packages),
        "mirror": mirror,
        "recipe": RECIPE,
    }
    return hashlib.sha256(json.dumps(recipe, sort_keys=True).encode()).hexdigest()[:16]


def ensure_tool(name: str, package: str) -> None:
    """Install a Debian package when its tool is missing (as root: apt-get)."""
    if shutil.which(name):
        return
    log.info("installing %s", package)
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    try:
        run(["apt-get", "install", "-y", "--no-install-recommends", package], env=env)
    except subprocess.CalledProcessError:
        run(["apt-get", "update"], env=env)
        run(["apt-get", "install", "-y", "--no-install-recommends", package], env=env)


def release_epoch(root: Path, suite: str) -> int:
    """The ``Date:`` of the suite's (In)Release file that debootstrap fetched."""
    lists = root / "var/lib/apt/lists"
    for pattern in (f"*_dists_{suite}_InRelease", f"*_dists_{suite}_Release"):
        for path in sorted(lists.glob(pattern)):
            for line in path.read_text(errors="replace").splitlines():
                if line.startswith("Date:"):
                    return int(parsedate_to_datetime(line[5:].strip()).timestamp())
    raise RuntimeError(f"no Release file of {suite} under {lists}")


def _empty_dir(path: Path) -> None:
    """Remove every file below ``path``; keep the directories."""
    if not path.is_dir() or path.is_symlink():
        return
    for dirpath, _dirnames, filenames in os.walk(path):
        for name in filenames:
            os.unlink(os.path.join(dirpath, name))


def trim(root: Path) -> None:
    """Drop what a container never reads: docs (copyright files stay), man pages,
    locales, apt lists and caches, logs, backups."""
    for rel in TRIM_CONTENTS:
        _empty_dir(root / rel)
    for rel in TRIM_FILES:
        (root / rel).unlink(missing_ok=True)
    for dirpath, _dirnames, filenames in os.walk(root / "usr/share/doc"):
        for name in filenames:
            if name != "copyright":
                os.unlink(os.path.join(dirpath, name))
    locale = root / "usr/share/locale"
    if locale.is_dir():
        for entry in locale.iterdir():
            if entry.is_dir() and not entry.is_symlink():
                shutil.rmtree(entry)


def fix_shadow(root: Path, epoch: int) -> None:
    """Set the day of the last password change (field 3) to the epoch's day."""
    shadow = root / "etc/shadow"
    day = str(epoch // 86400)
    lines = []
    for line in shadow.read_text().splitlines():
        fields = line.split(":")
        if len(fields) >= 3 and fields[2]:
            fields[2] = day
        lines.append(":".join(fields))
    shadow.write_text("\n".join(lines) + "\n")


def add_user(root: Path, name: str, uid: int) -> None:
    """The image's user (uid = gid), as distroless names it, home ``/home/<name>``.

    Without a passwd entry Python cannot find a home directory (``Path.home()``, which
    kubernetes_asyncio calls on import) when HOME is unset, nor ``getpass.getuser()``.
    """
    home = f"/home/{name}"
    rows = {
        "etc/passwd": f"{name}:x:{uid}:{uid}:{name}:{home}:/usr/sbin/nologin",
        "etc/group": f"{name}:x:{uid}:",
        "etc/shadow": f"{name}:!:0:0:99999:7:::",
        "etc/gshadow": f"{name}:!::",
    }
    for rel, row in rows.items():
        path = root / rel
        text = path.read_text()
        if not any(line.split(":", 1)[0] == name for line in text.splitlines()):
            path.write_text(text.rstrip("\n") + "\n" + row + "\n")
    (root / home.lstrip("/")).mkdir(mode=0o755, parents=True, exist_ok=True)
    os.chown(root / home.lstrip("/"), uid, uid)


def normalise(root: Path, epoch: int) -> None:
    user, _, _group = definition.USER.partition(":")
    add_user(root, "nonroot", int(user))
    for rel, content in PLACEHOLDERS.items():
        path = root / rel
        path.unlink(missing_ok=True)
        path.write_text(content)
        path.chmod(0o644)
    fix_shadow(root, epoch)
    # Clamp the mtimes here too, so the cached tree and its layer agree.
    for dirpath, dirnames, filenames in os.walk(root):
        for name in dirnames + filenames:
            entry = os.path.join(dirpath, name)
            if os.lstat(entry).st_mtime > epoch:
                os.utime(entry, (epoch, epoch), follow_symlinks=False)
    os.utime(root, (epoch, epoch))


def layer_exclude(name: str) -> bool:
    return name.startswith(LAYER_EXCLUDE_PARENTS)


def ensure_base(
    cache: Path,
    *,
    suite: str = definition.SUITE,
    variant: str = definition.VARIANT,
    packages: Sequence[str] = definition.PACKAGES,
    mirror: str | None = None,
    rebuild: bool = False,
) -> Base:
    """The cached base for this recipe, bootstrapped first when missing."""
    mirror = mirror or debian_mirror(suite)
    key = base_key(suite, variant, packages, mirror)
    directory = cache / f"base-{key}"
    meta = directory / "base.json"
    created_by = f"debootstrap --variant={variant} --include={','.join(packages)} {suite}"
    if meta.is_file() and not rebuild:
        data = json.loads(meta.read_text())
        return Base(key, directory, data["epoch"], mirror, created_by)
    if os.geteuid() != 0:
        raise SystemExit("bootstrapping the Debian base needs root (debootstrap)")
    ensure_tool("debootstrap", "debootstrap")
    if directory.exists():
        shutil.rmtree(directory)
    tmp = cache / f".base-{key}.tmp"
    if tmp.exists():
        shutil.rmtree(tmp)
    (tmp / "rootfs").mkdir(parents=True)
    debs = cache / "debs"
    debs.mkdir(parents=True, exist_ok=True)
    log.info("debootstrap %s from %s", suite, mirror)
    run(
        [
            "debootstrap",
            f"--variant={variant}",
            f"--include={','.join(packages)}",
            f"--cache-dir={debs.resolve()}",
            suite,
            str(tmp / "rootfs"),
            mirror,
        ]
    )
    epoch = release_epoch(tmp / "rootfs", suite)
    trim(tmp / "rootfs")
    normalise(tmp / "rootfs", epoch)
    (tmp / "base.json").write_text(
        json.dumps({"epoch": epoch, "suite": suite, "packages": list(packages)}, indent=2)
    )
    tmp.rename(directory)
    return Base(key, directory, epoch, mirror, created_by)


# --- running inside a root filesystem -------------------------------------------------

_BIND_AND_EXEC = """
set -eu
root=$1; shift
while [ "$1" != "--" ]; do
  mount --bind "$1" "$root$2"; shift 2
done
shift
exec "$@"
"""


def root_command(
    root: Path,
    argv: Sequence[str],
    *,
    binds: Mapping[Path, str] | None = None,
    userspec: str | None = None,
    env: Sequence[str] = definition.ENV,
) -> list[str]:
    """The command line that runs ``argv`` chrooted into ``root``, environment cleared.

    ``binds`` maps host directories onto directories of the root, in a private mount
    namespace, so nothing stays mounted. Not root: a user namespace maps us to root.
    """
    chroot = ["chroot"]
    if userspec:
        chroot.append(f"--userspec={userspec}")
    command = [*chroot, str(root), "/usr/bin/env", "-i", *env, *argv]
    pairs = [str(part) for host, inner in (binds or {}).items() for part in (host, inner)]
    unshare = ["unshare", "--mount"] if os.geteuid() == 0 else ["unshare", "-r", "--mount"]
    return [*unshare, "sh", "-c", _BIND_AND_EXEC, "sh", str(root), *pairs, "--", *command]


def run_in_root(
    root: Path,
    argv: Sequence[str],
    *,
    binds: Mapping[Path, str] | None = None,
    userspec: str | None = None,
    env: Sequence[str] = definition.ENV,
) -> subprocess.CompletedProcess[str]:
    """Run ``argv`` in ``root`` (see :func:`root_command`); its output is captured."""
    command = root_command(root, argv, binds=binds, userspec=userspec, env=env)
    result = subprocess.run(command, text=True, capture_output=True, check=False)
    if result.returncode != 0:
        raise RuntimeError(
            f"{' '.join(argv)} in {root} exited {result.returncode}:\n"
            f"{result.stdout}{result.stderr}"
        )
    return result
