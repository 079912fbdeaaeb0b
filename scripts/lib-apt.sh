# Sourced by setup steps that install a Debian package when what they need is missing.
#
# apt_install WHAT HINT PACKAGE...: install PACKAGE... with apt-get, as root or through
# sudo when it needs no password, without starting any service the packages ship
# (policy-rc.d answers 101 while they install). WHAT names what is missing and HINT
# what to do instead, in the error when nothing can be installed here.
apt_install() {
  local what="$1" hint="$2"
  shift 2
  if ! command -v apt-get >/dev/null 2>&1; then
    echo "setup: $what not found and no apt-get; $hint" >&2
    return 1
  fi
  local as_root=()
  if [ "$(id -u)" != "0" ]; then
    if command -v sudo >/dev/null 2>&1 && sudo -n true 2>/dev/null; then
      as_root=(sudo -n)
    else
      echo "setup: $what missing; run as root: apt-get install -y $* ($hint)" >&2
      return 1
    fi
  fi
  local policy=/usr/sbin/policy-rc.d created=0 status=0
  if [ ! -e "$policy" ]; then
    printf '#!/bin/sh\nexit 101\n' | "${as_root[@]}" tee "$policy" >/dev/null
    "${as_root[@]}" chmod +x "$policy"
    created=1
  fi
  { "${as_root[@]}" env DEBIAN_FRONTEND=noninteractive apt-get update -q >/dev/null &&
    "${as_root[@]}" env DEBIAN_FRONTEND=noninteractive \
      apt-get install -y -q --no-install-recommends "$@" >/dev/null; } || status=$?
  if [ "$created" = "1" ]; then
    "${as_root[@]}" rm -f "$policy"
  fi
  if [ "$status" != "0" ]; then
    echo "setup: apt-get install $* failed ($status)" >&2
    return 1
  fi
}
