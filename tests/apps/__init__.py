"""Test applications, importable as `apps.<module>` (tests/ is on sys.path).

Files are passed by path in the query string (`?path=...`): these apps serve
only the temporary files the tests make, on loopback.
"""
