"""An app whose routes hand the server every kind of response head, good and bad.

Used by tests/test_response_headers.py through the CLI.  The request's
`X-Secret` header is the secret the route puts in its headers, so a test can look for it in
every log the server writes.
"""
from __future__ import annotations


def app(environ, start_response):
    path = environ["PATH_INFO"]
    secret = environ.get("HTTP_X_SECRET", "SECRET")
    ok = "200 OK"
    plain = ("Content-Type", "text/plain")
    if path == "/leading-space-cookie":      # what Django's Morsel.output(header="") gives
        start_response(ok, [plain, ("Set-Cookie", f" sessionid={secret}; Path=/"),
                            ("X-Padded", "\t padded \t")])
        return [b"ok"]
    if path == "/crlf-in-cookie":
        start_response(ok, [plain, ("Set-Cookie", f"sessionid={secret}\r\nX-Injected: 1")])
        return [b"never sent"]
    if path == "/nul-in-value":
        start_response(ok, [plain, ("Authorization", f"Bearer {secret}\0")])
        return [b"never sent"]
    if path == "/ctl-in-value":
        start_response(ok, [plain, ("Set-Cookie", f"a={secret}\x01")])
        return [b"never sent"]
    if path == "/bad-name":
        start_response(ok, [plain, ("X Bad:Name", secret)])
        return [b"never sent"]
    if path == "/bytes-value":
        start_response(ok, [plain, ("Set-Cookie", secret.encode())])
        return [b"never sent"]
    if path == "/non-latin1-value":
        start_response(ok, [plain, ("Set-Cookie", secret + "\u20ac")])
        return [b"never sent"]
    if path == "/raise-before-body":
        start_response(ok, [plain, ("Set-Cookie", f"sessionid={secret}")])
        raise RuntimeError("boom before the body")
    if path == "/raise-after-body":
        start_response(ok, [plain, ("Set-Cookie", f"sessionid={secret}"), ("Content-Length", "100")])

        def body():
            yield b"first part"
            raise RuntimeError("boom after the body started")
        return body()
    if path == "/short-body":
        start_response(ok, [plain, ("Set-Cookie", f"sessionid={secret}"), ("Content-Length", "100")])
        return [b"only ten b"]
    if path == "/own-server-and-date":
        start_response(ok, [plain, ("Server", "custom/1.0"),
                            ("Date", "Mon, 01 Jan 2024 00:00:00 GMT")])
        return [b"ok"]
    if path == "/read-body":
        data = environ["wsgi.input"].read()
        start_response(ok, [plain, ("Content-Length", str(len(data)))])
        return [data]
    start_response(ok, [plain])
    return [b"hello"]
