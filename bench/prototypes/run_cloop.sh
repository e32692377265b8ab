#!/usr/bin/env bash
# The C-loop prototype (cloop.c; the app inline, and on a pool of 16 worker
# threads) beside ktlswsgi and granian, HTTP/1.1 plain or over TLS (one
# self-signed P-256 certificate for all three; ktlswsgi's socket transport),
# interleaved rounds: requests per server-CPU-second (utime+stime of the
# serving process), server on core 0, h2load --h1 -c16 on core 1, 2 s of
# warm-up then 4 s measured, each run bounded by h2load -D.
#
#   bash bench/prototypes/run_cloop.sh [ROUNDS] [APP] [PATH] [SCHEME]
#   bash bench/prototypes/run_cloop.sh 3 raw_app /tiny https
set -euo pipefail
cd "$(dirname "$0")/../.."
rounds=${1:-3}; app=${2:-raw_app}; path=${3:-/tiny}; scheme=${4:-http}; port=18610
tls_cloop=(); tls_k=(); tls_g=()
if [ "$scheme" = https ]; then
    dir=$(mktemp -d)
    openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 2 \
        -subj /CN=localhost -keyout "$dir/key.pem" -out "$dir/cert.pem" 2>/dev/null
    tls_cloop=("$dir/cert.pem" "$dir/key.pem")
    tls_k=(--tls --tls-transport socket --certfile "$dir/cert.pem" --keyfile "$dir/key.pem")
    tls_g=(--ssl-certificate "$dir/cert.pem" --ssl-keyfile "$dir/key.pem")
fi
export BENCH_STATIC_DIR=${BENCH_STATIC_DIR:-/tmp/ktlswsgi-bench-static}
python3 -c "import bench.apps as a; a.make_static_files('$BENCH_STATIC_DIR')"
gapp=${app%_app}

measure() {   # measure NAME PID_TO_WATCH
    local pid=$2 t0 t1 out n hz
    taskset -c 1 h2load --h1 -c16 -D 2 "$scheme://127.0.0.1:$port$path" >/dev/null 2>&1
    t0=$(awk '{print $14 + $15}' "/proc/$pid/stat")
    out=$(taskset -c 1 h2load --h1 -c16 -D 4 "$scheme://127.0.0.1:$port$path" 2>&1)
    t1=$(awk '{print $14 + $15}' "/proc/$pid/stat")
    n=$(echo "$out" | grep -o "[0-9]* succeeded" | awk '{print $1}')
    hz=$(getconf CLK_TCK)
    echo "$1 $(( n * hz / (t1 - t0) ))"
}

ready() {
    for _ in $(seq 100); do
        curl -sk -o /dev/null "$scheme://127.0.0.1:$port/tiny" && return 0
        sleep 0.1
    done
    return 1
}

one() {   # one NAME
    local pid child
    case $1 in
      cloop)        # the app inline on the loop thread
        taskset -c 0 python3 -m bench.prototypes.cloop_serve "bench.apps:$app" $port 12 0 "${tls_cloop[@]}" >/dev/null &
        pid=$!; ready; measure cloop $pid ;;
      cloop-pool)   # the app on 16 worker threads, as ktlswsgi --threads 16
        taskset -c 0 python3 -m bench.prototypes.cloop_serve "bench.apps:$app" $port 12 16 "${tls_cloop[@]}" >/dev/null &
        pid=$!; ready; measure cloop-pool $pid ;;
      ktlswsgi)
        taskset -c 0 python3 -m ktlswsgi "bench.apps:$app" -b 127.0.0.1:$port -w 1 --threads 16 "${tls_k[@]}" >/dev/null 2>&1 &
        pid=$!; ready; child=$(pgrep -P $pid | head -1); measure ktlswsgi $child ;;
      granian)
        taskset -c 0 granian --interface wsgi --workers 1 --blocking-threads 16 --host 127.0.0.1 \
            --port $port --no-ws --log-level warning "${tls_g[@]}" "bench.apps:${gapp}_app" >/dev/null 2>&1 &
        pid=$!; ready; child=$(pgrep -P $pid | head -1); measure granian $child ;;
    esac
    kill -TERM $pid 2>/dev/null || true; wait $pid 2>/dev/null || true
}

for _ in $(seq "$rounds"); do
    for s in cloop cloop-pool ktlswsgi granian; do one $s; done
done
