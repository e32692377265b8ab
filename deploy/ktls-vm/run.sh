#!/usr/bin/env bash
# Run a command inside a QEMU (TCG) guest whose kernel has kTLS (Debian
# bookworm's CONFIG_TLS=m kernel), with the host's / shared read-only.
#
#   deploy/ktls-vm/run.sh [--blacklist-tls] [--timeout SECONDS] [--env NAME=VALUE]... -- COMMAND...
#
# The command runs as root in the current working directory, chrooted into the
# host's root filesystem (so the host's Python, OpenSSL and this checkout are
# used unchanged). Its output goes to stdout; run.sh exits with its exit code.
# If the VM cannot boot, or the command does not finish within --timeout
# (default 540 s), run.sh says so on stderr and exits 125 (boot/guest failure)
# or 124 (timeout). See README.md in this directory.
set -euo pipefail

ME=ktls-vm
HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
CACHE=${KTLSWSGI_VM_CACHE:-$HOME/.cache/ktlswsgi/vm}
TIMEOUT=540
BLACKLIST_TLS=0
MEMORY=${KTLSWSGI_VM_MEMORY:-2048}
SMP=${KTLSWSGI_VM_SMP:-2}
EXTRA_ENV=()

# Kernel modules put into the initramfs (with their dependencies, resolved
# from the kernel package's own modules.dep) and loaded by init.sh.
BOOT_MODULES="virtio_pci 9pnet_virtio 9p"
TLS_MODULES="tls"
CIPHER_MODULES="gcm aesni_intel ghash_clmulni_intel ccm chacha20poly1305 chacha_generic chacha_x86_64 poly1305_generic poly1305_x86_64"
# The initramfs is rebuilt when this, the kernel package, the module lists,
# init.sh, /bin/busybox or the build_initramfs function below change.
INITRAMFS_RECIPE=1

log() { printf '%s: %s\n' "$ME" "$*" >&2; }
die() { local rc=$1; shift; printf '%s: ERROR: %s\n' "$ME" "$*" >&2; exit "$rc"; }

usage() {
    sed -n '2,12p' "${BASH_SOURCE[0]}" | sed 's/^# \{0,1\}//' >&2
    exit 2
}

while [ $# -gt 0 ]; do
    case "$1" in
        --blacklist-tls) BLACKLIST_TLS=1; shift ;;
        --timeout) [ $# -ge 2 ] || usage; TIMEOUT=$2; shift 2 ;;
        --timeout=*) TIMEOUT=${1#--timeout=}; shift ;;
        --env) [ $# -ge 2 ] || usage; EXTRA_ENV+=("$2"); shift 2 ;;
        --env=*) EXTRA_ENV+=("${1#--env=}"); shift ;;
        --) shift; break ;;
        -h|--help) usage ;;
        *) log "unknown option: $1"; usage ;;
    esac
done
[ $# -gt 0 ] || { log "no COMMAND given"; usage; }
[[ $TIMEOUT =~ ^[0-9]+$ ]] && [ "$TIMEOUT" -gt 0 ] || die 2 "--timeout wants a positive number of seconds, got '$TIMEOUT'"
for kv in ${EXTRA_ENV[@]+"${EXTRA_ENV[@]}"}; do
    [[ $kv =~ ^[A-Za-z_][A-Za-z0-9_]*= ]] || die 2 "--env wants NAME=VALUE, got '$kv'"
done
[ "$(id -u)" = 0 ] || die 125 "must run as root (installs packages; the guest runs the command as root)"
[ "$(uname -m)" = x86_64 ] || die 125 "x86_64 hosts only"

T0=$(date +%s.%N)
elapsed() { awk -v a="$T0" -v b="$(date +%s.%N)" 'BEGIN{printf "%.1f", b-a}'; }

# ---------------------------------------------------------------- 1. packages
need_pkgs=()
command -v qemu-system-x86_64 >/dev/null || need_pkgs+=(qemu-system-x86)
command -v cpio >/dev/null || need_pkgs+=(cpio)
command -v depmod >/dev/null && command -v modprobe >/dev/null || need_pkgs+=(kmod)
# busybox-static ships /bin/busybox statically linked; plain "busybox" is not.
[ "$(dpkg-query -W -f='${Status}' busybox-static 2>/dev/null)" = "install ok installed" ] || need_pkgs+=(busybox-static)
if [ ${#need_pkgs[@]} -gt 0 ]; then
    log "installing ${need_pkgs[*]} from Debian's packages"
    export DEBIAN_FRONTEND=noninteractive
    if ! apt-get install -y --no-install-recommends "${need_pkgs[@]}" >&2; then
        log "install failed; running apt-get update and retrying"
        apt-get update >&2 || die 125 "apt-get update failed"
        apt-get install -y --no-install-recommends "${need_pkgs[@]}" >&2 \
            || die 125 "cannot install ${need_pkgs[*]}"
    fi
fi

# ------------------------------------------------------- 2. the kernel package
mkdir -p "$CACHE/debs"
# The concrete package linux-image-amd64 depends on, e.g.
# "Depends: linux-image-6.1.0-56-amd64 (= 6.1.192-2)". apt-cache takes ~1.5 s
# here (no pkgcache.bin), so the answer is reused for 12 hours.
RESOLVED="$CACHE/kernel.resolved"
resolve_kpkg() {
    local want=${KTLSWSGI_VM_KERNEL_PKG:-}
    if [ -n "$want" ]; then
        apt-cache show --no-all-versions "$want" 2>/dev/null \
            | awk -v p="$want" '$1 == "Version:" { print p, $2; exit }'
    else
        apt-cache show --no-all-versions linux-image-amd64 2>/dev/null \
            | awk '$1 == "Depends:" { for (i = 2; i <= NF; i++) if ($i ~ /^linux-image-[0-9].*-amd64$/) {
                       v = $(i + 2); sub(/\)?,?$/, "", v); print $i, v; exit } }'
    fi
}
kpkg=; kver_pkg=
if [ -z "${KTLSWSGI_VM_KERNEL_PKG:-}" ] && [ -n "$(find "$RESOLVED" -mmin -720 2>/dev/null)" ]; then
    read -r kpkg kver_pkg < "$RESOLVED" || true
    [ -s "$CACHE/debs/${kpkg}_${kver_pkg//:/%3a}_amd64.deb" ] || { kpkg=; kver_pkg=; }
fi
if [ -z "$kpkg" ]; then
    read -r kpkg kver_pkg < <(resolve_kpkg) || true
    if [ -z "$kpkg" ] || [ -z "$kver_pkg" ]; then
        log "apt does not know ${KTLSWSGI_VM_KERNEL_PKG:-linux-image-amd64}; running apt-get update"
        apt-get update >&2 || log "apt-get update failed"
        read -r kpkg kver_pkg < <(resolve_kpkg) || true
    fi
    [ -n "$kpkg" ] && [ -n "$kver_pkg" ] && [ -z "${KTLSWSGI_VM_KERNEL_PKG:-}" ] \
        && echo "$kpkg $kver_pkg" > "$RESOLVED"
fi
kdeb=
if [ -n "$kpkg" ] && [ -n "$kver_pkg" ]; then
    kdeb="$CACHE/debs/${kpkg}_${kver_pkg//:/%3a}_amd64.deb"
    if [ ! -s "$kdeb" ]; then
        log "downloading $kpkg $kver_pkg into $CACHE/debs"
        dl=$(mktemp -d "$CACHE/debs/.dl.XXXXXX")
        # apt-get download as root warns that _apt cannot write here; harmless.
        if (cd "$dl" && apt-get download "$kpkg=$kver_pkg" 2>&1 | grep -v -e 'unsandboxed as root' -e '^W: ' >&2 || true) \
            && [ -s "$dl/$(basename "$kdeb")" ]; then
            mv "$dl/$(basename "$kdeb")" "$kdeb"
        else
            log "apt-get download $kpkg=$kver_pkg failed"
            kdeb=
        fi
        rm -rf "$dl"
    fi
fi
if [ -z "$kdeb" ]; then
    # Offline, or the lists are gone: fall back to the newest kernel in the cache.
    kdeb=$(ls -1 "$CACHE"/debs/linux-image-*-amd64_*_amd64.deb 2>/dev/null | sort -V | tail -n1 || true)
    [ -n "$kdeb" ] || die 125 "cannot get Debian's kernel package (linux-image-amd64's dependency) and none is cached in $CACHE/debs"
    log "using the cached $(basename "$kdeb")"
fi
kbase=$(basename "$kdeb" _amd64.deb)      # linux-image-6.1.0-56-amd64_6.1.192-2
kname=${kbase%%_*}                          # linux-image-6.1.0-56-amd64
KREL=${kname#linux-image-}                  # 6.1.0-56-amd64 (uname -r)

# ----------------------------------------- 3. kernel image + cached initramfs
build_initramfs() {
    local work x st dep mods
    work=$(mktemp -d "$CACHE/.build.XXXXXX")
    x="$work/pkg"; st="$work/root"
    log "building the initramfs ($(basename "$INITRAMFS"))"
    dpkg -x "$kdeb" "$x"
    [ -f "$x/boot/vmlinuz-$KREL" ] || { rm -rf "$work"; die 125 "$kdeb has no boot/vmlinuz-$KREL"; }
    # The package ships no modules.dep (its postinst makes it): make one.
    depmod -b "$x" "$KREL"
    mods=$(for m in $BOOT_MODULES $TLS_MODULES $CIPHER_MODULES; do
               dep=$(modprobe -C /dev/null -d "$x" -S "$KREL" --show-depends "$m") \
                   || { echo "MISSING:$m"; continue; }
               printf '%s\n' "$dep"
           done)
    if grep -q '^MISSING:' <<<"$mods"; then
        rm -rf "$work"
        die 125 "modules not in $kbase: $(grep '^MISSING:' <<<"$mods" | cut -d: -f2 | tr '\n' ' ')"
    fi
    mkdir -p "$st"/{bin,dev,proc,sys,newroot,etc,job} "$st/lib/modules/$KREL"
    awk '$1 == "insmod" { print $2 }' <<<"$mods" | sort -u | while read -r ko; do
        rel=${ko#"$x"/}
        mkdir -p "$st/$(dirname "$rel")"
        cp "$ko" "$st/$rel"
    done
    cp "$x/lib/modules/$KREL"/modules.{order,builtin,builtin.modinfo} "$st/lib/modules/$KREL/" 2>/dev/null || true
    depmod -b "$st" "$KREL"
    cp /bin/busybox "$st/bin/busybox"
    ln -s busybox "$st/bin/sh"
    cp "$HERE/init.sh" "$st/init"
    chmod 755 "$st/init"
    printf 'BOOT_MODULES="%s"\nTLS_MODULES="%s"\nCIPHER_MODULES="%s"\n' \
        "$BOOT_MODULES" "$TLS_MODULES" "$CIPHER_MODULES" > "$st/etc/ktls-vm.conf"
    mknod -m 600 "$st/dev/console" c 5 1
    (cd "$st" && find . -print0 | cpio --null -o -H newc -R 0:0 --quiet) | gzip -6 > "$work/initramfs"
    cp "$x/boot/vmlinuz-$KREL" "$work/vmlinuz"
    # Booting the uncompressed kernel through its PVH entry point skips the
    # firmware's real-mode setup and the xz decompression, which take ~5 s
    # under TCG. Debian's kernel is xz-compressed and has CONFIG_PVH=y.
    if grep -q '^CONFIG_PVH=y' "$x/boot/config-$KREL" 2>/dev/null \
        && python3 - "$work/vmlinuz" "$work/vmlinux" <<'PY'
import lzma, sys
data = open(sys.argv[1], "rb").read()
at = data.find(b"\xfd7zXZ\x00")
if at < 0:
    sys.exit("no xz payload")
d = lzma.LZMADecompressor(lzma.FORMAT_XZ)
elf = d.decompress(data[at:])
if not d.eof or elf[:4] != b"\x7fELF":
    sys.exit("xz payload did not decompress to an ELF image")
open(sys.argv[2], "wb").write(elf)
PY
    then
        mv "$work/vmlinux" "$VMLINUX_PVH"
    else
        log "cannot extract the uncompressed kernel; booting the bzImage (slower)"
    fi
    [ -s "$VMLINUZ" ] || mv "$work/vmlinuz" "$VMLINUZ"
    mv "$work/initramfs" "$INITRAMFS"
    log "initramfs: $(awk '$1 == "insmod"' <<<"$mods" | sort -u | wc -l) modules, $(du -k "$INITRAMFS" | cut -f1) KiB"
    rm -rf "$work"
}
hash=$( {
    echo "recipe=$INITRAMFS_RECIPE"
    declare -f build_initramfs
    echo "kernel=$kbase"
    echo "boot=$BOOT_MODULES tls=$TLS_MODULES ciphers=$CIPHER_MODULES"
    sha256sum < "$HERE/init.sh"
    sha256sum < /bin/busybox
} | sha256sum | cut -c1-16)
VMLINUZ="$CACHE/vmlinuz-$kbase"          # as shipped (bzImage)
VMLINUX_PVH="$CACHE/vmlinux-$kbase.pvh"   # uncompressed ELF, booted via PVH
INITRAMFS="$CACHE/initramfs-$kbase-$hash.cpio.gz"

if [ ! -s "$INITRAMFS" ] || [ ! -s "$VMLINUZ" ]; then
    build_initramfs
fi
touch "$INITRAMFS"   # marks it as in use; builds unused for 7 days are pruned
find "$CACHE" -maxdepth 1 -name 'initramfs-*.cpio.gz' -mtime +7 -delete 2>/dev/null || true
KERNEL=$VMLINUZ
[ -s "$VMLINUX_PVH" ] && [ "${KTLSWSGI_VM_BOOT:-pvh}" != bzimage ] && KERNEL=$VMLINUX_PVH

# ---------------------------------------------------- 4. the per-run job part
RUN=$(mktemp -d "${TMPDIR:-/tmp}/ktls-vm.XXXXXX")
QPID=
cleanup() {
    if [ -n "$QPID" ] && kill -0 "$QPID" 2>/dev/null; then
        kill "$QPID" 2>/dev/null || true
        sleep 0.2
        kill -9 "$QPID" 2>/dev/null || true
    fi
    rm -rf "$RUN"
}
trap cleanup EXIT
trap 'log "interrupted"; exit 130' INT TERM HUP

sq() { local q="'\\''"; printf "'%s'" "${1//\'/$q}"; }   # POSIX single-quoting

NONCE=$(od -An -tx1 -N8 /dev/urandom | tr -d ' \n')
HOSTPY=$(command -v python3 || true)
PYBIN=
if [ -n "$HOSTPY" ]; then
    PYBIN=$(dirname "$("$HOSTPY" -c 'import sys; print(sys.executable)' 2>/dev/null || echo "$HOSTPY")")
fi
GUEST_PATH=
IFS=: read -r -a host_path <<<"$PATH"
for d in ${PYBIN:+"$PYBIN"} /root/.pyenv/shims /root/.pyenv/bin ${host_path[@]+"${host_path[@]}"} \
         /usr/local/sbin /usr/local/bin /usr/sbin /usr/bin /sbin /bin; do
    [ -n "$d" ] || continue
    case ":$GUEST_PATH:" in *":$d:"*) ;; *) GUEST_PATH=${GUEST_PATH:+$GUEST_PATH:}$d ;; esac
done
if [ -t 1 ] && [ -n "${TERM:-}" ]; then GUEST_TERM=$TERM; else GUEST_TERM=dumb; fi

mkdir -p "$RUN/job/job"
{
    echo "# generated by $ME/run.sh; runs inside the guest's chroot (host root, read-only)"
    echo "export HOME=$(sq "$HOME")"
    echo "export PATH=$(sq "$GUEST_PATH")"
    echo "export TERM=$(sq "$GUEST_TERM")"
    echo "export LANG=$(sq "${LANG:-C.UTF-8}")"
    echo "export TMPDIR=/tmp"
    echo "export XDG_CACHE_HOME=/tmp/.cache"
    echo "export PYTHONDONTWRITEBYTECODE=1"
    echo "export KTLSWSGI_IN_VM=1"
    echo "export KTLSWSGI_VM_TLS=\"\$KTLS_VM_MODE\"   # loaded | blacklisted"
    [ -n "${PYENV_VERSION:-}" ] && echo "export PYENV_VERSION=$(sq "$PYENV_VERSION")"
    [ -n "${VIRTUAL_ENV:-}" ] && echo "export VIRTUAL_ENV=$(sq "$VIRTUAL_ENV")"
    [ -n "${PYTHONPATH:-}" ] && echo "export PYTHONPATH=$(sq "$PYTHONPATH")"
    [ -n "${PYTEST_ADDOPTS:-}" ] && echo "export PYTEST_ADDOPTS=$(sq "$PYTEST_ADDOPTS")"
    # Forward the project's own settings.
    while IFS= read -r name; do
        case "$name" in KTLSWSGI_VM_*|KTLSWSGI_IN_VM) continue ;; esac
        echo "export $name=$(sq "${!name}")"
    done < <(compgen -e | grep '^KTLSWSGI_' || true)
    for kv in ${EXTRA_ENV[@]+"${EXTRA_ENV[@]}"}; do
        echo "export ${kv%%=*}=$(sq "${kv#*=}")"
    done
    echo "unset KTLS_VM_MODE"
    echo "cd $(sq "$PWD") || { echo '$ME: the working directory does not exist in the guest' >&2; exit 125; }"
    printf 'exec'
    for a in "$@"; do printf ' %s' "$(sq "$a")"; done
    echo
} > "$RUN/job/job/job.sh"
printf '%s\n' "$NONCE" > "$RUN/job/job/nonce"
printf '%s\n' "$PWD" > "$RUN/job/job/cwd"
[ -n "${KTLSWSGI_VM_9P_OPTS:-}" ] && printf '%s\n' "$KTLSWSGI_VM_9P_OPTS" > "$RUN/job/job/9p_opts"
(cd "$RUN/job" && find . -print0 | cpio --null -o -H newc -R 0:0 --quiet) | gzip -1 > "$RUN/job.cpio.gz"
# The kernel unpacks concatenated (compressed) cpio archives in order.
cat "$INITRAMFS" "$RUN/job.cpio.gz" > "$RUN/initrd"

# ------------------------------------------------------------------- 5. boot
APPEND="console=ttyS0 quiet loglevel=3 panic=-1 mitigations=off"
[ "$BLACKLIST_TLS" = 1 ] && APPEND="$APPEND module_blacklist=tls"
[ -n "${KTLSWSGI_VM_APPEND:-}" ] && APPEND="$APPEND $KTLSWSGI_VM_APPEND"
QEMU=(qemu-system-x86_64
    -accel tcg,thread=multi -cpu "${KTLSWSGI_VM_CPU:-max}" -smp "$SMP" -m "$MEMORY"
    -nographic -monitor none -serial stdio -no-reboot -nic none
    -kernel "$KERNEL" -initrd "$RUN/initrd" -append "$APPEND"
    -virtfs local,path=/,mount_tag=host,security_model=none,readonly=on,multidevs=remap)

log "booting $KREL (TCG, ${SMP} vCPUs, ${MEMORY} MiB$([ "$BLACKLIST_TLS" = 1 ] && echo ', tls blacklisted'), timeout ${TIMEOUT}s; setup took $(elapsed)s)"
mkfifo "$RUN/console"
timeout -k 5 "$TIMEOUT" "${QEMU[@]}" < /dev/null > "$RUN/console" &
QPID=$!

RC_FILE="$RUN/rc"; FAIL_FILE="$RUN/fail"; READY_FILE="$RUN/ready"; BOOT_LOG="$RUN/boot.log"
# Console lines before the READY marker (firmware, kernel) go to BOOT_LOG and
# are shown only if the guest fails; after it, everything is the command's.
while IFS= read -r line || [ -n "$line" ]; do
    line=${line//$'\r'/}
    [ -n "${KTLSWSGI_VM_DEBUG:-}" ] && printf 'console| %q\n' "$line" >&2
    case "$line" in
        *"KTLS_VM_EXIT="*" $NONCE")
            pre=${line%%KTLS_VM_EXIT=*}
            [ -n "$pre" ] && printf '%s\n' "$pre"
            rest=${line##*KTLS_VM_EXIT=}
            printf '%s\n' "${rest%% *}" > "$RC_FILE"
            log "command finished after $(elapsed)s"
            ;;
        *"KTLS_VM_FAIL="*" $NONCE")
            pre=${line%%KTLS_VM_FAIL=*}
            [ -n "$pre" ] && printf '%s\n' "$pre"
            rest=${line##*KTLS_VM_FAIL=}
            printf '%s\n' "${rest% "$NONCE"}" > "$FAIL_FILE"
            ;;
        *"KTLS_VM_READY "*" $NONCE")
            touch "$READY_FILE"
            mode=${line##*mode=}
            log "guest up (tls ${mode%% *}) after $(elapsed)s; running: $*"
            ;;
        *)
            if [ ! -e "$READY_FILE" ]; then
                printf '%s\n' "$line" >> "$BOOT_LOG"
            elif [ ! -e "$RC_FILE" ]; then
                # Nothing the guest prints after the exit marker is the command's.
                printf '%s\n' "$line"
            fi
            ;;
    esac
done < "$RUN/console"
set +e
wait "$QPID"; qrc=$?
set -e
QPID=

if [ -s "$RC_FILE" ]; then
    exit "$(cat "$RC_FILE")"
fi
if [ -s "$BOOT_LOG" ]; then
    log "guest console before the failure:"
    sed -e 's/\x1b\[[0-9;?]*[A-Za-z]//g' -e 's/\x1bc//g' -e 's/^/  | /' "$BOOT_LOG" >&2
fi
if [ -s "$FAIL_FILE" ]; then
    die 125 "the VM booted but its setup failed: $(cat "$FAIL_FILE") (the command did not run)"
fi
if [ "$qrc" = 124 ] || [ "$qrc" = 137 ]; then
    if [ -e "$READY_FILE" ]; then
        die 124 "TIMEOUT: the command did not finish within ${TIMEOUT}s (QEMU killed); no KTLS_VM_EXIT marker"
    fi
    die 124 "TIMEOUT: the VM did not finish booting within ${TIMEOUT}s (QEMU killed); no KTLS_VM_EXIT marker"
fi
if [ -e "$READY_FILE" ]; then
    die 125 "the VM stopped (QEMU exit status $qrc) before the command reported its exit code (guest crash or panic?)"
fi
die 125 "the VM failed to boot (QEMU exit status $qrc, no KTLS_VM_READY marker after $(elapsed)s)"
