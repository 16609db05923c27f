#!/usr/bin/env bash
# Register QEMU user-mode emulation for the project's non-native platforms.
#
# Idempotent; run as root after `apt-get install qemu-user-static binfmt-support
# arch-test` (scripts/setup.sh does both). Prints one summary line on stdout;
# everything else goes to stderr. Exits non-zero when emulation cannot work.
set -euo pipefail

BINFMT_DIR="${BINFMT_DIR:-/proc/sys/fs/binfmt_misc}"

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
    echo "enabled: ${summary[*]} (host $host)"
fi
