"""A Flask app serving a file with `send_file` (Werkzeug wraps it in wsgi.file_wrapper)."""
from __future__ import annotations

from flask import Flask, request, send_file

app = Flask(__name__)


@app.get("/file")
def file():
    return send_file(request.args["path"], mimetype="application/octet-stream")
