"""Helpers shared by scripts/bench and scripts/faults: building, starting and stopping servers,
driving them with wrk and reading its figures."""

import glob
import http.cookiejar
import json
import os
import re
import subprocess
import sys
import time
import urllib.parse
import urllib.request

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
# The peer baselines (Flask, FastAPI, Django recipes, wrk's post.lua) live outside this
# repository, beside it in ../shared/bench; PLINTH_PEER_BENCH points elsewhere.
SHARED = os.path.normpath(
    os.environ.get("PLINTH_PEER_BENCH", os.path.join(ROOT, "..", "shared", "bench"))
)
if not os.path.isdir(SHARED):
    raise SystemExit(
        f"the peer baselines are not at {SHARED}: they live outside the repository "
        "(../shared/bench beside it); set PLINTH_PEER_BENCH to their directory"
    )
PEERS = os.environ.get("PLINTH_PEERS", os.path.join(SHARED, "peers.sh"))
MODEL = os.path.join(ROOT, "models", "iris", "1", "model.onnx")
ADMIN_PASSWORD = "bench-admin-password-9"
ROW = [5.1, 3.5, 1.4, 0.2]
FEATURES = ["sepal_length", "sepal_width", "petal_length", "petal_width"]

ENV = {k: v for k, v in os.environ.items() if k != "RUST_BACKTRACE"}
ENV["PLINTH_LOG"] = "warn"


def sh(*cmd, **kw):
    return subprocess.run(cmd, check=True, env=kw.pop("env", ENV), **kw)


def wait_ready(url, timeout=60):
    deadline = time.time() + timeout
    while time.time() < deadline:
        try:
            with urllib.request.urlopen(url, timeout=1) as r:
                if r.status == 200:
                    return
        except Exception:
            time.sleep(0.2)
    raise SystemExit(f"{url} did not become ready")


class Servers:
    """Everything this run started, stopped at the end whatever happens."""

    def __init__(self):
        self.procs = []
        self.peers = False

    def start(self, name, cmd, env):
        log = open(os.path.join(ROOT, "target", f"bench-{name}.log"), "w")
        p = subprocess.Popen(cmd, env=env, stdout=log, stderr=subprocess.STDOUT, cwd=ROOT)
        self.procs.append(p)
        return p

    def stop(self):
        for p in self.procs:
            p.terminate()
        for p in self.procs:
            try:
                p.wait(10)
            except subprocess.TimeoutExpired:
                p.kill()
        if self.peers:
            subprocess.run([PEERS, "stop"], env=ENV)


def plinth_env(port, db, **extra):
    env = dict(ENV)
    env.update(
        PLINTH_DATABASE_URL=f"postgres://postgres@127.0.0.1:5432/{db}",
        PLINTH_ADDR=f"127.0.0.1:{port}",
        PLINTH_ARTIFACTS=os.path.join(ROOT, "target", f"{db}-artifacts"),
        PLINTH_ADMIN_PASSWORD=ADMIN_PASSWORD,
        PLINTH_INSECURE_COOKIES="1",
    )
    env.update(extra)
    return env


def signed_in(base):
    """A signed-in session's cookie header and the CSRF token its forms carry."""
    jar = http.cookiejar.CookieJar()
    opener = urllib.request.build_opener(urllib.request.HTTPCookieProcessor(jar))
    page = opener.open(f"{base}/accounts/login").read().decode()
    csrf = re.search(r'name="csrf_token" value="([^"]+)"', page).group(1)
    form = urllib.parse.urlencode(
        {"csrf_token": csrf, "username": "admin", "password": ADMIN_PASSWORD, "next": "/"}
    ).encode()
    opener.open(f"{base}/accounts/login", form).read()
    page = opener.open(f"{base}/models/iris").read().decode()
    csrf = re.search(r'name="csrf_token" value="([^"]+)"', page).group(1)
    cookie = "; ".join(f"{c.name}={c.value}" for c in jar)
    return cookie, csrf


def to_ms(text):
    value, unit = re.match(r"([\d.]+)(us|ms|s|m)", text).groups()
    return float(value) * {"us": 0.001, "ms": 1.0, "s": 1000.0, "m": 60000.0}[unit]


def wrk(url, body=None, token=None, script="post", duration=8, connections=32, extra_env=None):
    env = dict(ENV)
    env.pop("TOKEN", None)
    if body is not None:
        env["BODY"] = body
    if token:
        env["TOKEN"] = token
    env.update(extra_env or {})
    lua = os.path.join(SHARED, "post.lua") if script == "post" else os.path.join(ROOT, "benches", script)
    out = subprocess.run(
        ["wrk", "-t1", f"-c{connections}", f"-d{duration}s", "-s", lua, "--latency", url],
        env=env, capture_output=True, text=True, check=True,
    ).stdout
    if "Latency Distribution" not in out:
        raise SystemExit(f"wrk on {url} measured nothing:\n{out}")
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))
    p50 = to_ms(re.search(r"^\s+50%\s+(\S+)", out, re.M).group(1))
    p99 = to_ms(re.search(r"^\s+99%\s+(\S+)", out, re.M).group(1))
    errors = 0
    if m := re.search(r"Non-2xx or 3xx responses: (\d+)", out):
        errors += int(m.group(1))
    if m := re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", out):
        errors += sum(int(g) for g in m.groups())
    return {"rps": rps, "p50": p50, "p99": p99, "errors": errors}


def rss_mb(pid):
    fields = {}
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            k, _, v = line.partition(":")
            fields[k] = v.strip()
    return int(fields["VmRSS"].split()[0]) / 1024, int(fields["VmHWM"].split()[0]) / 1024


def build():
    """Plinth and the floor server, in release."""
    print("building Plinth and the floor server (release) ...", file=sys.stderr)
    sh("cargo", "build", "--release", "--quiet", "--features", "floor", "--bins", cwd=ROOT)
    return os.path.join(ROOT, "target", "release", "plinth"), os.path.join(ROOT, "target", "release", "plinth-floor")


def fresh_database(db):
    sh("psql", "-q", "-h", "127.0.0.1", "-U", "postgres", "-d", "postgres",
       "-c", f"drop database if exists {db} with (force)")


def create_token(plinth, env):
    return subprocess.run(
        [plinth, "createtoken", "--username", "admin", "--name", "bench"],
        env=env, capture_output=True, text=True, check=True,
    ).stdout.strip().split()[-1]


def psql(db, sql):
    return subprocess.run(
        ["psql", "-qAt", "-h", "127.0.0.1", "-U", "postgres", "-d", db, "-c", sql],
        env=ENV, capture_output=True, text=True, check=True,
    ).stdout


def v1_body(rows=1):
    one = dict(zip(FEATURES, ROW))
    return json.dumps({"inputs": one if rows == 1 else [one] * rows})


def load_with_ids(url, token, seconds, ids_file, connections=32, delay_ms=0):
    """wrk in the background (benches/ids.lua), recording every response's status and id in
    `ids_file`.<thread>; read them back with `answered`."""
    for f in glob.glob(ids_file + ".*"):
        os.remove(f)
    env = dict(ENV, BODY=v1_body(), TOKEN=token, IDS_FILE=ids_file, DELAY_MS=str(delay_ms))
    return subprocess.Popen(
        ["wrk", "-t1", f"-c{connections}", f"-d{seconds}s", "--timeout", "10s", "--latency",
         "-s", os.path.join(ROOT, "benches", "ids.lua"), url],
        env=env, stdout=subprocess.PIPE, text=True,
    )


def answered(ids_file):
    """(status → count, ids answered 2xx) from a `load_with_ids` run's files."""
    statuses, ids = {}, []
    for path in glob.glob(ids_file + ".*"):
        with open(path) as f:
            for line in f:
                status, _, pid = line.strip().partition(" ")
                statuses[status] = statuses.get(status, 0) + 1
                if status.startswith("2") and pid != "-":
                    ids.append(int(pid))
    return statuses, ids


def missing_rows(db, ids):
    """How many of `ids` have no row in the prediction table (a row holds ids id..id+n-1)."""
    if not ids:
        return 0
    script = ("create temp table answered (id bigint);\n"
              "copy answered from stdin;\n" + "\n".join(map(str, set(ids))) + "\n\\.\n"
              "select count(*) from answered a where not exists (select 1 from prediction p\n"
              "  where p.id <= a.id and p.id > a.id - 1024 and a.id < p.id + p.n);\n")
    out = subprocess.run(
        ["psql", "-qAt", "-h", "127.0.0.1", "-U", "postgres", "-d", db],
        input=script, env=ENV, capture_output=True, text=True, check=True,
    ).stdout
    return int(out.strip().splitlines()[-1])
