# Sourced by the install scripts (install-deps.sh, install-bench-deps.sh):
# what they share about Debian's packages.

# The command prefix that runs a command as root: sudo unless we are root.
as_root=()
if [ "$(id -u)" -ne 0 ]; then
  as_root=(sudo)
fi

# Sets the array `missing` to those of the packages named that are not
# installed.
find_missing_packages() {
  missing=()
  local p
  for p in "$@"; do
    if ! dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed"; then
      missing+=("$p")
    fi
  done
}

# Installs the packages named, without recommends and without questions.
apt_install() {
  echo "installing: $*"
  "${as_root[@]}" env DEBIAN_FRONTEND=noninteractive apt-get update -qq
  "${as_root[@]}" env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq \
    --no-install-recommends "$@"
}
