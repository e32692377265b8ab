"""Build-time only: assemble the cffi binding ``ktlswsgi.tls._openssl``.

Run by setuptools through ``cffi_modules=["ktlswsgi/tls/_build.py:ffibuilder"]``
(``pip install .`` / ``pip install -e .``).  Needs a C compiler and the
OpenSSL 3 headers (Debian: ``gcc libssl-dev``); links the system libssl and
libcrypto.  The cdefs live in ``_cffi_src/<topic>.py`` (INCLUDES, TYPES,
FUNCTIONS, CUSTOMIZATIONS), in the manner of pyca/cryptography; ktlswsgi's own
C (callbacks, the memory transport's engine, the socket transport's steps) is in ``_csrc/*.c`` with one
header, compiled into the same extension.

Never imported at run time.
"""
import importlib.util
import os

from cffi import FFI

_HERE = os.path.dirname(os.path.abspath(__file__))
CSRC = os.path.join(_HERE, "_csrc")
C_SOURCES = ["callbacks.c", "memtransport.c", "socksteps.c"]
# Our own C is held to these (tests/tls/test_csrc.py compiles it with -Werror).
C_WARNINGS = ["-Wall", "-Wextra", "-Wshadow", "-Wstrict-prototypes", "-Wformat=2"]

# Order matters: a topic may use types declared by an earlier one.
TOPICS = ["crypto", "err", "bio", "evp", "x509", "pem", "ssl"]


def _load_topic(name):
    path = os.path.join(_HERE, "_cffi_src", name + ".py")
    spec = importlib.util.spec_from_file_location("_ktlswsgi_cffi_src_" + name, path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def build_ffi(module_name="ktlswsgi.tls._openssl"):
    topics = [_load_topic(name) for name in TOPICS]
    ffi = FFI()
    ffi.cdef("\n".join(t.TYPES for t in topics))
    ffi.cdef("\n".join(t.FUNCTIONS for t in topics))
    source = "\n".join(
        [t.INCLUDES for t in topics] + [t.CUSTOMIZATIONS for t in topics]
    )
    ffi.set_source(
        module_name,
        source,
        # setuptools wants sources relative to the project root (the build's cwd).
        sources=[os.path.relpath(os.path.join(CSRC, name)) for name in C_SOURCES],
        include_dirs=[CSRC],
        libraries=["ssl", "crypto"],
        extra_compile_args=["-Wno-deprecated-declarations"],
    )
    return ffi


ffibuilder = build_ffi()

if __name__ == "__main__":
    ffibuilder.compile(verbose=True)
