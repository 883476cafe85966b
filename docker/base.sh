#!/usr/bin/env bash
# Build the local base image the tests use instead of pulling one (no registry is reachable):
# Debian bookworm minbase from Debian's mirror, with Python 3.11 and venv, imported as
# patio-base:<hash of this recipe>. Prints the tag; rebuilds only when that tag is missing.
set -euo pipefail
MIRROR=${DEBIAN_MIRROR:-http://deb.debian.org/debian}
PACKAGES=python3,python3-venv,python3-pip,ca-certificates
# Certificate authorities this machine adds to Debian's (a TLS-intercepting egress proxy in
# CI, say): the image trusts them too, so pip reaches PyPI from a build on this machine.
LOCAL_CAS=(/usr/local/share/ca-certificates/*.crt)
[ -e "${LOCAL_CAS[0]}" ] || LOCAL_CAS=()
recipe="bookworm minbase $MIRROR $PACKAGES $(cat "$0" ${LOCAL_CAS[@]+"${LOCAL_CAS[@]}"} | sha256sum | cut -c1-64)"
tag="patio-base:$(printf '%s' "$recipe" | sha256sum | cut -c1-16)"
if docker image inspect "$tag" >/dev/null 2>&1; then
  echo "$tag"
  exit 0
fi
root=$(mktemp -d /var/tmp/patio-base.XXXXXX)
trap 'rm -rf "$root"' EXIT
debootstrap --variant=minbase --include="$PACKAGES" bookworm "$root" "$MIRROR" >&2
if [ ${#LOCAL_CAS[@]} -gt 0 ]; then
  cp "${LOCAL_CAS[@]}" "$root/usr/local/share/ca-certificates/"
  chroot "$root" update-ca-certificates >&2
fi
# Keep apt usable in derived images (PostgreSQL, Mosquitto, nginx install from the mirror),
# drop the package cache the image does not need.
chroot "$root" apt-get clean
rm -rf "$root"/var/lib/apt/lists/* "$root"/tmp/*
tar -C "$root" -c . | docker import \
  --change 'ENV LANG=C.UTF-8 PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' \
  --change 'ENV PIP_CERT=/etc/ssl/certs/ca-certificates.crt' \
  --change 'CMD ["/bin/bash"]' - "$tag" >&2
echo "$tag"
