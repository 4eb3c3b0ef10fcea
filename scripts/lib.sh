# Shared helpers of crust's scripts. Source it; it defines functions only.
# Scripts stay quiet on success: each step's output goes to a log file that is printed
# only when the step fails.

CRUST_TOP="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
CRUST_CACHE="${CRUST_CACHE:-/var/cache/crust}"
CRUST_LOG_DIR="${CRUST_LOG_DIR:-$(mktemp -d "${TMPDIR:-/tmp}/crust-logs.XXXXXX")}"
export CRUST_TOP CRUST_CACHE CRUST_LOG_DIR

# fail MSG [LOG]: prints MSG, and the end of LOG when given, then exits 1.
fail() {
  echo "$(basename "$0"): $1" >&2
  if [ -n "${2:-}" ] && [ -s "$2" ]; then
    echo "--- last lines of $2:" >&2
    tail -n 40 "$2" >&2
  fi
  exit 1
}

die() {
  fail "$*"
}

need_root() {
  [ "$(id -u)" = 0 ] || die "must run as root (namespaces, mounts, cgroups, iptables)"
}

# step NAME CMD...: runs CMD with its output in $CRUST_LOG_DIR/NAME.log; on failure
# prints the log's tail and returns the command's status.
step() {
  local name="$1"
  shift
  local log="$CRUST_LOG_DIR/$name.log" rc=0
  "$@" >"$log" 2>&1 || rc=$?
  if [ "$rc" -ne 0 ]; then
    echo "FAILED: $name: $* (exit $rc)" >&2
    tail -n "${CRUST_FAIL_LINES:-150}" "$log" >&2
    echo "(full log: $log)" >&2
    return "$rc"
  fi
}

# stop_pid PID: SIGTERM, then SIGKILL if it has not exited within 10 s.
stop_pid() {
  local pid="$1" i
  kill "$pid" 2>/dev/null || return 0
  for ((i = 0; i < 50; i++)); do
    kill -0 "$pid" 2>/dev/null || return 0
    sleep 0.2
  done
  kill -9 "$pid" 2>/dev/null || true
}

# apt_install PKG...: installs the Debian packages that are missing, quietly.
apt_install() {
  local missing=()
  local p
  for p in "$@"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
  done
  [ "${#missing[@]}" -eq 0 ] && return 0
  step apt-update apt-get update -qq
  DEBIAN_FRONTEND=noninteractive step apt-install \
    apt-get install -y -qq --no-install-recommends "${missing[@]}"
}

# need_go: a Go toolchain for building cri-tools (Debian's, if none is installed; the
# go directive of cri-tools then fetches the toolchain it needs through the module proxy).
need_go() {
  command -v go >/dev/null 2>&1 && return 0
  [ -x /usr/local/go/bin/go ] && { export PATH="$PATH:/usr/local/go/bin"; return 0; }
  apt_install golang-go ca-certificates
}

# need_rust: cargo on PATH (rustup's default location when not).
need_rust() {
  command -v cargo >/dev/null 2>&1 && return 0
  [ -x "$HOME/.cargo/bin/cargo" ] && { export PATH="$PATH:$HOME/.cargo/bin"; return 0; }
  die "cargo not found: install a Rust toolchain (rustup) first"
}

# grpcio from PyPI, for the test of a gRPC client that is not Go's. From 1.57 on,
# grpcio names a Unix socket's path as :authority, the case the test is about;
# Debian's python3-grpcio (1.51) still sends "localhost".
CRUST_GRPCIO_VERSION=1.85.3
CRUST_GRPCIO_PIP=("grpcio==$CRUST_GRPCIO_VERSION" "typing-extensions==4.16.0")

# need_grpcio: sets CRUST_GRPCIO_PYTHON to the interpreter of a venv in the cache
# holding CRUST_GRPCIO_PIP, made with Debian's python3 on the first call.
need_grpcio() {
  local venv="$CRUST_CACHE/grpcio-$CRUST_GRPCIO_VERSION"
  CRUST_GRPCIO_PYTHON="$venv/bin/python"
  [ -e "$venv/.installed" ] && return 0
  apt_install python3-venv
  mkdir -p "$CRUST_CACHE"
  (
    # One installer at a time: the test runs of several checkouts share the cache.
    flock -w 600 9 || die "another installer holds $venv.lock"
    [ -e "$venv/.installed" ] && exit 0
    rm -rf "$venv"
    step python-venv /usr/bin/python3 -m venv "$venv"
    step pip-install-grpcio "$venv/bin/pip" install --quiet --disable-pip-version-check \
      --only-binary=:all: "${CRUST_GRPCIO_PIP[@]}"
    touch "$venv/.installed"
  ) 9>"$venv.lock"
}

# The packages crustd needs at run time and to build.
CRUST_DEBIAN_PACKAGES=(containernetworking-plugins iptables iproute2 libseccomp-dev pkg-config ca-certificates curl)

# write_cni_config DIR NAME BRIDGE SUBNET: a bridge + portmap conflist. Like most cluster
# CNI configs it has no loopback plugin: crustd brings each pod's lo up itself.
write_cni_config() {
  local dir="$1" name="$2" bridge="$3" subnet="$4"
  mkdir -p "$dir"
  cat >"$dir/10-$name.conflist" <<JSON
{
  "cniVersion": "1.0.0",
  "name": "$name",
  "plugins": [
    {
      "type": "bridge",
      "bridge": "$bridge",
      "isGateway": true,
      "ipMasq": true,
      "hairpinMode": true,
      "ipam": {
        "type": "host-local",
        "ranges": [[{ "subnet": "$subnet" }]],
        "routes": [{ "dst": "0.0.0.0/0" }]
      }
    },
    { "type": "portmap", "capabilities": { "portMappings": true } }
  ]
}
JSON
}

# The upstream registries critest's images come from; the local test registry
# stands in for them as a mirror.
CRUST_MIRRORED_HOSTS=(registry.k8s.io gcr.io k8s.gcr.io)

# write_crustd_config DIR REGISTRY: DIR/config.toml for a throwaway crustd with its
# root, state, socket (DIR/crust.sock) and CNI conf dir (DIR/net.d) inside DIR, and
# REGISTRY (host:port, plain HTTP) as the mirror of CRUST_MIRRORED_HOSTS.
write_crustd_config() {
  local dir="$1" registry="$2"
  mkdir -p "$dir/net.d"
  {
    printf 'root = "%s"\nstate = "%s"\nlisten = "unix://%s"\nlog_level = "info"\n\n' \
      "$dir/root" "$dir/state" "$dir/crust.sock"
    printf '[network]\nconf_dir = "%s"\n' "$dir/net.d"
    crustd_mirror_tables "$registry"
  } >"$dir/config.toml"
}

# crustd_mirror_tables REGISTRY: prints the config tables that make REGISTRY (host:port,
# plain HTTP) the mirror of CRUST_MIRRORED_HOSTS.
crustd_mirror_tables() {
  local host
  for host in "${CRUST_MIRRORED_HOSTS[@]}"; do
    printf '\n[registry.mirrors."%s"]\nendpoints = ["http://%s"]\n' "$host" "$1"
  done
}

# write_registry_config FILE STORAGE ADDR [readonly]: FILE, the config of Debian's
# docker-registry serving the storage dir STORAGE on ADDR (host:port, plain HTTP). With
# readonly it refuses pushes (the test guest serves a read-only copy of the storage).
write_registry_config() {
  local file="$1" storage="$2" addr="$3" readonly="${4:-}"
  {
    cat <<EOF
version: 0.1
log:
  level: warn
  accesslog:
    disabled: true
storage:
  filesystem:
    rootdirectory: $storage
  delete:
    enabled: true
  maintenance:
    uploadpurging:
      enabled: false
EOF
    [ "$readonly" != readonly ] || printf '    readonly:\n      enabled: true\n'
    cat <<EOF
http:
  addr: $addr
  secret: local-test-registry
EOF
  } >"$file"
}

# spawn_detached LOG CMD...: starts CMD in its own session, in the background, with
# its output appended to LOG and none of this shell's descriptors (locks) inherited.
spawn_detached() {
  local log="$1"
  shift
  (
    for fd in /proc/"$BASHPID"/fd/*; do
      fd=${fd##*/}
      ((fd > 2)) && eval "exec $fd>&-" 2>/dev/null
    done
    exec setsid "$@" </dev/null >>"$log" 2>&1
  ) &
}

# shm_segments: the ids of the host's SysV shared memory segments, sorted.
shm_segments() {
  ipcs -m 2>/dev/null | awk 'NR>3 && $2 ~ /^[0-9]+$/ {print $2}' | sort
}

# remove_new_shm BEFORE: removes the segments that are not in BEFORE (an earlier
# shm_segments): those a run's HostIpc pods left on the host.
remove_new_shm() {
  local id
  for id in $(comm -13 <(echo "$1") <(shm_segments)); do
    ipcrm -m "$id" 2>/dev/null || true
  done
}

# keep_or_remove LABEL DIR RC KEEP: a run's temporary DIR is kept (and said so) when
# the run failed (RC not 0) or KEEP is 1, else removed.
keep_or_remove() {
  if [ "$3" -ne 0 ] || [ "$4" = 1 ]; then
    echo "$1: logs and junit.xml kept in $2" >&2
  else
    rm -rf "$2"
  fi
}

# wait_for_crustd SOCKET CRICTL SECONDS: polls Version until it answers.
wait_for_crustd() {
  local sock="$1" crictl="$2" secs="${3:-30}" i
  for ((i = 0; i < secs * 10; i++)); do
    "$crictl" --runtime-endpoint "unix://$sock" --image-endpoint "unix://$sock" \
      --timeout 2s version >/dev/null 2>&1 && return 0
    sleep 0.1
  done
  return 1
}
