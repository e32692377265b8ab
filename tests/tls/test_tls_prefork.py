"""A ServerContext made once before fork: session tickets issued by one
worker process are accepted by another (the ticket keys live in the
SSL_CTX and are inherited), and a context made separately does not accept
them (so the test can tell)."""
import os
import socket
import ssl

import pytest

from ktlswsgi.tls.context import ServerContext
from ktlswsgi.tls.transports import SocketTransport

from _tlskit import Deadline, client_context, drive, send_all, shutdown_all, wait_for


def _serve_one_in_child(context, listener):
    """Fork; the child accepts one connection, says "x", closes; exits with
    2 + session_reused (0/1), or 1 on error."""
    pid = os.fork()
    if pid:
        return pid
    code = 1
    try:
        deadline = Deadline(10)
        wait_for(listener.fileno(), "want_read", deadline)
        sock, _ = listener.accept()
        t = SocketTransport(context, sock)
        drive(t, t.handshake, deadline)
        reused = t.info()["session_reused"]
        send_all(t, b"x", deadline)
        shutdown_all(t, deadline)
        t.close()
        code = 2 + int(reused)
    except BaseException:
        code = 1
    finally:
        os._exit(code)


def _child_result(pid):
    _, status = os.waitpid(pid, 0)
    return os.waitstatus_to_exitcode(status)


def _connect(address, ctx, session=None):
    raw = socket.create_connection(address, timeout=10)
    c = ctx.wrap_socket(raw, server_hostname="localhost", session=session)
    data = c.recv(10)   # TLS 1.3 tickets arrive after the handshake
    assert data == b"x"
    sess, reused = c.session, c.session_reused
    c.close()
    return sess, reused


@pytest.mark.parametrize("version", [ssl.TLSVersion.TLSv1_2, ssl.TLSVersion.TLSv1_3],
                         ids=["tls12", "tls13"])
@pytest.mark.parametrize("shared", [True, False], ids=["one-context-before-fork",
                                                       "separate-contexts"])
def test_session_tickets_shared_across_forked_workers(certs, version, shared):
    first_ctx = ServerContext(certs.cert, certs.key)
    second_ctx = first_ctx if shared else ServerContext(certs.cert, certs.key)
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(4)
    client = client_context(minimum=version, maximum=version)
    try:
        pid = _serve_one_in_child(first_ctx, listener)
        session, reused = _connect(listener.getsockname(), client)
        assert _child_result(pid) == 2 and not reused
        assert session is not None and session.has_ticket

        pid = _serve_one_in_child(second_ctx, listener)
        _, reused = _connect(listener.getsockname(), client, session=session)
        assert _child_result(pid) == 2 + int(shared)
        assert reused is shared
    finally:
        listener.close()
