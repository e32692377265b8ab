#!/usr/bin/env bash
# Bounded coverage-guided fuzz run of ktlswsgi._native against its references
# (the C request-head parser against h11; the environ, response framing and
# start_response checks against their Python paths; HPACK through nghttp2
# against the hpack package; tests/fuzz/fuzz_native.py),
# with AddressSanitizer: `make fuzz`, and in CI; then the reactor loop's
# tests (loop.c) on the same AddressSanitizer build.
#
#   bash scripts/fuzz.sh [SECONDS]      (default 60; FUZZ_SECONDS too)
#
# Builds ktlswsgi/_csrc/*.c with clang -fsanitize=address,fuzzer-no-link
# into a scratch directory (the installed build is not touched), preloads
# atheris's ASan + libFuzzer runtime, and fuzzes for SECONDS from the test
# corpus.  A crash, an ASan report or a difference from a reference fails the run and
# leaves the input in $FUZZ_DIR (printed).  Installs clang (Debian) and atheris
# (PyPI) when they are missing.
set -euo pipefail
cd "$(dirname "$0")/.."
seconds=${1:-${FUZZ_SECONDS:-60}}
PYTHON=${PYTHON:-python3}

# libclang-rt-14-dev: the sanitizer runtimes clang links (Debian 12 splits them out).
if ! command -v clang >/dev/null || ! dpkg-query -W -f='${Status}' libclang-rt-14-dev 2>/dev/null | grep -q 'ok installed'; then
  echo "fuzz: apt-get install clang libclang-rt-14-dev"
  export DEBIAN_FRONTEND=noninteractive
  apt-get install -y -qq --no-install-recommends clang libclang-rt-14-dev >/dev/null 2>&1 || {
    apt-get update -qq >/dev/null
    apt-get install -y -qq --no-install-recommends clang libclang-rt-14-dev >/dev/null
  }
fi
"$PYTHON" -c "import atheris" 2>/dev/null \
  || "$PYTHON" -m pip install -q --disable-pip-version-check 'atheris>=2.3'

FUZZ_DIR=${FUZZ_DIR:-$(mktemp -d /tmp/ktlswsgi-fuzz.XXXXXX)}
mkdir -p "$FUZZ_DIR/corpus" "$FUZZ_DIR/artifacts"
include=$("$PYTHON" -c 'import sysconfig; print(sysconfig.get_paths()["include"])')
suffix=$("$PYTHON" -c 'import importlib.machinery as m; print(m.EXTENSION_SUFFIXES[0])')
so="$FUZZ_DIR/_native$suffix"
nghttp2=()   # hpack.c, as setup.py builds it: where nghttp2's headers are
[ -e /usr/include/nghttp2/nghttp2.h ] && nghttp2=(-DKTLSWSGI_NGHTTP2 -lnghttp2)
clang -shared -fPIC -g -O1 -fno-omit-frame-pointer -fsanitize=address,fuzzer-no-link \
  -Wall -Wextra -Werror -I "$include" -I ktlswsgi/_csrc -I ktlswsgi/tls/_csrc \
  ktlswsgi/_csrc/*.c "${nghttp2[@]}" -o "$so"
runtime=$("$PYTHON" -c 'import atheris, os; print(os.path.join(atheris.path(), "asan_with_fuzzer.so"))')

echo "fuzz: $seconds s of tests/fuzz/fuzz_native.py, ASan build $so, work dir $FUZZ_DIR"
start=$(date +%s)
set +e
env LD_PRELOAD="$runtime" ASAN_OPTIONS=detect_leaks=0:abort_on_error=1 \
  KTLSWSGI_NATIVE_SO="$so" KTLSWSGI_FUZZ_SEEDS="$FUZZ_DIR/corpus" \
  "$PYTHON" tests/fuzz/fuzz_native.py "$FUZZ_DIR/corpus" \
  -max_total_time="$seconds" -timeout=10 -rss_limit_mb=4096 \
  -artifact_prefix="$FUZZ_DIR/artifacts/" -print_final_stats=1 > "$FUZZ_DIR/log" 2>&1
rc=$?
set -e
grep -E "^(stat::|Done)|extension under test|ERROR|Error|differs" "$FUZZ_DIR/log" | tail -20
echo "fuzz: exit $rc after $(( $(date +%s) - start ))s, $(ls "$FUZZ_DIR/corpus" | wc -l) inputs in the corpus"
if [ $rc != 0 ]; then
  tail -40 "$FUZZ_DIR/log"
  echo "fuzz: FAILED; inputs in $FUZZ_DIR/artifacts"
fi
# The reactor's C loop (loop.c) takes no input to fuzz: its own tests run on
# the same ASan build instead.
echo "fuzz: tests/test_reactor.py on the ASan build"
set +e
env LD_PRELOAD="$runtime" ASAN_OPTIONS=detect_leaks=0:abort_on_error=1 \
  KTLSWSGI_NATIVE_SO="$so" PYTHONPATH="tests/fuzz${PYTHONPATH:+:$PYTHONPATH}" \
  "$PYTHON" -m pytest -q -p no:cacheprovider -p asan_native tests/test_reactor.py
rc_loop=$?
set -e
[ $rc = 0 ] && rc=$rc_loop
exit $rc
