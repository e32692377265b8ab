"""setuptools entry for the compiled parts: the cffi OpenSSL binding and the
request path's C (ktlswsgi/_csrc/).

All metadata lives in pyproject.toml; this file only adds ``cffi_modules``
(``ktlswsgi.tls._openssl``: needs gcc and the OpenSSL 3 headers, e.g. Debian
``libssl-dev``) and ``ext_modules`` (``ktlswsgi._native``, plain C against
the Python headers: it builds the request's Python objects itself, which a
cffi function cannot; with nghttp2's HPACK where libnghttp2-dev is installed).  ``pip install .`` / ``pip install -e .`` compiles both.
"""
import os

from setuptools import Extension, setup

# Our own C is held to these (tests/test_native.py compiles it with -Werror).
NATIVE_SOURCES = ["native.c", "h1parse.c", "environ.c", "framing.c", "respheaders.c",
                  "gate.c", "hpack.c", "h2request.c", "loop.c"]
C_WARNINGS = ["-Wall", "-Wextra", "-Wshadow", "-Wstrict-prototypes", "-Wformat=2"]

# HPACK through nghttp2 (hpack.c) where its headers are (Debian: libnghttp2-dev);
# without them the HTTP/2 driver keeps the hpack package's coder.
NGHTTP2 = os.path.exists("/usr/include/nghttp2/nghttp2.h")

setup(
    cffi_modules=["ktlswsgi/tls/_build.py:ffibuilder"],
    ext_modules=[Extension("ktlswsgi._native",
                           [f"ktlswsgi/_csrc/{name}" for name in NATIVE_SOURCES],
                           include_dirs=["ktlswsgi/_csrc", "ktlswsgi/tls/_csrc"],
                           define_macros=[("KTLSWSGI_NGHTTP2", "1")] if NGHTTP2 else [],
                           libraries=["nghttp2"] if NGHTTP2 else [],
                           extra_compile_args=C_WARNINGS)],
)
