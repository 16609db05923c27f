#!/usr/bin/env bash
# The end-to-end demo behind `make demo` (scripts/setup.sh has already run).
# Walks the example artifact through every request-pack command that exists
# today; a step whose command is not in `request-pack --help` yet is reported
# and skipped, so the demo grows with the CLI.
set -euo pipefail

REPO_ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$REPO_ROOT"
VENV="${REQUEST_PACK_VENV:-$HOME/.cache/request-pack/venv}"
RP="$VENV/bin/request-pack"
ARTIFACT="${ARTIFACT:-artifacts/efficientnet-lite0}"
export DOCKER_API_VERSION="${DOCKER_API_VERSION:-1.41}"

[[ -x "$RP" ]] || { echo "demo: $RP missing; run make setup" >&2; exit 3; }
[[ -d "$ARTIFACT" ]] || { echo "demo: example artifact $ARTIFACT does not exist yet" >&2; exit 2; }

if [[ -t 1 ]]; then BOLD=$'\033[1m' OFF=$'\033[0m'; else BOLD= OFF=; fi
COMMANDS="$("$VENV/bin/python" -c 'import typer; from packager.cli import app; print("\n".join(typer.main.get_command(app).commands))')"
has() { grep -qx "$1" <<<"$COMMANDS"; }

# Each step: the subcommand, then its arguments. The committed lock is used as
# it is (fetch + lock --frozen): re-locking would resolve against the moving
# Debian mirror and could change it.
DEMO_OUT="${DEMO_OUT:-$REPO_ROOT/demo-out}"
NAME="$(basename "$ARTIFACT")"
PLATFORM_SLUG="linux-$(uname -m | sed -e 's/x86_64/amd64/' -e 's/aarch64/arm64/' -e 's/armv7l/arm-v7/')"
KEY="$DEMO_OUT/keys/evaluator.key"
BUNDLE="$DEMO_OUT/results/$NAME-$PLATFORM_SLUG.bundle.tar.gz"
BOARD="sqlite:///$DEMO_OUT/scoreboard.db"
mkdir -p "$DEMO_OUT"
[[ -f "$KEY" ]] || "$RP" keygen --out "$DEMO_OUT/keys" --name evaluator
rm -rf "$DEMO_OUT/results" "$DEMO_OUT/mlperf"
STEPS=(
    "doctor"
    "validate $ARTIFACT"
    "fetch $ARTIFACT"
    "lock --frozen $ARTIFACT"
    "build $ARTIFACT"
    "evaluate $ARTIFACT --key $KEY --out $DEMO_OUT/results"
    "verify $BUNDLE --trust $DEMO_OUT/keys/evaluator.pub"
    "publish $BUNDLE --board $BOARD --trust $DEMO_OUT/keys/evaluator.pub"
    "board pareto --board $BOARD"
    "export --mlperf $BUNDLE --trust $DEMO_OUT/keys/evaluator.pub --out $DEMO_OUT/mlperf"
)

ran=0; missing=()
for step in "${STEPS[@]}"; do
    read -r -a argv <<<"$step"
    if ! has "${argv[0]}"; then
        missing+=("${argv[0]}")
        continue
    fi
    printf '\n%s+ request-pack %s%s\n' "$BOLD" "$step" "$OFF"
    "$RP" "${argv[@]}"
    ran=$((ran + 1))
done

printf '\ndemo: %d steps ran' "$ran"
if (( ${#missing[@]} )); then
    printf '; not available yet: %s' "$(printf '%s\n' "${missing[@]}" | sort -u | tr '\n' ' ')"
fi
printf '\n'
