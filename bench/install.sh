#!/usr/bin/env bash
# Installs the bench's peers and load tools (idempotent): h2load, nginx and
# taskset from Debian (and libnghttp2-dev, so the build has HPACK in C); gunicorn, granian, hypercorn (HTTP/2 rows), uWSGI
# (compiled: needs gcc, python3-dev and libssl-dev), Flask, matplotlib and
# locust from PyPI (bench/requirements.txt).
set -euo pipefail
cd "$(dirname "$0")/.."
need=()
for pkg in nghttp2-client nginx-light util-linux openssl gcc libssl-dev libnghttp2-dev python3-dev; do
  dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed" || need+=("$pkg")
done
if [ ${#need[@]} -gt 0 ]; then
  export DEBIAN_FRONTEND=noninteractive
  apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null 2>&1 || {
    apt-get update -qq >/dev/null
    apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
  }
fi
python3 -m pip install -q --disable-pip-version-check -e . -r bench/requirements.txt
