#!/usr/bin/env bash
# Installs what building and testing ktlswsgi needs on Debian 12, idempotently:
# the compiler and OpenSSL headers for the cffi binding, nghttp2's headers for
# the HTTP/2 driver's HPACK (ktlswsgi/_csrc/hpack.c), the real clients the
# tests drive (curl, openssl s_client, h2load), strace for the kTLS zero-copy test,
# then the package with its test extras.
set -euo pipefail
cd "$(dirname "$0")/.."

need=()
for pkg in gcc libssl-dev libnghttp2-dev curl openssl ca-certificates strace nghttp2-client; do
  dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed" || need+=("$pkg")
done
if [ ${#need[@]} -gt 0 ]; then
  echo "install-deps: apt-get install ${need[*]}"
  export DEBIAN_FRONTEND=noninteractive
  apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null 2>&1 || {
    apt-get update -qq >/dev/null
    apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
  }
fi
python3 -m pip install -q --disable-pip-version-check -e '.[test]'
