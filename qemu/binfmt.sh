#!/usr/bin/env bash
# Register QEMU user-mode emulation for the project's non-native platforms.
#
# Idempotent; run as root after `apt-get install qemu-user-static binfmt-support
# arch-test` (scripts/setup.sh does both). Prints one summary line on stdout;
# everything else goes to stderr. Exits non-zero when emulation cannot work.
set -euo pipefail

BINFMT_DIR="${BINFMT_DIR:-/proc/sys/fs/binfmt_misc}"
# Where we note which interpreter file each F entry holds open (see interpreter_id).
STATE_DIR="${REQUEST_PACK_BINFMT_STATE:-/var/lib/request-pack/binfmt}"
# QEMU before 8.2 hands an emulated process the host's own /proc/cpuinfo (x86 on this
# machine); onnxruntime's cpuinfo library then crashes on import under linux/arm64
# (qemu/README.md, "onnxruntime under QEMU 7.2"). scripts/setup.sh installs a newer one.
QEMU_MIN_VERSION="${QEMU_MIN_VERSION:-8.2}"

# binfmt entry -> Debian architecture name (for arch-test) and uname -m of that arch.
declare -A DEBIAN_ARCH=([qemu-aarch64]=arm64 [qemu-arm]=armhf)
declare -A MACHINE=([qemu-aarch64]=aarch64 [qemu-arm]=armv7l)

log() { printf '[binfmt] %s\n' "$*" >&2; }
die() { printf '[binfmt] error: %s\n' "$*" >&2; exit 1; }

host="$(uname -m)"
wanted=()
for entry in qemu-aarch64 qemu-arm; do
    # The host runs its own architecture natively; arm64 hosts also run armv7
    # natively when the CPU supports AArch32, which arch-test checks below.
    [[ "${MACHINE[$entry]}" == "$host" ]] && continue
    wanted+=("$entry")
done

if [[ ! -e "$BINFMT_DIR/status" ]]; then
    [[ $EUID -eq 0 ]] || die "binfmt_misc is not mounted and only root can mount it"
    log "mounting binfmt_misc on $BINFMT_DIR"
    mount -t binfmt_misc binfmt_misc "$BINFMT_DIR" || die "cannot mount binfmt_misc (no CAP_SYS_ADMIN, or the kernel lacks CONFIG_BINFMT_MISC)"
fi
if [[ "$(cat "$BINFMT_DIR/status")" != enabled ]]; then
    echo 1 >"$BINFMT_DIR/status"
fi

# F (fix-binary) makes the kernel open the interpreter at registration time, so
# it also works inside containers and chroots that lack /usr/libexec/qemu-binfmt.
register_with_fix_binary() {
    local entry="$1" conf="/usr/lib/binfmt.d/$1.conf" line flags
    [[ -f "$conf" ]] || die "$conf missing (apt-get install qemu-user-static)"
    line="$(grep -v '^#' "$conf" | head -1)"
    flags="${line##*:}"
    [[ "$flags" == *F* ]] || line="${line}F"
    [[ -e "$BINFMT_DIR/$entry" ]] && echo -1 >"$BINFMT_DIR/$entry"
    log "registering $entry with flags ${line##*:}"
    printf '%s' "$line" >"$BINFMT_DIR/register"
}

# An F entry keeps the file it opened at registration: upgrading qemu-user replaces the file
# on disk but not the interpreter the kernel runs. Device, inode and mtime of the file the
# path resolves to tell whether the registration predates the installed QEMU.
interpreter_id() {
    stat -L -c '%d:%i:%Y' "$1" 2>/dev/null || echo missing
}

qemu_version() {
    # Debian's *-binfmt-P names make QEMU read its argv as (program, argv0, ...): ask the
    # file they point at. "qemu-aarch64 version 10.0.2 (Debian ...)" -> 10.0.2
    "$(readlink -f "$1")" --version 2>/dev/null | sed -n '1s/^.* version \([0-9][0-9.]*\).*$/\1/p'
}

summary=()
for entry in "${wanted[@]}"; do
    if [[ ! -e "$BINFMT_DIR/$entry" ]]; then
        if command -v update-binfmts >/dev/null && [[ -e "/usr/share/binfmts/$entry" ]]; then
            update-binfmts --enable "$entry" >&2 || log "update-binfmts --enable $entry failed; registering directly"
        fi
    fi
    [[ -e "$BINFMT_DIR/$entry" ]] || register_with_fix_binary "$entry"
    if [[ "$(head -1 "$BINFMT_DIR/$entry")" != enabled ]]; then
        echo 1 >"$BINFMT_DIR/$entry"
    fi
    flags="$(sed -n 's/^flags: //p' "$BINFMT_DIR/$entry")"
    if [[ "$flags" != *F* ]]; then
        register_with_fix_binary "$entry"
        flags="$(sed -n 's/^flags: //p' "$BINFMT_DIR/$entry")"
    fi
    [[ "$(head -1 "$BINFMT_DIR/$entry")" == enabled ]] || die "$entry is registered but not enabled"
    interpreter="$(sed -n 's/^interpreter //p' "$BINFMT_DIR/$entry")"
    version="$(qemu_version "$interpreter")"
    [[ -n "$version" ]] || die "$entry: cannot read the version of $interpreter"
    if ! printf '%s\n%s\n' "$QEMU_MIN_VERSION" "$version" | sort -V -C; then
        die "$entry: QEMU $version is older than $QEMU_MIN_VERSION (onnxruntime crashes under it on linux/arm64); run scripts/setup.sh, which installs qemu-user from bookworm-backports"
    fi
    mkdir -p "$STATE_DIR"
    if [[ "$(cat "$STATE_DIR/$entry" 2>/dev/null)" != "$(interpreter_id "$interpreter")" ]]; then
        log "$entry: (re)registering so that the kernel holds the installed QEMU $version"
        register_with_fix_binary "$entry"
        interpreter_id "$interpreter" >"$STATE_DIR/$entry"
        flags="$(sed -n 's/^flags: //p' "$BINFMT_DIR/$entry")"
    fi
    # Registered is not the same as working: run a tiny foreign binary.
    if command -v arch-test >/dev/null; then
        arch-test "${DEBIAN_ARCH[$entry]}" >/dev/null 2>&1 \
            || die "$entry is registered but a ${DEBIAN_ARCH[$entry]} binary does not run (arch-test ${DEBIAN_ARCH[$entry]})"
    fi
    summary+=("$entry[$flags]")
done

if (( ${#wanted[@]} == 0 )); then
    echo "no emulation needed on $host"
else
    echo "enabled: ${summary[*]} (host $host, qemu $version)"
fi
