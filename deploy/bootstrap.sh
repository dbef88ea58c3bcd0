#!/usr/bin/env bash
# Installs the Debian packages that building, running and testing Strata need.
# Idempotent: when everything is present it checks and returns without
# touching apt. Run as root (or with sudo available).
set -euo pipefail

# Build: compiler, CMake and the libraries Strata links against.
build_pkgs=(
    build-essential cmake pkg-config
    libnng-dev libprotobuf-c-dev protobuf-c-compiler liblmdb-dev lmdb-utils
    libzstd-dev libcurl4-openssl-dev libssl-dev libyaml-dev libjansson-dev
    libpq-dev libhiredis-dev zlib1g-dev libcmocka-dev
)
# Tests: the real servers the integration tests start on loopback, and the
# tools they drive them with.
test_pkgs=(
    curl jq openssl iproute2 procps psmisc python3
    nginx-light varnish redis-server memcached postgresql
    prometheus
    systemd python3-yaml
    chromium
)

want=("${build_pkgs[@]}")
if [ "${STRATA_BOOTSTRAP_BUILD_ONLY:-0}" != 1 ]; then
    want+=("${test_pkgs[@]}")
fi

missing=()
for p in "${want[@]}"; do
    st=$(dpkg-query -W -f='${Status}' "$p" 2>/dev/null || true)
    [ "$st" = "install ok installed" ] || missing+=("$p")
done

if [ ${#missing[@]} -eq 0 ]; then
    exit 0
fi

echo "bootstrap: installing ${missing[*]}" >&2
SUDO=""
if [ "$(id -u)" != 0 ]; then
    SUDO="sudo"
fi

# Package scripts must not start the distribution's own nginx, redis,
# memcached, varnish or postgres services on their default ports: the tests
# start their own instances on free ports, and a stray daemon would confuse
# discovery tests. policy-rc.d 101 tells invoke-rc.d "not allowed".
cleanup_policy=0
if [ ! -e /usr/sbin/policy-rc.d ]; then
    printf '#!/bin/sh\nexit 101\n' | $SUDO tee /usr/sbin/policy-rc.d >/dev/null
    $SUDO chmod 755 /usr/sbin/policy-rc.d
    cleanup_policy=1
fi
trap '[ $cleanup_policy = 1 ] && $SUDO rm -f /usr/sbin/policy-rc.d' EXIT

export DEBIAN_FRONTEND=noninteractive
if ! $SUDO apt-get install -y -q --no-install-recommends "${missing[@]}"; then
    $SUDO apt-get update -q
    $SUDO apt-get install -y -q --no-install-recommends "${missing[@]}"
fi
