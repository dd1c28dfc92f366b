#!/usr/bin/env bash
# The README's first command: installs what is missing, builds popkit, and
# starts popkitd on config/popkit.json (passwd-file + maildir) with a demo
# user and a few demo messages: POP3 (with STLS) on 127.0.0.1:1100 and POP3S
# on 127.0.0.1:9950, with a self-signed certificate made here.
set -euo pipefail
cd "$(dirname "$0")/.."
root=$PWD

packaging/install-deps.sh
cmake -S . -B build -DCMAKE_BUILD_TYPE=RelWithDebInfo >/dev/null
cmake --build build -j"$(nproc)"

demo=$root/_demo
modules=$root/build/lib/popkit/modules
mkdir -p "$demo/mail" "$demo/tls"
if [ ! -f "$demo/tls/cert.pem" ]; then
  # A real site points $.tls at its CA-issued chain and key instead.
  openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes \
    -keyout "$demo/tls/key.pem" -out "$demo/tls/cert.pem" -days 825 \
    -subj "/CN=localhost" -addext "subjectAltName=DNS:localhost,IP:127.0.0.1" \
    2>/dev/null
  chmod 600 "$demo/tls/key.pem"
fi
if [ ! -f "$demo/users" ]; then
  # {PLAIN} keeps the demo readable; real sites store crypt(3) hashes.
  printf '# user:password-hash, see README\ndemo:{PLAIN}demo\n' >"$demo/users"
fi

deliver() {
  build/bin/popkit-deliver -c config/popkit.json --modules-dir "$modules" demo
}
if [ -z "$(ls -A "$demo/mail/demo/new" 2>/dev/null)" ] &&
   [ -z "$(ls -A "$demo/mail/demo/cur" 2>/dev/null)" ]; then
  printf 'From: popkit <postmaster@localhost>\nTo: demo@localhost\nSubject: Welcome to popkit\n\nThis message came through popkit-deliver into a maildir.\n' | deliver
  printf 'From: popkit <postmaster@localhost>\nTo: demo@localhost\nSubject: Dots\n\nThe next line is a single dot, which POP3 must stuff:\n.\nAnd this one starts with two:\n..done\n' | deliver
  printf 'From: popkit <postmaster@localhost>\nTo: demo@localhost\nSubject: =?UTF-8?Q?Gr=C3=BC=C3=9Fe?=\nContent-Type: text/plain; charset=utf-8\n\nGrüße aus popkit.\n' | deliver
fi

if [ -f "$demo/popkitd.pid" ] && kill -0 "$(cat "$demo/popkitd.pid")" 2>/dev/null; then
  kill -TERM "$(cat "$demo/popkitd.pid")"
  while kill -0 "$(cat "$demo/popkitd.pid")" 2>/dev/null; do sleep 0.1; done
fi
nohup build/bin/popkitd -c config/popkit.json --modules-dir "$modules" \
  >"$demo/popkitd.log" 2>&1 </dev/null &
echo $! >"$demo/popkitd.pid"
for _ in $(seq 50); do
  if grep -q "listening on" "$demo/popkitd.log" 2>/dev/null; then break; fi
  if ! kill -0 "$(cat "$demo/popkitd.pid")" 2>/dev/null; then
    cat "$demo/popkitd.log" >&2
    exit 1
  fi
  sleep 0.1
done
cat <<MSG
popkitd is running (pid $(cat "$demo/popkitd.pid"), log in _demo/popkitd.log).
  POP3:  127.0.0.1:1100 (STLS offered), user demo, password demo
  POP3S: 127.0.0.1:9950 (self-signed certificate in _demo/tls/cert.pem)
  try:   curl pop3://demo:demo@127.0.0.1:1100/      (list)
         curl pop3://demo:demo@127.0.0.1:1100/1     (first message)
         curl --cacert _demo/tls/cert.pem pop3s://demo:demo@127.0.0.1:9950/1
         curl --cacert _demo/tls/cert.pem --ssl-reqd pop3://demo:demo@127.0.0.1:1100/1
  stop:  kill \$(cat _demo/popkitd.pid)
MSG
