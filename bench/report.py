"""Results -> <tag>.json, <tag>.md (tables with ratios to ktlswsgi), <tag>.png (bars)."""
from __future__ import annotations

import json
import os

SCHEME_TITLE = {"http": "Plain HTTP", "https": "TLS (HTTPS)"}
CASE_TITLE = {"tiny": "tiny dynamic", "16k_dynamic": "16 KiB dynamic", "file_1b": "1 B file",
              "file_16k": "16 KiB file", "file_64k": "64 KiB file", "file_1m": "1 MiB file"}


NOISY_CORES = 0.3   # other work on the host during a run, in cores: flag it


def reference_label(scheme: str) -> str:
    return "ktlswsgi/socket" if scheme == "https" else "ktlswsgi"


def _ref_app(app: str) -> str:
    return "raw" if app == "static" else app


def _w(r: dict) -> int:
    """A row's worker-process count (results from before --workers: 1)."""
    return r.get("workers") or 1


def _p(r: dict) -> str:
    """A row's protocol: "h1" (h2load --h1; results from before --protocols) or "h2"."""
    return r.get("protocol") or "h1"


def worker_counts(results: dict) -> list[int]:
    seen = set()
    for sect in ("runs", "idle", "locust", "spread"):
        seen.update(_w(r) for r in results.get(sect, []))
    return sorted(seen) or [1]


def multi_workers(results: dict) -> bool:
    """True when the run has a worker count other than 1: names then carry ` wN`."""
    return worker_counts(results) != [1]


def name(r: dict, multi: bool) -> str:
    """The server's display name: `ktlswsgi/socket w2` when worker counts vary."""
    return "%s w%d" % (r["server"], _w(r)) if multi else r["server"]


def _shares_core(meta: dict, workers: int) -> bool:
    """Whether the client's core is one of the server's with this worker count."""
    pin = ((meta.get("pinning") or {}).get("by_workers") or {}).get(str(workers))
    if not pin:
        return False
    cpus, core = pin["server_cpus"], int(pin["client_core"])
    lo, _, hi = cpus.partition("-")
    return int(lo) <= core <= int(hi or lo)


def fmt(x, digits=3) -> str:
    if x is None:
        return "-"
    if abs(x) >= 10000:
        return "%.1fk" % (x / 1000)
    if abs(x) >= 100:
        return "%.0f" % x
    return ("%%.%dg" % digits) % x


def ratio(a, b):
    if a is None or b in (None, 0):
        return None
    return a / b


def add_ratios(results: dict) -> None:
    """Each ok run gets ratio_req_s / ratio_req_per_cpu_s against ktlswsgi (same protocol,
    scheme, app and worker count; nginx against the raw app): peer ÷ ktlswsgi. HTTP/2
    rows also get the inverse, ktlswsgi ÷ peer (`ktlswsgi_ratio_req_s`,
    `ktlswsgi_ratio_req_per_cpu_s`), which the HTTP/2 tables show."""
    ref = {}
    for r in results["runs"]:
        if r.get("status") == "ok" and r["server"] == reference_label(r["scheme"]):
            ref[(_p(r), r["scheme"], r["app"], r["case"], _w(r))] = r
    for r in results["runs"]:
        b = ref.get((_p(r), r["scheme"], _ref_app(r["app"]), r["case"], _w(r)))
        if r.get("status") == "ok" and b:
            r["ratio_req_s"] = ratio(r.get("req_s"), b.get("req_s"))
            r["ratio_req_per_cpu_s"] = ratio(r.get("req_per_cpu_s"), b.get("req_per_cpu_s"))
            if _p(r) == "h2":
                r["ktlswsgi_ratio_req_s"] = ratio(b.get("req_s"), r.get("req_s"))
                r["ktlswsgi_ratio_req_per_cpu_s"] = ratio(b.get("req_per_cpu_s"),
                                                          r.get("req_per_cpu_s"))


def _groups(results, protocol="h1"):
    """[((scheme, workers), [(server, app)])] of one protocol's runs: schemes in run order,
    then worker counts ascending; servers in run order."""
    out = {}
    for r in results["runs"]:
        if _p(r) != protocol:
            continue
        key = (r["server"], r["app"])
        lst = out.setdefault((r["scheme"], _w(r)), [])
        if key not in lst:
            lst.append(key)
    schemes = list(dict.fromkeys(s for s, _ in out))
    return sorted(out.items(), key=lambda kv: (schemes.index(kv[0][0]), kv[0][1]))


def _cases(results, protocol=None):
    seen = []
    for r in results["runs"]:
        if protocol is not None and _p(r) != protocol:
            continue
        if r["case"] not in seen:
            seen.append(r["case"])
    order = [c[0] for c in results.get("cases", [])]
    return sorted(seen, key=lambda c: order.index(c) if c in order else 99)


def _find(results, scheme, server, app, case, workers=1, protocol="h1"):
    for r in results["runs"]:
        if ((r["scheme"], r["server"], r["app"], r["case"], _w(r), _p(r))
                == (scheme, server, app, case, workers, protocol)):
            return r
    return None


def _cell(r, key, rkey, failures: bool = False):
    """The value and (×ratio); with `failures`, failed or non-2xx requests and a
    restart note (‡) in the cell too (the HTTP/2 tables)."""
    if r is None:
        return ""
    if r.get("status") != "ok":
        return "*%s*" % r.get("status")
    v = fmt(r.get(key))
    rv = r.get(rkey)
    if rv is not None and r["server"] != reference_label(r["scheme"]):
        v += " (×%.2f)" % rv
    if failures:
        bad = []
        if r.get("failures"):
            bad.append("%d fail" % r["failures"])
        if r.get("non2xx"):
            bad.append("%d non-2xx" % r["non2xx"])
        if bad:
            v += " **%s**" % ", ".join(bad)
        if r.get("note"):
            v += " ‡"
    if (r.get("other_cpu_cores") or 0) > NOISY_CORES:
        v += " †"
    return v


def _la(v):
    return "/".join("%.2f" % x for x in v) if v else "?"


def _pinning_text(m: dict, counts: list[int]) -> str:
    pin = m["pinning"]
    by = pin.get("by_workers") or {}
    if counts == [1] or not by:
        return ("Server pinned to core %s, client (h2load, locust, idle client) to core %s."
                % (pin["server_core"], pin["client_core"]))
    return ("Server trees pinned with `taskset`, client (h2load, locust, idle client) "
            "to one core: %s." % "; ".join(
                "%d worker%s: server cores %s, client core %s" % (
                    n, "s" if n > 1 else "", by[str(n)]["server_cpus"],
                    by[str(n)]["client_core"])
                for n in counts if str(n) in by))


def markdown(results: dict) -> str:
    m = results["meta"]
    counts = worker_counts(results)
    multi = counts != [1]
    L = []
    L.append("# ktlswsgi benchmark — %s" % m.get("date", "?"))
    L.append("")
    L.append("Host: kernel %s, %s × %s, `tcp_available_ulp` = `%s`, %s, Python %s. "
             "%s "
             "h2load `-c %s -D %ss` after %ss warm-up; %s worker threads per server%s. "
             "Harness time %.0f s." % (
                 m.get("kernel"), m.get("cpus"), m.get("cpu"), m.get("tcp_available_ulp"),
                 m.get("openssl"), m.get("python"), _pinning_text(m, counts),
                 m["settings"].get("connections"),
                 m["settings"].get("duration"), m["settings"].get("warmup"),
                 m.get("threads"), " process" if multi else "",
                 m.get("harness_seconds", 0)))
    shared = [n for n in counts if _shares_core(m, n)]
    if shared:
        L.append("")
        L.append("**With %s worker processes the server takes every core, so the client "
                 "shares one with it: wall req/s there is client-limited (and the client's "
                 "CPU is taken from the server's), and req/CPU-s — requests per second of "
                 "the whole server process tree's CPU — is the comparable column.** "
                 "Ratios (×) compare peers at the same worker count."
                 % " and ".join(str(n) for n in shared))
    L.append("")
    L.append("Versions: " + ", ".join("%s `%s`" % kv for kv in m.get("versions", {}).items()))
    g = m.get("git") or {}
    if g:
        L.append("")
        L.append("ktlswsgi measured at commit `%s` (%s)%s." % (
            g.get("commit"), g.get("subject"),
            "; uncommitted edits in: " + ", ".join(g["ktlswsgi_dirty_files"])
            if g.get("ktlswsgi_dirty_files") else ", clean tree"))
    probes = {s.get("telemetry", {}).get("ktls_probe") for s in results["servers"]} - {None}
    if probes:
        L.append("")
        L.append("ktlswsgi kTLS probe: `%s`" % "; ".join(sorted(probes)))
    if m.get("interrupted"):
        L.append("")
        L.append("**Interrupted: partial results.**")
    L.append("")
    L.append("Columns: **req/s** = 2xx responses per wall second; **MB/s** = response body "
             "bytes per wall second; **srv CPU** = utime+stime of the server's whole process "
             "tree over the run ÷ wall time (100%% = one core; a server with N worker "
             "processes is pinned to N cores); **req/CPU-s** = 2xx "
             "responses per second of server CPU — on big files the client core saturates "
             "first, so this is the column that compares servers; **(×r)** = ratio to "
             "ktlswsgi in the same scheme, app and worker count (`ktlswsgi/socket` for TLS; "
             "nginx against the raw app): above 1 the peer is faster / cheaper; "
             "**fail** = h2load failed + "
             "errored + timeout; **non-2xx** = 3xx+4xx+5xx; **cli CPU** = h2load's CPU ÷ wall; "
             "**other CPU** = CPU used on the host by neither server nor client during the "
             "run, in cores (other jobs on a shared machine; cells marked † had more than "
             "%.1f). Load average at start %s, at end %s." % (
                 NOISY_CORES, _la(m.get("loadavg_start")), _la(m.get("loadavg_end"))))
    add_ratios(results)
    h1_cases = _cases(results, "h1")
    for (scheme, workers), servers in _groups(results, "h1"):
        cases = h1_cases
        wtitle = (", %d worker process%s" % (workers, "es" if workers > 1 else "")
                  if multi else "")
        for key, rkey, title in (("req_per_cpu_s", "ratio_req_per_cpu_s",
                                  "requests per server-CPU-second"),
                                 ("req_s", "ratio_req_s", "wall requests per second")):
            L.append("")
            L.append("## %s%s — %s (ratio to ktlswsgi)" % (SCHEME_TITLE.get(scheme, scheme),
                                                          wtitle, title))
            L.append("")
            L.append("| server | app | " + " | ".join(CASE_TITLE.get(c, c) for c in cases) + " |")
            L.append("| --- | --- | " + " | ".join("---:" for _ in cases) + " |")
            for server, app in servers:
                cells = [_cell(_find(results, scheme, server, app, c, workers), key, rkey)
                         for c in cases]
                shown = name({"server": server, "workers": workers}, multi)
                L.append("| %s | %s | %s |" % (shown, app, " | ".join(cells)))
    if any(_p(r) == "h2" for r in results["runs"]):
        L.extend(h2_markdown(results, multi))
    cases = _cases(results)
    L.append("")
    L.append("## All runs")
    L.append("")
    L.append("(×req/s and ×req/CPU-s here are always peer ÷ ktlswsgi, HTTP/2 rows included.)")
    L.append("")
    L.append("| proto | scheme | case | server | workers | app | req/s | MB/s | srv CPU | "
             "req/CPU-s | ×req/s | ×req/CPU-s | ctx/req | fail | non-2xx | cli CPU | other CPU "
             "| TLS |")
    L.append("| --- | --- | --- | --- | ---: | --- | ---: | ---: | ---: | ---: | ---: | ---: "
             "| ---: | ---: | ---: | ---: | ---: | --- |")
    for r in sorted(results["runs"], key=lambda r: (_p(r), r["scheme"], _w(r),
                                                    cases.index(r["case"])
                                                    if r["case"] in cases else 99)):
        if r.get("status") != "ok":
            continue
        L.append("| %s | %s | %s | %s | %d | %s | %s | %s | %.0f%% | %s | %s | %s | %s | %d "
                 "| %d | %.0f%% | %.2f | %s |"
                 % (_p(r) + (" -m%d" % r["h2load_streams"] if _p(r) == "h2"
                             and r.get("h2load_streams") else ""),
                    r["scheme"], r["case"], r["server"], _w(r), r["app"], fmt(r.get("req_s")),
                    fmt(r.get("mb_s")), 100 * (r.get("server_cpu_util") or 0),
                    fmt(r.get("req_per_cpu_s")), fmt(r.get("ratio_req_s")),
                    fmt(r.get("ratio_req_per_cpu_s")), fmt(r.get("ctx_per_req")),
                    r.get("failures", 0),
                    r.get("non2xx", 0), 100 * (r.get("client_cpu_util") or 0),
                    r.get("other_cpu_cores") or 0,
                    " ".join(x for x in (r.get("tls_protocol"), r.get("tls_cipher")) if x)))
    bad = [r for r in results["runs"] if r.get("status") != "ok"]
    if bad:
        L.append("")
        L.append("## Not measured (unsupported, failed, unavailable)")
        L.append("")
        L.append("| proto | scheme | server | app | cases | status | reason |")
        L.append("| --- | --- | --- | --- | --- | --- | --- |")
        merged = {}
        for r in bad:
            k = (_p(r), r["scheme"], name(r, multi), r["app"], r["status"],
                 r.get("reason", ""))
            merged.setdefault(k, []).append(r["case"])
        for (proto, scheme, server, app, status, reason), cs in merged.items():
            reason = " ".join(str(reason).split())[:300].replace("|", "\\|")
            L.append("| %s | %s | %s | %s | %s | %s | %s |" % (
                proto, scheme, server, app, ", ".join(cs), status, reason))
    if results.get("spread"):
        L.extend(spread_markdown(results))
    if results.get("idle"):
        L.append("")
        L.append("## Memory with idle TLS keep-alive connections")
        L.append("")
        L.append("Each connection: TLS handshake, one `GET /tiny`, then idle. RSS/PSS summed "
                 "over the server's process tree, before and 2 s after the last one opened; "
                 "per-connection = (after − before) ÷ connections still alive (alive < opened: "
                 "the server closed some while they sat idle). PSS shares forked pages fairly "
                 "between processes. Srv CPU s to open = the server's CPU for all the "
                 "handshakes and first requests (the client opens 200 at a time).")
        L.append("")
        L.append("| server | wanted | opened | alive | RSS before MiB | RSS after MiB | "
                 "KiB/conn (RSS) | PSS after MiB | open time s | srv CPU s to open | launch "
                 "| cap / errors |")
        L.append("| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | --- "
                 "| --- |")
        for e in results["idle"]:
            if e.get("status") != "ok":
                L.append("| %s | %s | | | | | | | | | %s | %s: %s |" % (
                    name(e, multi), e.get("n"), e.get("launch", ""), e.get("status"),
                    str(e.get("reason", ""))[:200].replace("|", "\\|")))
                continue
            L.append("| %s | %d | %s | %s | %.1f | %.1f | %s | %.1f | %s | %s | %s | %s |" % (
                name(e, multi), e["n"], e.get("opened"), e.get("alive"),
                e["rss_before_kib"] / 1024, e["rss_after_kib"] / 1024,
                fmt(e.get("rss_per_conn_kib")), e["pss_after_kib"] / 1024,
                e.get("open_seconds"), fmt(e.get("server_cpu_seconds")), e.get("launch", ""),
                str(e.get("cap", "")).replace("|", "\\|")))
    if results.get("locust"):
        L.append("")
        L.append("## Locust: mixed Flask workload (bench/locustfile.py)")
        L.append("")
        L.append("Pages, JSON API, tiny responses and 16 KiB / 64 KiB / 1 MiB downloads "
                 "(weights 10:6:4:3:2:1), FastHttpUser, headless, client on core 1. "
                 "Locust itself (one Python core) is usually the limit on wall req/s; "
                 "req/CPU-s compares the servers.")
        L.append("")
        L.append("| server | users | seconds | requests | failures | req/s | median ms | p95 ms | "
                 "p99 ms | srv CPU | req/CPU-s |")
        L.append("| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |")
        for e in results["locust"]:
            if e.get("status") != "ok":
                L.append("| %s | %s | %s | | | | | | | | %s: %s |" % (
                    name(e, multi), e.get("users"), e.get("seconds"), e.get("status"),
                    str(e.get("reason", ""))[:200].replace("|", "\\|")))
                continue
            L.append("| %s (%s) | %d | %d | %d | %d | %s | %s | %s | %s | %.0f%% | %s |" % (
                name(e, multi), e["scheme"], e["users"], e["seconds"], e["requests"],
                e["failures"], fmt(e["req_s"]), fmt(e["median_ms"]), fmt(e["p95_ms"]),
                fmt(e["p99_ms"]), 100 * e["server_cpu_util"], fmt(e.get("req_per_cpu_s"))))
    tel = [s for s in results["servers"] if s.get("telemetry", {}).get("counters")]
    if tel:
        L.append("")
        L.append("## ktlswsgi counters at shutdown (which data path carried the bytes)")
        L.append("")
        L.append("Summed over the `counters:` lines of one server run (one line per worker "
                 "process that exited; \"lines\" = how many).")
        L.append("")
        keys = ["connections", "requests", "ktls_tx_connections", "ktls_rx_connections",
                "bytes_sendfile", "bytes_ssl_sendfile", "bytes_pread_ssl_write",
                "bytes_ssl_write", "bytes_send", "aborted_connections", "responses_503",
                "tls_mem_sends", "tls_mem_recvs"]
        L.append("(memory transport: **TLS B/send** = plaintext bytes per send syscall, "
                 "(bytes_ssl_write + bytes_pread_ssl_write) ÷ tls_mem_sends; one TLS record "
                 "carries at most 16384.)")
        L.append("")
        L.append("| server | scheme | app | lines | " + " | ".join(keys) + " | TLS B/send |")
        L.append("| --- | --- | --- | ---: | " + " | ".join("---:" for _ in keys) + " | ---: |")
        for s in tel:
            c = s["telemetry"]["counters"]
            sends = c.get("tls_mem_sends") or 0
            per_send = ("%.0f" % ((c.get("bytes_ssl_write", 0) + c.get("bytes_pread_ssl_write", 0))
                                  / sends)) if sends else "-"
            L.append("| %s | %s | %s | %s | %s | %s |" % (
                name(s, multi), s["scheme"] + (" h2" if _p(s) == "h2" else ""), s["app"],
                s["telemetry"].get("counter_lines", 1),
                " | ".join(str(c.get(k, "")) for k in keys), per_send))
    L.append("")
    return "\n".join(L)


H2_APP_TITLE = {"flask": "Flask send_file"}


def _h2_columns(results) -> list[tuple[str, str]]:
    """The HTTP/2 table's columns: (app, case), the raw app's (and nginx's) cases first,
    then the Flask app's; cases in the harness's order."""
    order = [c[0] for c in results.get("cases", [])]
    cols = []
    for r in results["runs"]:
        if _p(r) == "h2":
            col = (_ref_app(r["app"]), r["case"])
            if col not in cols:
                cols.append(col)
    return sorted(cols, key=lambda ac: (ac[0] != "raw", ac[0],
                                        order.index(ac[1]) if ac[1] in order else 99))


def _h2_col_title(app: str, case: str) -> str:
    t = CASE_TITLE.get(case, case)
    if app == "raw":
        return t
    prefix = H2_APP_TITLE.get(app, app)
    return "%s %s" % (prefix, t.replace(" file", "")) if case.startswith("file_") else \
        "%s %s" % (app, t)


def h2_markdown(results: dict, multi: bool) -> list[str]:
    """The HTTP/2 tables: one row per server (raw app and nginx's static files in the
    file columns, the Flask app in the send_file column), ratio = server ÷ ktlswsgi."""
    L = []
    cols = _h2_columns(results)
    streams = sorted({r.get("h2load_streams") for r in results["runs"]
                      if _p(r) == "h2" and r.get("h2load_streams")})
    no_h2 = results.get("h2_not_offered") or []
    counts = sorted({_w(r) for r in results["runs"] if _p(r) == "h2"})
    for workers in counts:
        servers = []
        for r in results["runs"]:
            if _p(r) == "h2" and _w(r) == workers and r["server"] not in servers:
                servers.append(r["server"])
        wtitle = (", %d worker process%s" % (workers, "es" if workers > 1 else "")
                  if multi else "")
        for key, rkey, title in (("req_per_cpu_s", "ratio_req_per_cpu_s",
                                  "requests per server-CPU-second"),
                                 ("req_s", "ratio_req_s", "wall requests per second")):
            L.append("")
            L.append("## HTTP/2 over TLS%s — %s (ratio server ÷ ktlswsgi)" % (wtitle, title))
            L.append("")
            L.append("h2load without `--h1` (ALPN h2), `-m %s` streams per connection, same "
                     "`-c` and duration as above. **(×r) = this server ÷ `%s`**, as in the "
                     "HTTP/1.1 tables: above 1, this server serves more requests per %s "
                     "than ktlswsgi. File columns: the raw app "
                     "(`wsgi.file_wrapper`; nginx serves the same files itself); Flask "
                     "send_file: the Flask app. Failed or non-2xx requests are written in "
                     "the cell. \"-\": the server has no HTTP/2."
                     % ("/".join(str(s) for s in streams) or "?", reference_label("https"),
                        "CPU-second" if key == "req_per_cpu_s" else "wall second"))
            L.append("")
            L.append("| server | " + " | ".join(_h2_col_title(a, c) for a, c in cols) + " |")
            L.append("| --- | " + " | ".join("---:" for _ in cols) + " |")
            for server in servers:
                cells = []
                for app, case in cols:
                    r = (_find(results, "https", server, app, case, workers, "h2")
                         or (_find(results, "https", server, "static", case, workers, "h2")
                             if app == "raw" else None))
                    cells.append(_cell(r, key, rkey, failures=True))
                shown = name({"server": server, "workers": workers}, multi)
                L.append("| %s | %s |" % (shown, " | ".join(cells)))
            for kind in no_h2:
                L.append("| %s (no HTTP/2) | %s |" % (kind, " | ".join("-" for _ in cols)))
    noted = [r for r in results["runs"] if _p(r) == "h2" and r.get("note")]
    if noted:
        L.append("")
        L.append("‡ " + "; ".join("%s %s %s: %s" % (name(r, multi), r["app"], r["case"],
                                                     r["note"]) for r in noted) + ".")
    return L


def spread_markdown(results: dict) -> list[str]:
    """The 'spread across workers' table: ktlswsgi -w N, one h2load run each with the
    shared listening socket and with --reuse-port; each worker's counters."""
    L = ["", "## ktlswsgi: spread across workers (shared socket vs --reuse-port)", "",
         "One h2load run (`GET /tiny`, keep-alive, no warm-up) per row; each worker "
         "process's `requests=` and `connections=` from its own counters line at exit "
         "(busiest first; they include the harness's one readiness request), and its own "
         "CPU seconds over the run. **shared** = every worker accepts on the one listening "
         "socket (the default); **reuse-port** = `--reuse-port`, one SO_REUSEPORT socket "
         "per worker, so the kernel hashes each connection to a worker. A keep-alive "
         "connection stays on the worker that accepted it, so requests follow connections. "
         "**busiest** = the busiest worker's share of the requests (1/N is an even spread).",
         "",
         "| scheme | app | workers | mode | h2load -c | requests per worker | connections per "
         "worker | busiest | CPU s per worker | req/s | srv CPU | req/CPU-s | other CPU |",
         "| --- | --- | ---: | --- | ---: | --- | --- | ---: | --- | ---: | ---: | ---: | ---: |"]
    for e in results["spread"]:
        per = e.get("per_worker") or []
        if e.get("status") != "ok":
            L.append("| %s | %s | %s | %s | %s | | | | | | | | %s: %s |" % (
                e["scheme"], e["app"], e["workers"], e["mode"], e.get("connections"),
                e.get("status"), " ".join(str(e.get("reason", "")).split())[:200]
                .replace("|", "\\|")))
            continue
        L.append("| %s | %s | %d | %s | %s | %s | %s | %s | %s | %s | %.0f%% | %s | %.2f%s |" % (
            e["scheme"], e["app"], e["workers"], e["mode"], e.get("connections"),
            " / ".join(str(w["requests"]) for w in per) or "-",
            " / ".join(str(w["connections"]) for w in per) or "-",
            "%.0f%%" % (100 * e["busiest_share"]) if e.get("busiest_share") is not None else "-",
            " / ".join(fmt(w["cpu_seconds"]) for w in per) or "-",
            fmt(e.get("req_s")), 100 * (e.get("server_cpu_util") or 0),
            fmt(e.get("req_per_cpu_s")), e.get("other_cpu_cores") or 0,
            " †" if (e.get("other_cpu_cores") or 0) > NOISY_CORES else ""))
    return L


COLOURS = {"ktlswsgi": "tab:blue", "ktlswsgi/socket": "tab:blue",
           "ktlswsgi/memory": "tab:cyan", "ktlswsgi/auto": "tab:blue",
           "gunicorn": "tab:orange", "granian": "tab:green", "uwsgi": "tab:red",
           "nginx": "tab:purple", "hypercorn": "tab:brown"}


def plot(results: dict, path: str) -> str | None:
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return None
    add_ratios(results)
    multi = multi_workers(results)
    panels = []
    for proto in ("h1", "h2"):
        cases = _cases(results, proto)
        for (scheme, workers), servers in _groups(results, proto):
            for app in ("raw", "flask"):
                sv = [(s, a) for s, a in servers
                      if a == app or (app == "raw" and a == "static")]
                pc = [c for c in cases
                      if any(_find(results, scheme, s, a, c, workers, proto) and
                             _find(results, scheme, s, a, c, workers, proto).get("status")
                             == "ok" for s, a in sv)]
                if pc:
                    panels.append((proto, scheme, workers, app, sv,
                                   cases if proto == "h1" else pc))
    if not panels:
        return None
    fig, axes = plt.subplots(len(panels), 2, figsize=(16, 3.6 * len(panels)), squeeze=False)
    for row, (proto, scheme, workers, app, sv, cases) in enumerate(panels):
        for col, (key, title) in enumerate((("req_s", "wall req/s"),
                                            ("req_per_cpu_s", "req per server-CPU-second"))):
            ax = axes[row][col]
            width = 0.8 / max(1, len(sv))
            for i, (server, a) in enumerate(sv):
                vals = []
                for c in cases:
                    r = _find(results, scheme, server, a, c, workers, proto)
                    vals.append(r.get(key) or 0 if r and r.get("status") == "ok" else 0)
                xs = [j + i * width - 0.4 + width / 2 for j in range(len(cases))]
                ax.bar(xs, vals, width, color=COLOURS.get(server, "grey"),
                       label=server if a != "static" else "nginx (static)")
                for x, v in zip(xs, vals):
                    if not v:
                        ax.text(x, 0.02, "n/a", rotation=90, fontsize=6, ha="center",
                                va="bottom", transform=ax.get_xaxis_transform())
            ax.set_xticks(range(len(cases)))
            ax.set_xticklabels([CASE_TITLE.get(c, c) for c in cases], fontsize=8)
            ax.set_yscale("log")
            ax.set_title("%s%s, %s app%s — %s (log scale)" % (
                SCHEME_TITLE.get(scheme, scheme), ", HTTP/2" if proto == "h2" else "", app,
                ", %d worker%s" % (workers, "s" if workers > 1 else "") if multi else "",
                title), fontsize=10)
            ax.grid(axis="y", alpha=0.3, which="both")
            if col == 1:
                ax.legend(fontsize=7, loc="upper right")
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)
    return path


def write_all(results: dict, out_dir: str, tag: str) -> list[str]:
    os.makedirs(out_dir, exist_ok=True)
    add_ratios(results)
    paths = []
    jp = os.path.join(out_dir, tag + ".json")
    with open(jp, "w") as f:
        json.dump(results, f, indent=1, sort_keys=False, default=str)
    paths.append(jp)
    mp = os.path.join(out_dir, tag + ".md")
    try:
        text = markdown(results)
    except Exception as e:  # noqa: BLE001 - the JSON is written already
        import traceback
        text = "# report failed\n\n```\n%s\n```\n" % traceback.format_exc()
        print("markdown failed: %s" % e)
    with open(mp, "w") as f:
        f.write(text)
    paths.append(mp)
    try:
        pp = plot(results, os.path.join(out_dir, tag + ".png"))
        if pp:
            paths.append(pp)
    except Exception as e:  # noqa: BLE001 - a broken plot must not lose the results
        print("plot failed: %s" % e)
    return paths


def summary_markdown(results: dict, tag: str) -> str:
    """A short block for bench/README.md: the ratio matrices, idle memory, locust."""
    full = markdown(results)
    keep, on = [], False
    for line in full.splitlines():
        if line.startswith("## "):
            on = ("requests per server-CPU-second" in line or "Memory with idle" in line
                  or "Locust" in line or "spread across workers" in line)
            if on:
                keep.append("#" + line)   # one level down inside the README
            continue
        if on and (line.startswith("|") or not line.strip()):
            keep.append(line)
    m = results["meta"]
    head = ("Run `%s` (%s, %s s per case, harness %.0f s; full tables: "
            "[results/%s.md](results/%s.md), chart: [results/%s.png](results/%s.png)). "
            "Cells: requests per server-CPU-second (×ratio to ktlswsgi; above 1 = the peer "
            "needs less CPU per request%s); † = other jobs used more than %.1f cores during "
            "that run." % (tag, m.get("date"), m["settings"].get("duration"),
                           m.get("harness_seconds", 0), tag, tag, tag, tag,
                           "",
                           NOISY_CORES))
    return head + "\n\n" + "\n".join(keep).strip() + "\n"


def update_readme(results: dict, readme: str, tag: str) -> bool:
    """Replace what follows the <!-- LATEST --> marker in bench/README.md."""
    marker = "<!-- LATEST -->"
    try:
        with open(readme) as f:
            text = f.read()
    except OSError:
        return False
    if marker not in text:
        return False
    text = text.split(marker)[0] + marker + "\n\n" + summary_markdown(results, tag)
    with open(readme, "w") as f:
        f.write(text)
    return True
