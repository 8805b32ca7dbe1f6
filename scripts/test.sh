#!/usr/bin/env bash
# The project's test command (see README): installs what the tests drive,
# checks formatting and lints, then runs every test.
#
# On a fresh Debian machine with only the Rust toolchain this is all you need.
# External programs the tests use are installed here (as root, via apt) as
# their features land; a test that needs one and cannot find it fails (with
# how to install it) instead of passing silently.
set -euo pipefail
cd "$(dirname "$0")/.."

# Debian packages the test-suite drives: redis-server for the shared rate
# limits (tests/ratelimit.rs starts its own on an ephemeral port); coturn for
# the relay's real-client tests (its turnutils_uclient, turnutils_peer and
# turnutils_stunclient, see tests/support/turn_tools.rs; its turnserver is
# never started by the tests); python3 + python3-venv for the aioice venv
# below.
APT_PACKAGES=(redis-server coturn python3 python3-venv)

missing=()
for pkg in "${APT_PACKAGES[@]}"; do
  # "install ok installed" only: a removed package's leftover config files
  # do not count.
  [ "$(dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null)" = "install ok installed" ] || missing+=("$pkg")
done
if [ ${#missing[@]} -gt 0 ]; then
  if [ "$(id -u)" = 0 ]; then
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}"
    # Debian's coturn package enables and starts a TURN server on 3478 on a
    # systemd host: the tests only need its client tools, so stop it.
    if command -v systemctl >/dev/null 2>&1 && systemctl is-enabled coturn >/dev/null 2>&1; then
      systemctl disable --now coturn >/dev/null 2>&1 || true
    fi
  else
    echo "missing Debian packages: ${missing[*]} (run as root, or: sudo apt-get install ${missing[*]})" >&2
    exit 1
  fi
fi

# The aioice TURN client (tests/support/aioice_turn.py) in a venv under
# target/ (git-ignored), built with Debian's python3 so it does not depend on
# whichever python3 comes first in PATH; pip runs only when the pinned
# version is not there yet.
AIOICE_PIN="aioice==0.13.0"
VENV=target/test-venv
if ! "$VENV/bin/python" -c 'import importlib.metadata as m, sys; sys.exit(m.version("aioice") != "0.13.0")' 2>/dev/null; then
  rm -rf "$VENV"
  mkdir -p target
  /usr/bin/python3 -m venv "$VENV"
  "$VENV/bin/pip" install --quiet "$AIOICE_PIN" "dnspython==2.9.2" "ifaddr==0.2.0"
fi
export AETHER_TEST_PYTHON="$PWD/$VENV/bin/python"

cargo fmt --all -- --check
cargo clippy --all-targets --locked -- -D warnings
cargo test --locked
# The OTLP span export (cargo feature `otel`, off by default): its lints and
# its end-to-end test against a loopback OTLP receiver.
cargo clippy --all-targets --locked --features otel -- -D warnings
cargo test --locked --features otel --test otel
