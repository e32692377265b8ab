#!/usr/bin/env bash
# Where one case's CPU goes: the per-case profile summaries quoted in the
# issue notes and bench/README.md.
#
#   bash bench/profile.sh SCHEME PATH [APP] [server args...]
#   bash bench/profile.sh https /tiny flask_app --tls --tls-transport memory
#   PROFILE_H2=1 bash bench/profile.sh https /tiny raw_app --tls
#
# PATH: /tiny or /file/{1b,16k,64k,1m} of bench/apps.py; APP: raw_app
# (default) or flask_app, needed when server arguments follow (e.g. --tls
# --tls-transport socket). The server (-w 1 --threads 16) is pinned to core 0,
# h2load --h1 -c16 (PROFILE_H2=1: -c4 -m10 over h2) to core 1; 2 s of warm-up,
# then 5 s measured, then 3 s under `perf record -e cpu-clock` while the load
# goes on. Prints:
#   - requests per server-CPU-second, and the CPU microseconds per request
#     (user + system) of the reactor thread (the worker process's main
#     thread) and of the worker threads together, from /proc/PID/task/*/stat;
#     the reactor's share of the process's CPU;
#   - the process's samples by shared object (the interpreter, the kernel,
#     libcrypto, libssl, libc, our extension): where that CPU went.
# Every run is bounded by h2load -D and perf's `sleep 3`.
set -euo pipefail
scheme=$1; path=$2; app=${3:-raw_app}; shift $(( $# < 3 ? $# : 3 ))
port=${PROFILE_PORT:-18574}
export BENCH_STATIC_DIR=${BENCH_STATIC_DIR:-/tmp/ktlswsgi-bench-static}
cd "$(dirname "$0")/.."
python3 -c "import bench.apps as a; a.make_static_files('$BENCH_STATIC_DIR')"
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

taskset -c 0 python3 -m ktlswsgi "bench.apps:$app" -b "127.0.0.1:$port" -w 1 --threads 16 \
    "$@" >/dev/null 2>&1 &
pid=$!
for _ in $(seq 100); do
    curl -sk -o /dev/null "$scheme://127.0.0.1:$port/tiny" && break
    sleep 0.1
done
child=$(pgrep -P "$pid" | head -1 || true)
if [ -z "$child" ]; then
    echo "profile.sh: the server did not start (run it by hand to see why)" >&2
    kill -TERM "$pid" 2>/dev/null || true
    exit 1
fi
load=(--h1 -c16)
[ "${PROFILE_H2:-0}" = 1 ] && load=(-c4 -m10)
url="$scheme://127.0.0.1:$port$path"

snap() { for t in /proc/"$child"/task/*; do awk -v t="${t##*/}" '{print t, $14, $15}' "$t/stat"; done; }
taskset -c 1 h2load "${load[@]}" -D 2 "$url" >/dev/null 2>&1
snap | sort > "$work/s0"
out=$(taskset -c 1 h2load "${load[@]}" -D 5 "$url" 2>&1)
snap | sort > "$work/s1"
n=$(echo "$out" | grep -o "[0-9]* succeeded" | awk '{print $1}' || true)
if [ -z "$n" ] || [ "$n" = 0 ]; then
    echo "profile.sh: no request succeeded under h2load; its output:" >&2
    echo "$out" >&2
    kill -TERM "$pid"; wait "$pid" 2>/dev/null || true
    exit 1
fi
taskset -c 1 h2load "${load[@]}" -D 4 "$url" >/dev/null 2>&1 &
load_pid=$!
sleep 0.5
perf record -q -e cpu-clock -F 2000 -p "$child" -o "$work/perf.data" -- sleep 3 >/dev/null 2>&1 || true
wait "$load_pid" || true
kill -TERM "$pid"; wait "$pid" 2>/dev/null || true

hz=$(getconf CLK_TCK)
join "$work/s0" "$work/s1" | awk -v c="$child" -v n="$n" -v hz="$hz" '
    { u = $4 - $2; s = $5 - $3; if ($1 == c) { ru += u; rs += s } else { wu += u; ws += s } }
    END { f = 1e6 / hz / n; t = ru + rs + wu + ws
          printf "%d requests, %d per server-CPU-second; us per request (user + system): reactor %.1f + %.1f, workers %.1f + %.1f; reactor share %.0f%%\n",
                 n, n / (t / hz), ru * f, rs * f, wu * f, ws * f, 100 * (ru + rs) / t }'
perf report -i "$work/perf.data" --no-children --sort dso --stdio -g none 2>/dev/null \
    | grep -v '^#' | grep -v '^$' | head -6 | awk '{printf "%s %s; ", $1, $2} END {print ""}'
