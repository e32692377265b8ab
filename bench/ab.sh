#!/usr/bin/env bash
# Interleaved A/B of two ktlswsgi trees on one case: the harness behind the
# "interleaved A/B" figures in commit messages and bench/README.md.
#
#   bash bench/ab.sh TREE_A TREE_B SCHEME PATH [ROUNDS] [APP]
#   bash bench/ab.sh /tmp/wt-old . https /file/1m 5
#
# TREE_*: checkouts of this repository (git worktree add /tmp/wt-old <commit>;
# copy ktlswsgi/tls/_openssl*.so into it when the cffi source is unchanged, or
# build it there). SCHEME http|https (https: --tls --tls-transport memory, or
# AB_TRANSPORT=socket).
# PATH: /tiny or /file/{1b,16k,64k,1m} of bench/apps.py. APP: raw_app (default)
# or flask_app. Each round runs A then B: the server (-w 1 --threads 16) pinned
# to core 0, h2load --h1 -c16 on core 1, 2 s of warm-up, then 4 s measured.
# Prints each round's requests per server-CPU-second (the serving process's
# utime+stime) and the median per tree, then the median CPU microseconds per
# request of the reactor thread and of the worker threads together
# (/proc/PID/task/*/stat: the reactor is the process's main thread).
# Every run is bounded by h2load -D.
# AB_H2=1: HTTP/2 instead (https only; h2load -c4 -m10).
set -euo pipefail
A=$(cd "$1" && pwd); B=$(cd "$2" && pwd); scheme=$3; path=$4
rounds=${5:-5}; app=${6:-raw_app}
export BENCH_STATIC_DIR=${BENCH_STATIC_DIR:-/tmp/ktlswsgi-bench-static}
(cd "$A" && python3 -c "import bench.apps as a; a.make_static_files('$BENCH_STATIC_DIR')")
port=${AB_PORT:-18570}

run() {
    local args=("bench.apps:$app" -b "127.0.0.1:$port" -w 1 --threads 16)
    [ "$scheme" = https ] && args+=(--tls --tls-transport "${AB_TRANSPORT:-memory}")
    (cd "$1" && exec taskset -c 0 python3 -m ktlswsgi "${args[@]}" >/dev/null 2>&1) &
    local pid=$! child="" i
    for i in $(seq 100); do
        curl -sk -o /dev/null "$scheme://127.0.0.1:$port/tiny" && break
        sleep 0.1
    done
    child=$(pgrep -P "$pid" | head -1)
    local load=(--h1 -c16)
    [ "${AB_H2:-0}" = 1 ] && load=(-c4 -m10)
    taskset -c 1 h2load "${load[@]}" -D 2 "$scheme://127.0.0.1:$port$path" >/dev/null 2>&1
    local t0 t1 out n
    t0=$(awk '{print $14 + $15}' "/proc/$child/stat")
    r0=$(awk '{print $14 + $15}' "/proc/$child/task/$child/stat")
    out=$(taskset -c 1 h2load "${load[@]}" -D 4 "$scheme://127.0.0.1:$port$path" 2>&1)
    t1=$(awk '{print $14 + $15}' "/proc/$child/stat")
    # The reactor is the worker process's main thread (tid = pid).
    r1=$(awk '{print $14 + $15}' "/proc/$child/task/$child/stat")
    n=$(echo "$out" | grep -o "[0-9]* succeeded" | awk '{print $1}')
    kill -TERM "$pid"; wait "$pid" 2>/dev/null || true
    local hz; hz=$(getconf CLK_TCK)
    echo "$(( n * hz / (t1 - t0) )) $(( (r1 - r0) * 1000000 / hz / n )) $(( (t1 - t0 - r1 + r0) * 1000000 / hz / n ))"
}

median() { printf "%s\n" "$@" | sort -n | awk '{a[NR] = $1} END {print a[int((NR + 1) / 2)]}'; }

ra=(); rb=(); xa=(); xb=(); wa=(); wb=()
for _ in $(seq "$rounds"); do
    read -r q x w <<<"$(run "$A")"; ra+=("$q"); xa+=("$x"); wa+=("$w")
    read -r q x w <<<"$(run "$B")"; rb+=("$q"); xb+=("$x"); wb+=("$w")
done
echo "$app $scheme$path req/CPU-s  A $A: ${ra[*]} (median $(median "${ra[@]}"))" \
     " B $B: ${rb[*]} (median $(median "${rb[@]}"))"
echo "CPU us per request, reactor thread / worker threads (medians):" \
     "A $(median "${xa[@]}") / $(median "${wa[@]}"), B $(median "${xb[@]}") / $(median "${wb[@]}")"
