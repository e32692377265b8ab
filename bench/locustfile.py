"""A realistic mixed workload for the Flask app (bench.apps:flask_app).

Most visits are pages and small API calls; some download a file (16 KiB,
64 KiB, 1 MiB), as a shop or docs site sees. Run through `python -m bench`
(headless, bounded time), or by hand:

    locust -f bench/locustfile.py --headless -u 32 -r 16 -t 30s \
        --host https://127.0.0.1:8443
"""
from locust import FastHttpUser, between, task


class Visitor(FastHttpUser):
    # Think time between a visitor's clicks (bounded, so a few users make load).
    wait_time = between(0.005, 0.05)
    insecure = True           # the bench's self-signed certificate
    network_timeout = 30.0
    connection_timeout = 10.0

    @task(10)
    def page(self):
        self.client.get("/page")

    @task(6)
    def api(self):
        self.client.get("/api/items")

    @task(4)
    def tiny(self):
        self.client.get("/tiny")

    @task(3)
    def download_16k(self):
        self.client.get("/file/16k", name="/file/16k")

    @task(2)
    def download_64k(self):
        self.client.get("/file/64k", name="/file/64k")

    @task(1)
    def download_1m(self):
        self.client.get("/file/1m", name="/file/1m")
