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

. "$(dirname "$0")/apt-lib.sh"
find_missing_packages "${packages[@]}"
if [ ${#missing[@]} -eq 0 ]; then
  exit 0
fi
apt_install "${missing[@]}"
