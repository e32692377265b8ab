"""Smoke test of the ktls-vm test bed: does kTLS engage in the guest?

Run it in the VM (from the checkout's root):

    deploy/ktls-vm/run.sh -- python3 deploy/ktls-vm/smoke.py
    deploy/ktls-vm/run.sh --blacklist-tls -- python3 deploy/ktls-vm/smoke.py

It opens a loopback TLS connection with Python's ssl module, the server's
context carrying SSL_OP_ENABLE_KTLS (bit 3; Python 3.11 has no constant but
passes raw option bits to OpenSSL), and shows the kernel's view:
/proc/net/tls_stat counter deltas and getsockopt(SOL_TLS, TLS_TX/TLS_RX) with a
4-byte buffer (struct tls_crypto_info: version and cipher type, no key).

Expectation comes from KTLSWSGI_VM_TLS (set by run.sh: "loaded" or
"blacklisted") or --expect. Exit status 0 when the kernel behaved as expected:
  loaded:      TLS 1.2 AES-128-GCM, AES-256-GCM, CHACHA20-POLY1305 engage TX+RX;
               TLS 1.3 engages TX (RX too is accepted: newer OpenSSL).
  blacklisted: tls.ko is not loaded and cannot be loaded; TLS still works in
               userspace and tls_stat does not exist.
Standard library only; needs the openssl command for a throwaway certificate.
"""

import argparse
import errno
import hashlib
import os
import socket
import ssl
import struct
import subprocess
import sys
import tempfile
import threading

SOL_TLS = 282
TLS_TX = 1
TLS_RX = 2
TCP_ULP = 31
SSL_OP_ENABLE_KTLS = 1 << 3  # OpenSSL 3.0; ssl.OP_ENABLE_KTLS from Python 3.12

TLS_VERSIONS = {0x0303: "TLS1.2", 0x0304: "TLS1.3"}
TLS_CIPHERS = {51: "AES_GCM_128", 52: "AES_GCM_256", 53: "AES_CCM_128",
               54: "CHACHA20_POLY1305", 55: "SM4_GCM", 56: "SM4_CCM"}
TLS_STAT = "/proc/net/tls_stat"

# (label, TLS version, OpenSSL 1.2 cipher name or None for 1.3 defaults,
#  expected TX, expected RX (None: either is fine))
CASES = [
    ("TLS1.2 AES128-GCM", ssl.TLSVersion.TLSv1_2, "ECDHE-ECDSA-AES128-GCM-SHA256", True, True),
    ("TLS1.2 AES256-GCM", ssl.TLSVersion.TLSv1_2, "ECDHE-ECDSA-AES256-GCM-SHA384", True, True),
    ("TLS1.2 CHACHA20", ssl.TLSVersion.TLSv1_2, "ECDHE-ECDSA-CHACHA20-POLY1305", True, True),
    ("TLS1.3 default", ssl.TLSVersion.TLSv1_3, None, True, None),
]


def tls_stat():
    try:
        with open(TLS_STAT) as f:
            return {k: int(v) for k, v in (line.split() for line in f if line.strip())}
    except FileNotFoundError:
        return None


def tls_module_loaded():
    try:
        with open("/proc/modules") as f:
            return any(line.split()[0] == "tls" for line in f)
    except FileNotFoundError:  # a kernel without module support
        return False


def crypto_info(sock, direction):
    """The kernel's (version, cipher) for TLS_TX/TLS_RX, or the errno name."""
    try:
        raw = sock.getsockopt(SOL_TLS, direction, 4)
    except OSError as e:
        return errno.errorcode.get(e.errno, str(e.errno))
    version, cipher = struct.unpack("=HH", raw)
    return "%s/%s" % (TLS_VERSIONS.get(version, hex(version)), TLS_CIPHERS.get(cipher, cipher))


def ulp(sock):
    try:
        return sock.getsockopt(socket.IPPROTO_TCP, TCP_ULP, 16).rstrip(b"\0").decode() or "-"
    except OSError as e:
        return errno.errorcode.get(e.errno, str(e.errno))


def make_cert(tmp):
    cert, key = os.path.join(tmp, "cert.pem"), os.path.join(tmp, "key.pem")
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1",
         "-nodes", "-keyout", key, "-out", cert, "-subj", "/CN=localhost", "-days", "1"],
        check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    return cert, key


def one_connection(cert, key, version, cipher, ktls=True):
    """Handshake + 64 KiB each way over loopback; returns what the server saw."""
    sctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    sctx.load_cert_chain(cert, key)
    sctx.minimum_version = sctx.maximum_version = version
    if cipher:
        sctx.set_ciphers(cipher)
    if ktls:
        sctx.options |= SSL_OP_ENABLE_KTLS
    cctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    cctx.check_hostname = False
    cctx.verify_mode = ssl.CERT_NONE
    cctx.minimum_version = cctx.maximum_version = version
    if cipher:
        cctx.set_ciphers(cipher)

    up = os.urandom(65536)
    down = os.urandom(65536)
    result = {}
    lsock = socket.create_server(("127.0.0.1", 0))
    port = lsock.getsockname()[1]

    def serve():
        try:
            conn, _ = lsock.accept()
            with sctx.wrap_socket(conn, server_side=True) as s:
                result["tx"] = crypto_info(s, TLS_TX)
                result["rx"] = crypto_info(s, TLS_RX)
                result["ulp"] = ulp(s)
                result["negotiated"] = "%s %s" % (s.version(), s.cipher()[0])
                got = b""
                while len(got) < len(up):
                    chunk = s.recv(65536)
                    if not chunk:
                        break
                    got += chunk
                result["up_ok"] = got == up
                s.sendall(down)
                try:
                    s.recv(1)  # wait for the client's close
                except (ssl.SSLError, OSError):
                    pass
        except Exception as e:  # reported by the main thread
            result["error"] = repr(e)

    t = threading.Thread(target=serve)
    t.start()
    with socket.create_connection(("127.0.0.1", port)) as raw:
        with cctx.wrap_socket(raw, server_hostname="localhost") as c:
            c.sendall(up)
            got = b""
            while len(got) < len(down):
                chunk = c.recv(65536)
                if not chunk:
                    break
                got += chunk
            result["down_ok"] = hashlib.sha256(got).digest() == hashlib.sha256(down).digest()
    t.join(30)
    lsock.close()
    return result


def ulp_probe():
    """Can a root process attach the tls ULP (which autoloads tls.ko)?"""
    lsock = socket.create_server(("127.0.0.1", 0))
    a = socket.create_connection(lsock.getsockname())
    b, _ = lsock.accept()
    try:
        a.setsockopt(socket.IPPROTO_TCP, TCP_ULP, b"tls")
        return "ok"
    except OSError as e:
        return "%s (%s)" % (errno.errorcode.get(e.errno, e.errno), e.strerror)
    finally:
        for s in (a, b, lsock):
            s.close()


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--expect", choices=["loaded", "blacklisted"],
                    default=os.environ.get("KTLSWSGI_VM_TLS") or "loaded")
    args = ap.parse_args()

    print("kernel %s; %s; Python %s" % (os.uname().release, ssl.OPENSSL_VERSION, sys.version.split()[0]))
    with open("/proc/sys/net/ipv4/tcp_available_ulp") as f:
        print("tcp_available_ulp: %s" % (f.read().strip() or "-"))
    print("tls module loaded: %s" % tls_module_loaded())
    problems = []

    with tempfile.TemporaryDirectory() as tmp:
        cert, key = make_cert(tmp)
        if args.expect == "blacklisted":
            print("expecting: tls blacklisted (module_blacklist=tls)")
            probe = ulp_probe()
            print("setsockopt(TCP_ULP, 'tls') on a connected socket: %s" % probe)
            if probe == "ok":
                problems.append("the tls ULP attached although tls is blacklisted")
            if tls_stat() is not None:
                problems.append("%s exists although tls is blacklisted" % TLS_STAT)
            else:
                print("%s: absent" % TLS_STAT)
            r = one_connection(cert, key, ssl.TLSVersion.TLSv1_2, CASES[0][2])
            print("TLS1.2 AES128-GCM with SSL_OP_ENABLE_KTLS: %s; kernel TX=%s RX=%s ULP=%s; data %s"
                  % (r.get("negotiated"), r.get("tx"), r.get("rx"), r.get("ulp"),
                     "intact" if r.get("up_ok") and r.get("down_ok") else "CORRUPT"))
            if r.get("error") or not (r.get("up_ok") and r.get("down_ok")):
                problems.append("userspace TLS failed: %s" % r)
            if tls_module_loaded():
                problems.append("tls.ko got loaded")
        else:
            print("expecting: kTLS available")
            if tls_stat() is None:
                problems.append("%s missing: tls.ko not loaded" % TLS_STAT)
            for label, version, cipher, want_tx, want_rx in CASES:
                before = tls_stat() or {}
                r = one_connection(cert, key, version, cipher)
                after = tls_stat() or {}
                delta = {k: after[k] - before.get(k, 0) for k in after if after[k] != before.get(k, 0)}
                tx = delta.get("TlsTxSw", 0) + delta.get("TlsTxDevice", 0)
                rx = delta.get("TlsRxSw", 0) + delta.get("TlsRxDevice", 0)
                intact = r.get("up_ok") and r.get("down_ok")
                print("%-18s %-32s TX=%-3s RX=%-3s kernel TX=%s RX=%s ULP=%s data=%s tls_stat delta: %s"
                      % (label, r.get("negotiated"), "on" if tx else "off", "on" if rx else "off",
                         r.get("tx"), r.get("rx"), r.get("ulp"),
                         "intact" if intact else "CORRUPT",
                         " ".join("%s%+d" % kv for kv in sorted(delta.items())) or "none"))
                if r.get("error"):
                    problems.append("%s: %s" % (label, r["error"]))
                if not intact:
                    problems.append("%s: data corrupted" % label)
                if bool(tx) != want_tx:
                    problems.append("%s: TX %s, expected %s" % (label, bool(tx), want_tx))
                if want_rx is not None and bool(rx) != want_rx:
                    problems.append("%s: RX %s, expected %s" % (label, bool(rx), want_rx))
            stat = tls_stat()
            if stat:
                print("%s now: %s" % (TLS_STAT, " ".join("%s=%d" % kv for kv in stat.items())))

    if problems:
        for p in problems:
            print("SMOKE FAIL: %s" % p)
        return 1
    print("SMOKE OK (%s)" % args.expect)
    return 0


if __name__ == "__main__":
    sys.exit(main())
