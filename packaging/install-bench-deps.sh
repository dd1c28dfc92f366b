#!/usr/bin/env bash
# Installs, from Debian's packages, what tests/bench/run needs beyond
# packaging/install-deps.sh: Dovecot's POP3 server to measure popkitd
# against, and openssl for the benchmark's self-signed certificate.
# Installs only what is missing.
#
# The benchmark runs Dovecot from its own config in a temporary directory,
# never the system's. So the install must not leave a system Dovecot
# listening on 110 and 995: while apt-get runs, a policy-rc.d (unless the
# machine has one already, as containers do) tells the maintainer scripts
# not to start services, and afterwards the units this install brought in
# are disabled so the next boot does not start them either. A Dovecot that
# was installed before is left as it was.
set -euo pipefail

packages=(dovecot-core dovecot-pop3d openssl)

. "$(dirname "$0")/apt-lib.sh"
find_missing_packages "${packages[@]}"
if [ ${#missing[@]} -eq 0 ]; then
  exit 0
fi

had_dovecot=no
if dpkg-query -W -f='${Status}' dovecot-core 2>/dev/null | grep -q "install ok installed"; then
  had_dovecot=yes
fi

policy=/usr/sbin/policy-rc.d
ours=no
remove_policy() {
  if [ "$ours" = yes ]; then
    "${as_root[@]}" rm -f "$policy"
  fi
}
trap remove_policy EXIT
if [ ! -e "$policy" ]; then
  # 101: "action not allowed" (invoke-rc.d(8)), so no service starts.
  printf '#!/bin/sh\nexit 101\n' | "${as_root[@]}" tee "$policy" >/dev/null
  "${as_root[@]}" chmod 755 "$policy"
  ours=yes
fi

apt_install "${missing[@]}"

if [ "$had_dovecot" = no ] && [ -d /run/systemd/system ]; then
  # Booted with systemd: keep the units the package enabled from starting
  # at the next boot (and stop them, should anything have started them).
  "${as_root[@]}" systemctl disable --now dovecot.service dovecot.socket >/dev/null 2>&1 || true
fi
