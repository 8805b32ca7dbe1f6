#!/usr/bin/env bash
# The project's test command (see README): installs what the tests drive,
# checks formatting and lints, then runs every test.
#
# On a fresh Debian machine with only the Rust toolchain this is all you need.
# External programs the tests use are installed here (as root, via apt) as
# their features land; a test that needs one and cannot find it fails when
# CI=true instead of passing silently.
set -euo pipefail
cd "$(dirname "$0")/.."

# Debian packages the test-suite drives: redis-server for the shared rate
# limits (tests/ratelimit.rs starts its own on an ephemeral port). coturn
# and a Python venv for aioice join this list with the relay.
APT_PACKAGES=(redis-server)

missing=()
for pkg in "${APT_PACKAGES[@]}"; do
  dpkg -s "$pkg" >/dev/null 2>&1 || missing+=("$pkg")
done
if [ ${#missing[@]} -gt 0 ]; then
  if [ "$(id -u)" = 0 ]; then
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}"
  else
    echo "missing Debian packages: ${missing[*]} (run as root, or: sudo apt-get install ${missing[*]})" >&2
    exit 1
  fi
fi

cargo fmt --all -- --check
cargo clippy --all-targets --locked -- -D warnings
cargo test --locked
