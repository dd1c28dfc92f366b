#!/usr/bin/env bash
# Installs, from Debian's packages, everything popkit needs to build, run
# and test: compiler and CMake, the libraries of DESIGN.md, Check, and the
# real POP3 and TLS clients the integration tests use (openssl also makes
# the quick start's self-signed certificate), and the PostgreSQL, Redis and
# OpenLDAP servers the modules' tests start in a temporary directory. Installs only
# what is missing, so it is quick on a machine that has it all.
set -euo pipefail

packages=(
  build-essential cmake pkg-config
  libuv1-dev libjansson-dev libgnutls28-dev libcrypt-dev libpq-dev
  libhiredis-dev libldap-dev
  check python3 curl fetchmail mpop procps
  openssl gnutls-bin
  postgresql redis-server slapd ldap-utils
)

missing=()
for p in "${packages[@]}"; do
  if ! dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed"; then
    missing+=("$p")
  fi
done
if [ ${#missing[@]} -eq 0 ]; then
  exit 0
fi

as_root=()
if [ "$(id -u)" -ne 0 ]; then
  as_root=(sudo)
fi
echo "installing: ${missing[*]}"
"${as_root[@]}" env DEBIAN_FRONTEND=noninteractive apt-get update -qq
"${as_root[@]}" env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}"
