#!/bin/sh
# PID 1 of the ktls-vm guest (busybox sh, from the initramfs that run.sh builds).
#
# Mounts the host's / (9p, read-only) on /newroot, gives it /proc /sys /dev and
# tmpfs scratch space, loads tls + the cipher modules (unless the kernel was
# booted with module_blacklist=tls), then chroots into it and runs /job.sh (the
# per-run script that run.sh appends to the initramfs). It reports the job's
# exit code as "KTLS_VM_EXIT=<rc> <nonce>" on the serial console and powers off.
# Any failure before the job runs is reported as "KTLS_VM_FAIL=<reason> <nonce>".

/bin/busybox mkdir -p /bin /proc /sys /dev /newroot
/bin/busybox --install -s /bin
export PATH=/bin
mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev 2>/dev/null
exec </dev/console >/dev/console 2>&1

NONCE=$(cat /job/nonce 2>/dev/null)

# Wait until everything written to the (serial) console has left the guest:
# busybox stty applies its settings with tcsetattr(TCSADRAIN).
drain() { stty onlcr 2>/dev/null; }

fail() {
    drain
    echo "KTLS_VM_FAIL=$* $NONCE"
    drain
    poweroff -f
    sleep 5
    echo o > /proc/sysrq-trigger
}

# The kernel calls this for request_module() (crypto templates, tcp-ulp-tls...).
# It runs in the initramfs root (not the chroot), where the modules are.
echo /bin/modprobe > /proc/sys/kernel/modprobe

# Module lists, written by run.sh: BOOT_MODULES TLS_MODULES CIPHER_MODULES
. /etc/ktls-vm.conf || fail "no-/etc/ktls-vm.conf"

for m in $BOOT_MODULES; do
    modprobe "$m" || fail "modprobe-$m"
done

# 9p over virtio: read-only, loose caching (the host tree is read-only to us
# and a run is short; this makes Python's many stat()s cheap under TCG).
P9_OPTS=$(cat /job/9p_opts 2>/dev/null)
mount -t 9p -o "trans=virtio,version=9p2000.L,ro,${P9_OPTS:-msize=512000,cache=loose}" host /newroot \
    || fail "mount-9p-host-root"
[ -x /newroot/bin/sh ] || fail "host-root-has-no-/bin/sh"

R=/newroot
mount -t proc proc $R/proc || fail "mount-proc"
mount -t sysfs sysfs $R/sys || fail "mount-sys"
mount -t devtmpfs devtmpfs $R/dev || fail "mount-dev"
mkdir -p $R/dev/pts $R/dev/shm
mount -t devpts -o gid=5,mode=620,ptmxmode=666 devpts $R/dev/pts
mount -t tmpfs -o mode=1777 tmpfs $R/dev/shm
# Keep the host's /tmp reachable (read-only) before hiding it under a tmpfs.
mkdir -p /hosttmp
mount -o bind $R/tmp /hosttmp || fail "bind-host-tmp"
mount -t tmpfs -o mode=1777 tmpfs $R/tmp || fail "mount-tmp"
for d in /run /var/tmp; do
    [ -d $R$d ] && mount -t tmpfs -o mode=1777 tmpfs $R$d
done
mkdir -p $R/run/ktls-vm/host-tmp
mount -o bind /hosttmp $R/run/ktls-vm/host-tmp
# A working directory under the host's /tmp (a CI checkout, say) stays
# visible at its own path, read-only, on top of the guest's tmpfs.
JOB_CWD=$(cat /job/cwd 2>/dev/null)
case "$JOB_CWD" in
    /tmp/?*)
        top=${JOB_CWD#/tmp/}; top=${top%%/*}
        if [ -d "/hosttmp/$top" ]; then
            mkdir -p "$R/tmp/$top"
            mount -o bind "/hosttmp/$top" "$R/tmp/$top" || fail "bind-/tmp/$top"
        fi ;;
esac

ip link set lo up || fail "loopback-up"
hostname ktls-vm

KTLS_MODE=loaded
for w in $(cat /proc/cmdline); do
    case "$w" in
        module_blacklist=*)
            case ",${w#module_blacklist=}," in *,tls,*) KTLS_MODE=blacklisted ;; esac ;;
    esac
done
if [ "$KTLS_MODE" = loaded ]; then
    for m in $TLS_MODULES; do
        modprobe "$m" || fail "modprobe-$m"
    done
fi
# The ciphers kTLS needs besides tls.ko: without them setsockopt(TLS_TX) fails
# and OpenSSL silently stays in userspace.
for m in $CIPHER_MODULES; do
    modprobe "$m" || fail "modprobe-$m"
done

cp /job/job.sh $R/tmp/.ktls-vm-job.sh || fail "copy-job"
echo "KTLS_VM_READY mode=$KTLS_MODE $NONCE"
KTLS_VM_MODE=$KTLS_MODE chroot $R /bin/sh /tmp/.ktls-vm-job.sh </dev/null
rc=$?
drain
echo "KTLS_VM_EXIT=$rc $NONCE"
drain
poweroff -f
sleep 5
echo o > /proc/sysrq-trigger
