"""cdef sources for the OpenSSL binding, one topic per module.

Each topic module holds four strings, as in pyca/cryptography's _cffi_src:
INCLUDES (C headers), TYPES (cdef of types and constants), FUNCTIONS (cdef of
functions) and CUSTOMIZATIONS (C code compiled into the extension: feature
constants decided with #ifdef, stand-ins for what the library lacks, and the
few C callbacks that must not call back into Python).  Only ``_build.py``
reads these; nothing imports them at run time.
"""
