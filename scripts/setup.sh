#!/usr/bin/env bash
# One idempotent set-up for a fresh Debian bookworm machine, run as root.
#
# Installs the apt packages, makes the Python virtualenv (outside the clone),
# starts dockerd if no daemon answers, registers QEMU binfmt and configures nix.
# A second run finds everything in place and finishes in a few seconds, so
# `make test` and `make demo` can call it every time.
#
# Environment:
#   REQUEST_PACK_VENV        virtualenv path (default $HOME/.cache/request-pack/venv)
#   REQUEST_PACK_EXTRAS      pyproject extras to install (default test)
#   REQUEST_PACK_APT_MAX_AGE seconds after which apt lists count as stale (default 21600)
#   REQUEST_PACK_DOCKERD_LOG dockerd log file (default /var/log/request-pack-dockerd.log)
#   REQUEST_PACK_SKIP        comma list of steps to skip: apt,qemu,venv,docker,binfmt,nix
set -euo pipefail

# Everything the project needs from Debian. Add to this list (one per line,
# with the part that needs it) rather than installing anything by hand.
APT_PACKAGES=(
    # container engines and image tooling (build, engine)
    docker.io containerd runc pigz xz-utils
    buildah podman skopeo umoci uidmap fuse-overlayfs slirp4netns
    containernetworking-plugins catatonit docker-registry
    # root filesystems and cross-arch emulation (build)
    mmdebstrap qemu-user-static binfmt-support arch-test busybox-static
    debian-archive-keyring
    # nix (nix/, flake.nix)
    nix-bin
    # python and general tooling
    python3 python3-venv python3-pip git make curl ca-certificates apt-utils
    dpkg-dev jq util-linux gpgv
    # the harness's compatibility test runs under Debian's own numpy/onnx/Pillow (what armv7 images use)
    python3-onnx python3-numpy python3-pil
    # scoreboard: a real PostgreSQL for the store tests, Debian's chromium for the browser test
    postgresql chromium
    # runner: an sshd of the tests' own stands in for a remote board
    openssh-server openssh-client
    # farm: the tests start a real Slurm cluster on 127.0.0.1 (slurmctld, several slurmd, munged)
    slurm-wlm slurm-client munge
    # sourcebuild: LoadGen's wheels for arm64/armv7, cross-compiled with the host's python3.11
    g++-aarch64-linux-gnu g++-arm-linux-gnueabihf python3.11
)

REPO_ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
# CI starts us with a trimmed environment; HOME may be missing.
HOME="${HOME:-$(getent passwd "$(id -u)" | cut -d: -f6)}"
export HOME
# dockerd, groupadd and update-binfmts live in sbin, which a trimmed PATH may lack.
export PATH="$PATH:/usr/local/sbin:/usr/sbin:/sbin"
VENV="${REQUEST_PACK_VENV:-$HOME/.cache/request-pack/venv}"
APT_MAX_AGE="${REQUEST_PACK_APT_MAX_AGE:-21600}"
DOCKERD_LOG="${REQUEST_PACK_DOCKERD_LOG:-/var/log/request-pack-dockerd.log}"
# pyproject.toml extras installed into the venv; `test` pulls in what the suite needs.
EXTRAS="${REQUEST_PACK_EXTRAS:-test}"
SKIP=",${REQUEST_PACK_SKIP:-},"
export DOCKER_API_VERSION="${DOCKER_API_VERSION:-1.41}"
export DEBIAN_FRONTEND=noninteractive

if [[ -t 1 ]]; then BOLD=$'\033[1m' RED=$'\033[1;31m' OFF=$'\033[0m'; else BOLD= RED= OFF=; fi
say() { printf '%s[setup]%s %s\n' "$BOLD" "$OFF" "$*"; }
die() { printf '%s[setup] error:%s %s\n' "$RED" "$OFF" "$*" >&2; exit 1; }
skipped() { [[ "$SKIP" == *",$1,"* ]]; }

SUMMARY=()
note() { SUMMARY+=("$(printf '%-8s %s' "$1" "$2")"); }

# --- apt ----------------------------------------------------------------------

missing_packages() {
    local pkg status
    for pkg in "${APT_PACKAGES[@]}"; do
        status="$(dpkg-query -W -f='${db:Status-Status}' "$pkg" 2>/dev/null || true)"
        [[ "$status" == installed ]] || printf '%s\n' "$pkg"
    done
}

apt_lists_fresh() {
    local newest now
    newest="$(find /var/lib/apt/lists -maxdepth 1 -name '*_InRelease' -printf '%T@\n' 2>/dev/null | sort -n | tail -1)"
    [[ -n "$newest" ]] || return 1
    now="$(date +%s)"
    (( now - ${newest%.*} < APT_MAX_AGE ))
}

step_apt() {
    local missing
    mapfile -t missing < <(missing_packages)
    if (( ${#missing[@]} == 0 )); then
        note apt "all ${#APT_PACKAGES[@]} packages present"
        return
    fi
    [[ $EUID -eq 0 ]] || die "missing apt packages (${missing[*]}); run this script as root"
    # Another engineer or an unattended job may hold the dpkg lock; wait for it.
    local apt=(apt-get -o DPkg::Lock::Timeout=600 -o Acquire::Retries=3)
    if apt_lists_fresh; then
        say "apt lists are fresh; not updating"
    else
        say "apt-get update"
        "${apt[@]}" update -qq || die "apt-get update failed"
    fi
    say "apt-get install ${missing[*]}"
    "${apt[@]}" install -y -qq --no-install-recommends "${missing[@]}" >/tmp/request-pack-apt.log 2>&1 || {
        tail -30 /tmp/request-pack-apt.log >&2
        die "apt-get install failed (full log: /tmp/request-pack-apt.log)"
    }
    note apt "installed ${missing[*]}"
}

# --- python virtualenv --------------------------------------------------------

step_venv() {
    local py="${PYTHON:-python3}"
    command -v "$py" >/dev/null || die "$py not found"
    if [[ ! -x "$VENV/bin/python" ]] || ! "$VENV/bin/python" -c 'import sys' 2>/dev/null; then
        say "creating virtualenv $VENV from $(command -v "$py")"
        rm -rf "$VENV"
        mkdir -p "$(dirname "$VENV")"
        "$py" -m venv "$VENV" || die "python3 -m venv failed (apt-get install python3-venv)"
    fi
    # Reinstall only when pyproject.toml, the extras, the clone's location or the interpreter
    # changed: the editable install points at one clone, and CI uses another.
    # (-I: do not let the current directory shadow the installed package.)
    local stamp want
    stamp="$VENV/.request-pack-stamp"
    want="$(printf '%s\n%s\n%s\n%s\n' "$REPO_ROOT" "$EXTRAS" "$("$VENV/bin/python" -VV)" "$(sha256sum "$REPO_ROOT/pyproject.toml")" | sha256sum | cut -d' ' -f1)"
    if [[ -f "$stamp" && "$(cat "$stamp")" == "$want" ]] && "$VENV/bin/python" -I - "$REPO_ROOT" <<'EOF'
import sys, pathlib, packager
sys.exit(0 if pathlib.Path(packager.__file__).resolve().is_relative_to(pathlib.Path(sys.argv[1]).resolve()) else 1)
EOF
    then
        note venv "$VENV (up to date)"
        return
    fi
    say "pip install -e .[$EXTRAS] into $VENV"
    "$VENV/bin/python" -m pip install -q --upgrade pip >/dev/null 2>&1 || true
    "$VENV/bin/python" -m pip install -e "$REPO_ROOT[$EXTRAS]" >/tmp/request-pack-pip.log 2>&1 || {
        tail -30 /tmp/request-pack-pip.log >&2
        die "pip install -e .[$EXTRAS] failed (full log: /tmp/request-pack-pip.log)"
    }
    printf '%s\n' "$want" >"$stamp"
    note venv "$VENV (installed)"
}

# --- docker daemon ------------------------------------------------------------

docker_ready() { docker info >/dev/null 2>&1; }

step_docker() {
    command -v docker >/dev/null || die "docker client missing (apt-get install docker.io)"
    if ! docker_ready; then
        if ! pgrep -x dockerd >/dev/null; then
            command -v dockerd >/dev/null || die "dockerd missing (apt-get install docker.io)"
            [[ $EUID -eq 0 ]] || die "the docker daemon is down and only root can start it"
            say "starting dockerd (log: $DOCKERD_LOG)"
            # No iptables/bridge: this machine's containers run with --network none.
            setsid nohup dockerd --iptables=false --bridge=none \
                --default-ulimit nofile=20000:20000 --default-ulimit nproc=4096:4096 \
                >>"$DOCKERD_LOG" 2>&1 </dev/null &
        else
            say "dockerd is running but not answering yet; waiting"
        fi
        local deadline=$((SECONDS + 60))
        until docker_ready; do
            if (( SECONDS >= deadline )); then
                tail -20 "$DOCKERD_LOG" >&2 2>/dev/null || true
                die "dockerd did not become ready within 60 s (log: $DOCKERD_LOG)"
            fi
            sleep 1
        done
    fi
    note docker "server $(docker version --format '{{.Server.Version}}' 2>/dev/null) (DOCKER_API_VERSION=$DOCKER_API_VERSION)"
}

# --- QEMU from bookworm-backports ----------------------------------------------

# bookworm's qemu-user-static 7.2 passes the host's x86 /proc/cpuinfo to emulated arm64
# processes; onnxruntime's bundled cpuinfo then writes through a NULL cache array and
# segfaults on `import onnxruntime` (qemu/README.md). QEMU 8.2+ emulates an aarch64
# /proc/cpuinfo. The pinned build is the one the emulated tests' figures come from; when
# backports has moved on, the newest there is taken (qemu/binfmt.sh checks the floor).
QEMU_BACKPORTS_VERSION="1:10.0.2+ds-2+deb13u1~bpo12+1"
QEMU_MIN_DEB_VERSION="1:8.2"
BACKPORTS_SOURCES=/etc/apt/sources.list.d/request-pack-bookworm-backports.sources

step_qemu() {
    local have
    have="$(dpkg-query -W -f='${Version}' qemu-user 2>/dev/null || true)"
    if [[ -n "$have" ]] && dpkg --compare-versions "$have" ge "$QEMU_MIN_DEB_VERSION"; then
        note qemu "qemu-user $have"
        return
    fi
    [[ $EUID -eq 0 ]] || die "qemu-user >= $QEMU_MIN_DEB_VERSION is missing; run this script as root"
    if [[ ! -f "$BACKPORTS_SOURCES" ]]; then
        # Backports are pinned at priority 100 by their Release file: nothing else on the
        # machine moves to them unless asked for by name, as below.
        printf '%s\n' 'Types: deb' 'URIs: http://deb.debian.org/debian' 'Suites: bookworm-backports' \
            'Components: main' 'Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg' >"$BACKPORTS_SOURCES"
    fi
    local apt=(apt-get -o DPkg::Lock::Timeout=600 -o Acquire::Retries=3)
    say "apt-get update (bookworm-backports for qemu-user)"
    "${apt[@]}" update -qq || die "apt-get update failed"
    local v="$QEMU_BACKPORTS_VERSION" pkgs=(qemu-user qemu-user-static qemu-user-binfmt)
    say "apt-get install ${pkgs[*]} $v from bookworm-backports"
    if ! "${apt[@]}" install -y -qq --no-install-recommends "${pkgs[@]/%/=$v}" >/tmp/request-pack-apt.log 2>&1; then
        say "qemu-user $v is gone from bookworm-backports; taking the newest there"
        "${apt[@]}" install -y -qq --no-install-recommends -t bookworm-backports "${pkgs[@]}" >/tmp/request-pack-apt.log 2>&1 || {
            tail -30 /tmp/request-pack-apt.log >&2
            die "installing qemu-user from bookworm-backports failed (full log: /tmp/request-pack-apt.log)"
        }
    fi
    note qemu "installed qemu-user $(dpkg-query -W -f='${Version}' qemu-user) from bookworm-backports"
}

# --- QEMU binfmt --------------------------------------------------------------

step_binfmt() {
    local out
    out="$(bash "$REPO_ROOT/qemu/binfmt.sh")" || die "QEMU binfmt registration failed; see above"
    note binfmt "$out"
}

# --- nix ----------------------------------------------------------------------

NIX_BUILD_USERS=8

step_nix() {
    command -v nix >/dev/null || die "nix missing (apt-get install nix-bin)"
    if ! getent group nixbld >/dev/null; then
        groupadd --system nixbld
    fi
    local i
    for ((i = 1; i <= NIX_BUILD_USERS; i++)); do
        if ! getent passwd "nixbld$i" >/dev/null; then
            useradd --system --gid nixbld --groups nixbld --no-create-home \
                --home-dir /var/empty --shell /usr/sbin/nologin \
                --comment "Nix build user $i" "nixbld$i"
        fi
    done
    local conf want
    conf=/etc/nix/nix.conf
    # Empty substituters: there is no binary cache on this network; everything
    # builds from sources that the flake pins. Debian's nix has no sandbox shell
    # compiled in, so builders get the static busybox as /bin/sh; and a sandbox
    # that cannot be set up must be an error, not a silent unsandboxed build.
    want="$(cat <<'EOF'
# Written by request-pack scripts/setup.sh; edits are overwritten.
build-users-group = nixbld
sandbox = true
sandbox-fallback = false
sandbox-paths = /bin/sh=/bin/busybox
substituters =
experimental-features = nix-command flakes
EOF
)"
    if [[ ! -f "$conf" || "$(cat "$conf")" != "$want" ]]; then
        mkdir -p /etc/nix
        printf '%s\n' "$want" >"$conf"
        say "wrote $conf"
    fi
    mkdir -p /nix/store /nix/var/nix
    note nix "$(nix --version 2>/dev/null | head -1), sandbox=true, $NIX_BUILD_USERS build users"
}

# --- main ---------------------------------------------------------------------

START=$SECONDS
for step in apt qemu venv docker binfmt nix; do
    # qemu is an apt step: whoever skips apt skips it too.
    if skipped "$step" || { [[ "$step" == qemu ]] && skipped apt; }; then
        note "$step" "skipped (REQUEST_PACK_SKIP)"
        continue
    fi
    "step_$step"
done

say "done in $((SECONDS - START)) s"
for line in "${SUMMARY[@]}"; do
    printf '  %s\n' "$line"
done
printf '  %-8s %s\n' env "export DOCKER_API_VERSION=$DOCKER_API_VERSION; venv: $VENV/bin/request-pack"
