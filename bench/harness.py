#!/usr/bin/env python3
"""The benchmark behind `bench/run` (see BENCHMARKS.md): every figure beside its bound, in one run.

Starts hookfan (target/release/hookfan), a loopback sink (examples/bench_sink.rs) and the load
generators (wrk for closed-loop throughput, examples/bench_load.rs for a fixed arrival rate),
all on 127.0.0.1, and prints a Markdown table to stdout and to target/bench/.

Standard library only. `bench/run` builds the binaries and installs wrk, then runs this.
"""

from __future__ import annotations

import argparse
import datetime as dt
import hashlib
import http.client
import json
import os
import platform
import re
import resource
import shutil
import signal
import socket
import sqlite3
import statistics
import subprocess
import sys
import time
from dataclasses import dataclass, field
from typing import ClassVar
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
TOKEN = "bench-token-0123456789"
PAYLOAD = ROOT / "bench" / "payload.json"
ACCEPT_LUA = ROOT / "bench" / "accept.lua"
CLK_TCK = os.sysconf("SC_CLK_TCK")


# ---------------------------------------------------------------------------------------------
# How long each step runs.


@dataclass
class Plan:
    smoke: bool
    ceiling_s: int  # each wrk run against /healthz and the sink
    accept_s: int  # each accept run (32, 128 connections)
    latency_s: float  # the open-loop run at 1,000/s
    latency_rate: float
    deliver_s: int  # accepting while a destination delivers
    settle_cap_s: float  # how long to wait for that backlog to drain afterwards
    backlog: int  # deliveries in the drain test
    drain_cap_s: float
    pending: int  # deliveries pending in the memory / start-up test
    pending_run_s: float  # how long hookfan runs (delivering) with them
    fsync_n: int
    ready_repeats: int
    webhook_concurrency: tuple[int, ...] = (4, 64)

    @staticmethod
    def make(smoke: bool) -> Plan:
        if smoke:
            return Plan(True, 1, 2, 2, 1000, 2, 3, 2_000, 10, 20_000, 2, 200, 1)
        return Plan(False, 10, 20, 30, 1000, 20, 120, 100_000, 300, 1_000_000, 10, 2000, 3)


# ---------------------------------------------------------------------------------------------
# Small helpers.


def log(msg: str) -> None:
    print(f"[bench {time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def http_get(port: int, path: str, timeout: float = 2.0) -> tuple[int, bytes]:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    try:
        conn.request("GET", path)
        r = conn.getresponse()
        return r.status, r.read()
    finally:
        conn.close()


def proc_cpu_s(pid: int) -> float:
    """utime + stime of a live process (all its threads), in seconds; 0 once it is gone."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / CLK_TCK
    except (OSError, IndexError, ValueError):
        return 0.0


def proc_status_kib(pid: int, key: str) -> int | None:
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith(key + ":"):
                    return int(line.split()[1])
    except OSError:
        pass
    return None


def proc_ctxt_switches(pid: int) -> int:
    """Voluntary + involuntary context switches of all of a process's live threads."""
    total = 0
    try:
        tasks = os.listdir(f"/proc/{pid}/task")
    except OSError:
        return 0
    for tid in tasks:
        try:
            with open(f"/proc/{pid}/task/{tid}/status") as f:
                for line in f:
                    if line.startswith(("voluntary_ctxt_switches:", "nonvoluntary_ctxt_switches:")):
                        total += int(line.split()[1])
        except (OSError, ValueError):
            continue
    return total


def machine_busy_s() -> float:
    """CPU time the whole machine spent busy (all cores), in seconds."""
    with open("/proc/stat") as f:
        v = [int(x) for x in f.readline().split()[1:]]
    # user nice system idle iowait irq softirq steal (guest is inside user)
    return (v[0] + v[1] + v[2] + v[5] + v[6] + (v[7] if len(v) > 7 else 0)) / CLK_TCK


def fmt_int(x: float) -> str:
    return f"{x:,.0f}"


def fmt_ms(x: float) -> str:
    if x != x:  # NaN
        return "n/a"
    return f"{x:.2f}" if x < 10 else f"{x:.1f}" if x < 100 else f"{x:,.0f}"


def pct(x: float) -> str:
    return f"{100 * x:.1f}%" if x < 0.1 else f"{100 * x:.0f}%"


class StepFailed(Exception):
    pass


# ---------------------------------------------------------------------------------------------
# Our own processes, and how much CPU everything else used meanwhile.


class Procs:
    """Every long-lived process the harness starts, so they can all be stopped on the way out."""

    live: dict[int, subprocess.Popen] = {}

    @classmethod
    def start(cls, args: list[str], **kw) -> subprocess.Popen:
        p = subprocess.Popen(args, **kw)
        cls.live[p.pid] = p
        return p

    @classmethod
    def stop(cls, p: subprocess.Popen, timeout: float = 30.0) -> int | None:
        if p.poll() is None:
            p.send_signal(signal.SIGTERM)
            try:
                p.wait(timeout)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait()
        cls.live.pop(p.pid, None)
        return p.returncode

    @classmethod
    def stop_all(cls) -> None:
        for p in list(cls.live.values()):
            if p.poll() is None:
                p.kill()
                p.wait()
        cls.live.clear()


@dataclass
class Meter:
    """CPU used during a step: by a watched process, by the harness and its children (hookfan,
    the sink, wrk), and by the rest of the machine (another build, for one)."""

    t: float = field(default_factory=time.monotonic)
    busy: float = field(default_factory=machine_busy_s)
    ours: float = 0.0
    watched: dict[int, float] = field(default_factory=dict)
    switches: dict[int, int] = field(default_factory=dict)
    pg: float = 0.0
    # Step 6: the PostgreSQL server's processes work for us, not against us.
    with_postgres: ClassVar[bool] = False

    @staticmethod
    def ours_now() -> float:
        me = resource.getrusage(resource.RUSAGE_SELF)
        kids = resource.getrusage(resource.RUSAGE_CHILDREN)
        live = sum(proc_cpu_s(pid) for pid, p in Procs.live.items() if p.poll() is None)
        server = PgServer.cpu_s() if Meter.with_postgres else 0.0
        return me.ru_utime + me.ru_stime + kids.ru_utime + kids.ru_stime + live + server

    @classmethod
    def start(cls, *pids: int) -> Meter:
        m = cls()
        m.ours = cls.ours_now()
        m.pg = PgServer.cpu_s() if cls.with_postgres else 0.0
        m.watched = {pid: proc_cpu_s(pid) for pid in pids}
        m.switches = {pid: proc_ctxt_switches(pid) for pid in pids}
        return m

    def stop(self) -> dict:
        elapsed = max(time.monotonic() - self.t, 1e-9)
        busy = machine_busy_s() - self.busy
        ours = self.ours_now() - self.ours
        out = {
            "elapsed_s": elapsed,
            "other_cores": max(0.0, busy - ours) / elapsed,
            "machine_cores": busy / elapsed,
        }
        if Meter.with_postgres:
            out["postgres_cores"] = (PgServer.cpu_s() - self.pg) / elapsed
        for pid, before in self.watched.items():
            out[f"cpu_s:{pid}"] = proc_cpu_s(pid) - before
            out[f"cs:{pid}"] = proc_ctxt_switches(pid) - self.switches[pid]
        return out


# ---------------------------------------------------------------------------------------------
# hookfan and the sink.


def dest_file(name: str, enabled: bool) -> str:
    return f"""
[destinations.{name}]
type = "file"
enabled = {"true" if enabled else "false"}
path = "{name}.jsonl"

[destinations.{name}.fields]
id = "{{{{ participation.id }}}}"
email = "{{{{ participant.email }}}}"
campaign = "{{{{ participation.campaign_name }}}}"
"""


def dest_webhook(name: str, sink_port: int, concurrency: int) -> str:
    return f"""
[destinations.{name}]
type = "webhook"
url = "http://127.0.0.1:{sink_port}/in/{name}"
concurrency = {concurrency}

[destinations.{name}.fields]
id = "{{{{ participation.id }}}}"
email = "{{{{ participant.email }}}}"
campaign = "{{{{ participation.campaign_name }}}}"
"""


# ---------------------------------------------------------------------------------------------
# PostgreSQL (step 6): the server named by HOOKFAN_BENCH_POSTGRES_URL, else
# HOOKFAN_TEST_POSTGRES_URL, else the local default; a schema of its own per measurement, read
# and filled with psql (the harness stays standard-library Python).

PG_DEFAULT_URL = "postgres://postgres@127.0.0.1:5432/test"


def pg_url() -> str:
    return (os.environ.get("HOOKFAN_BENCH_POSTGRES_URL") or os.environ.get("HOOKFAN_TEST_POSTGRES_URL")
            or PG_DEFAULT_URL)


def without_password(url: str) -> str:
    return re.sub(r"//([^:/@]*):[^@/]*@", r"//\1:***@", url)


class PgServer:
    def __init__(self, url: str):
        self.url = url
        self.n = 0
        self.prefix = f"hookfan_bench_{os.getpid()}_"

    def psql(self, sql: str, schema: str | None = None, timeout: float = 900) -> str:
        """Runs `sql` (read from stdin, one transaction per statement unless it says otherwise)."""
        env = dict(os.environ)
        if schema:
            env["PGOPTIONS"] = f"-c search_path={schema}"
        r = subprocess.run(["psql", "-X", "-A", "-t", "-q", "-v", "ON_ERROR_STOP=1", "-d", self.url],
                           input=sql, capture_output=True, text=True, env=env, timeout=timeout)
        if r.returncode != 0:
            raise StepFailed(f"psql failed: {without_password(r.stderr.strip()[-300:])}")
        return r.stdout.strip()

    def version(self) -> str | None:
        """The server's version and settings that move the figures, or None if it cannot be reached."""
        if not shutil.which("psql"):
            return None
        try:
            out = self.psql("SELECT current_setting('server_version') || ', shared_buffers '"
                            " || current_setting('shared_buffers') || ', synchronous_commit '"
                            " || current_setting('synchronous_commit') || ', fsync '"
                            " || current_setting('fsync');", timeout=10)
        except (StepFailed, subprocess.TimeoutExpired, OSError):
            return None
        return f"PostgreSQL {out}" if out else None

    def schema(self, name: str) -> PgSchema:
        self.n += 1
        schema = f"{self.prefix}{self.n:02d}_{re.sub(r'[^a-z0-9_]', '_', name.lower())}"
        self.psql(f"CREATE SCHEMA {schema};")
        return PgSchema(self, schema)

    def drop_all(self) -> None:
        try:
            names = self.psql(f"SELECT nspname FROM pg_namespace WHERE nspname LIKE '{self.prefix}%';").split()
            for name in names:
                self.psql(f"DROP SCHEMA IF EXISTS {name} CASCADE;")
        except (StepFailed, subprocess.TimeoutExpired, OSError) as e:
            log(f"  could not drop the bench schemas ({self.prefix}*): {e}")

    @staticmethod
    def cpu_s() -> float:
        """CPU used by the server's processes on this machine, with that of its ended children
        (a backend that closed is counted in the postmaster's)."""
        total = 0.0
        for d in Path("/proc").iterdir():
            if not d.name.isdigit():
                continue
            try:
                if (d / "comm").read_text().strip() != "postgres":
                    continue
                fields = (d / "stat").read_text().rsplit(")", 1)[1].split()
                total += sum(int(x) for x in fields[11:15]) / CLK_TCK
            except (OSError, IndexError, ValueError):
                continue
        return total


def postgres_cores(meter: dict) -> str:
    """The server's share of a step's CPU, for its row (empty outside step 6)."""
    return f"; PostgreSQL {meter['postgres_cores']:.2f} cores" if "postgres_cores" in meter else ""


@dataclass
class PgSchema:
    server: PgServer
    name: str

    def hookfan_url(self) -> str:
        sep = "&" if "?" in self.server.url else "?"
        return f"{self.server.url}{sep}options[search_path]={self.name}"

    def sql(self, sql: str, timeout: float = 900) -> str:
        return self.server.psql(sql, schema=self.name, timeout=timeout)

    def counts(self) -> dict[str, int]:
        out: dict[str, int] = {}
        rows = self.sql("SELECT status, count(*) FROM deliveries GROUP BY status "
                        "UNION ALL SELECT 'notifications', count(*) FROM notifications;")
        for line in rows.splitlines():
            key, _, n = line.partition("|")
            out[key] = int(n)
        return out

    def pending(self) -> int:
        return int(self.sql("SELECT count(*) FROM deliveries WHERE status = 'pending';") or 0)

    def fill(self, notifications: int, destinations: list[str]) -> float:
        """What `fill()` does for SQLite, in PostgreSQL, then VACUUM ANALYZE (a store at rest)."""
        t0 = time.monotonic()
        template = re.sub(r'"id"\s*:\s*"[^"]+"', '"id":"__ID__"', PAYLOAD.read_text().strip(), count=1)
        if "$tpl$" in template:
            raise StepFailed("the payload cannot be quoted for psql")
        now = int(time.time() * 1000)
        run = f"backlog-{os.getpid()}-{now:x}"
        dests = ", ".join(f"('{d}', {i})" for i, d in enumerate(destinations))
        self.sql(f"""BEGIN;
INSERT INTO notifications (source, participation_id, format, body_sha256, body, received_at)
SELECT 'qualifio', pid, 'v2', encode(sha256(convert_to(body, 'UTF8')), 'hex'), body, {now}
FROM (SELECT '{run}-' || x AS pid, replace($tpl${template}$tpl$, '__ID__', '{run}-' || x) AS body
      FROM generate_series(1, {notifications}) AS x) s;
INSERT INTO deliveries (notification_id, destination, status, attempts, next_attempt_at, created_at, updated_at)
SELECT n.id, d.name, 'pending', 0, {now}, {now}, {now}
FROM notifications n CROSS JOIN (VALUES {dests}) AS d(name, ord) ORDER BY n.id, d.ord;
COMMIT;
VACUUM ANALYZE;
CHECKPOINT;
""")
        return time.monotonic() - t0


class Hookfan:
    def __init__(self, bin_path: Path, workdir: Path, destinations: str, pg: PgSchema | None = None):
        """A relay on a SQLite store in `workdir`, or on PostgreSQL in the schema `pg`."""
        self.bin = bin_path
        self.dir = workdir
        self.dir.mkdir(parents=True, exist_ok=True)
        self.pg = pg
        self.port = free_port()
        self.config = self.dir / "hookfan.toml"
        storage = pg.hookfan_url() if pg is not None else "sqlite://hookfan.db"
        self.config.write_text(
            f"""[server]
listen = "127.0.0.1:{self.port}"

[storage]
url = "{storage}"

[sources.qualifio]
token = "{TOKEN}"
{destinations}"""
        )
        self.db = self.dir / "hookfan.db"
        self.proc: subprocess.Popen | None = None
        self.ready_ms: float | None = None
        self.hwm_kib: int | None = None
        self.start_failed = False

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    def url(self, path: str = "") -> str:
        return f"http://127.0.0.1:{self.port}{path}"

    def start(self, poll_s: float = 0.005, cap_s: float = 120.0) -> float:
        """Launches and polls /readyz until it answers 200: milliseconds from launch."""
        env = dict(os.environ, RUST_LOG=os.environ.get("BENCH_RUST_LOG", "warn"))
        self.log = open(self.dir / "serve.log", "ab")
        t0 = time.monotonic()
        self.proc = Procs.start(
            [str(self.bin), "serve", "--config", str(self.config)],
            env=env,
            stdout=self.log,
            stderr=self.log,
            cwd=self.dir,
        )
        while True:
            if self.proc.poll() is not None:
                self.start_failed = True
                raise StepFailed(f"hookfan exited with {self.proc.returncode}: {self.log_tail()}")
            try:
                status, _ = http_get(self.port, "/readyz", timeout=5)
                if status == 200:
                    self.ready_ms = (time.monotonic() - t0) * 1000
                    return self.ready_ms
            except OSError:
                pass
            if time.monotonic() - t0 > cap_s:
                raise StepFailed(f"hookfan not ready after {cap_s:.0f} s: {self.log_tail()}")
            time.sleep(poll_s)

    def hwm(self) -> int | None:
        if self.proc is not None and self.proc.poll() is None:
            self.hwm_kib = proc_status_kib(self.proc.pid, "VmHWM")
        return self.hwm_kib

    def stop(self) -> None:
        if self.proc is None:
            return
        self.hwm()
        code = Procs.stop(self.proc)
        self.log.close()
        if code not in (0, None) and not self.start_failed:
            raise StepFailed(f"hookfan stopped with exit code {code}: {self.log_tail()}")

    def log_tail(self) -> str:
        try:
            return " | ".join((self.dir / "serve.log").read_text(errors="replace").splitlines()[-5:])
        except OSError:
            return "(no log)"

    def counts(self) -> dict[str, int]:
        """Deliveries by status, and notifications, read from the store (read-only)."""
        if self.pg is not None:
            return self.pg.counts()
        con = sqlite3.connect(f"file:{self.db}?mode=ro", uri=True, timeout=10)
        try:
            out = dict(con.execute("SELECT status, count(*) FROM deliveries GROUP BY status").fetchall())
            out["notifications"] = con.execute("SELECT count(*) FROM notifications").fetchone()[0]
            return out
        finally:
            con.close()

    def wait_pending_zero(self, cap_s: float, poll_s: float = 0.1) -> tuple[float, int]:
        """Seconds until no delivery is pending (or cap_s), and how many were left."""
        con = None if self.pg is not None else sqlite3.connect(f"file:{self.db}?mode=ro", uri=True, timeout=10)
        t0 = time.monotonic()
        try:
            while True:
                if con is None:
                    left = self.pg.pending()
                else:
                    left = con.execute("SELECT count(*) FROM deliveries WHERE status = 'pending'").fetchone()[0]
                now = time.monotonic()
                if left == 0 or now - t0 >= cap_s:
                    return now - t0, left
                if self.proc is not None and self.proc.poll() is not None:
                    raise StepFailed(f"hookfan died while delivering: {self.log_tail()}")
                time.sleep(poll_s)
        finally:
            if con is not None:
                con.close()


class Sink:
    def __init__(self, bin_path: Path, logdir: Path, workers: int = 2):
        self.port = free_port()
        self.log = open(logdir / "sink.log", "ab")
        self.proc = Procs.start(
            [str(bin_path), "--listen", f"127.0.0.1:{self.port}", "--workers", str(workers)],
            stdout=self.log,
            stderr=self.log,
        )
        for _ in range(1000):
            try:
                self.count()
                return
            except OSError:
                if self.proc.poll() is not None:
                    raise StepFailed("the sink exited at start (see sink.log)")
                time.sleep(0.01)
        raise StepFailed("the sink does not answer")

    def count(self) -> int:
        status, body = http_get(self.port, "/count")
        if status != 200:
            raise OSError(f"sink /count answered {status}")
        return int(body)

    def stop(self) -> None:
        Procs.stop(self.proc)
        self.log.close()


# ---------------------------------------------------------------------------------------------
# Load generators.


def parse_wrk_duration(value: str) -> float:
    m = re.match(r"([\d.]+)(us|ms|s|m)", value)
    if not m:
        return float("nan")
    n, unit = float(m.group(1)), m.group(2)
    return {"us": n / 1000, "ms": n, "s": n * 1000, "m": n * 60000}[unit]


def wrk(url: str, connections: int, seconds: int, lua: bool) -> dict:
    """Closed-loop load: `connections` keep-alive connections, each sending as soon as the last
    answer came. Returns requests, 2xx/s and latency percentiles (ms)."""
    cmd = ["wrk", "-t2", f"-c{connections}", f"-d{seconds}s", "--latency", "--timeout", "10s"]
    if lua:
        cmd += ["-s", str(ACCEPT_LUA)]
    cmd.append(url)
    env = dict(os.environ, HOOKFAN_BENCH_PAYLOAD=str(PAYLOAD))
    r = subprocess.run(cmd, capture_output=True, text=True, env=env, cwd=ROOT, timeout=seconds + 60)
    out = r.stdout
    m = re.search(r"(\d+) requests in ([\d.]+)(us|ms|s|m)", out)
    if r.returncode != 0 or not m:
        raise StepFailed(f"wrk failed ({r.returncode}): {(r.stderr or out).strip()[-300:]}")
    requests = int(m.group(1))
    duration_s = parse_wrk_duration(m.group(2) + m.group(3)) / 1000
    non2xx = int(x.group(1)) if (x := re.search(r"Non-2xx or 3xx responses: (\d+)", out)) else 0
    errors = 0
    if x := re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", out):
        errors = sum(int(g) for g in x.groups())
    lat = {p: parse_wrk_duration(v) for p, v in re.findall(r"^\s+(50|75|90|99)%\s+(\S+)", out, re.M)}
    ok = max(0, requests - non2xx)
    return {
        "requests": requests,
        "duration_s": duration_s,
        "ok": ok,
        "non2xx": non2xx,
        "socket_errors": errors,
        "ok_per_s": ok / duration_s if duration_s else 0.0,
        "p50_ms": lat.get("50", float("nan")),
        "p99_ms": lat.get("99", float("nan")),
    }


def open_loop(load_bin: Path, url: str, rate: float, seconds: float) -> dict:
    cmd = [
        str(load_bin),
        "--url", url,
        "--rate", str(rate),
        "--duration", str(seconds),
        "--connections", "64",
        "--payload", str(PAYLOAD),
        "--header", f"Authorization: Bearer {TOKEN}",
    ]
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=seconds + 60)
    if r.returncode != 0:
        raise StepFailed(f"bench_load failed ({r.returncode}): {r.stderr.strip()[-300:]}")
    return json.loads(r.stdout)


# ---------------------------------------------------------------------------------------------
# Filling a store directly: a backlog without going through the front door.


def disk_stat_file(folder: Path) -> Path:
    """The kernel's counters of the block device `folder` is on."""
    dev = os.stat(folder).st_dev
    return Path(f"/sys/dev/block/{os.major(dev)}:{os.minor(dev)}/stat")


def io_ticks(stat: Path) -> int | None:
    """Milliseconds the device has spent doing I/O (field 10 of its stat), if readable."""
    try:
        return int(stat.read_text().split()[9])
    except (OSError, IndexError, ValueError):
        return None


def fill(db: Path, notifications: int, destinations: list[str]) -> float:
    """Adds `notifications` new v2 notifications (the sample payload, a new id each) and one
    pending delivery per destination for each, in one transaction. Returns seconds taken."""
    t0 = time.monotonic()
    template = re.sub(r'"id"\s*:\s*"[^"]+"', '"id":"__ID__"', PAYLOAD.read_text().strip(), count=1)
    now = int(time.time() * 1000)
    run = f"backlog-{os.getpid()}-{now:x}"
    con = sqlite3.connect(db, timeout=30)
    try:
        con.execute("PRAGMA synchronous = OFF")
        con.execute("PRAGMA cache_size = -262144")
        con.create_function(
            "bench_sha256", 1, lambda s: hashlib.sha256(s.encode()).hexdigest(), deterministic=True
        )
        (before,) = con.execute("SELECT coalesce(max(id), 0) FROM notifications").fetchone()
        with con:
            con.execute(
                """WITH RECURSIVE seq(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM seq WHERE x < ?1)
                   INSERT INTO notifications (source, participation_id, format, body_sha256, body, received_at)
                   SELECT 'qualifio', pid, 'v2', bench_sha256(body), body, ?2
                   FROM (SELECT ?3 || '-' || x AS pid, replace(?4, '__ID__', ?3 || '-' || x) AS body FROM seq)""",
                (notifications, now, run, template),
            )
            dests = " UNION ALL ".join(f"SELECT ? AS name, {i} AS ord" for i in range(len(destinations)))
            con.execute(
                f"""INSERT INTO deliveries (notification_id, destination, status, attempts,
                                            next_attempt_at, created_at, updated_at)
                    SELECT n.id, d.name, 'pending', 0, ?, ?, ?
                    FROM notifications n CROSS JOIN ({dests}) d
                    WHERE n.id > ? ORDER BY n.id, d.ord""",
                (now, now, now, *destinations, before),
            )
        con.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    finally:
        con.close()
    return time.monotonic() - t0


def make_store(hookfan_bin: Path, workdir: Path, notifications: int, destinations: list[str]) -> Path:
    """A migrated store (hookfan creates it, then stops) filled with a backlog."""
    h = Hookfan(hookfan_bin, workdir, "")
    h.start()
    h.stop()
    secs = fill(h.db, notifications, destinations)
    # Write the fill out now, so its writeback does not land in the middle of a measurement.
    os.sync()
    size = h.db.stat().st_size
    log(f"  filled {notifications:,} notifications × {len(destinations)} destinations in {secs:.1f} s ({size / 2**20:,.0f} MiB)")
    return h.db


def copy_store(template: Path, workdir: Path) -> None:
    workdir.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(template, workdir / "hookfan.db")
    os.sync()


# ---------------------------------------------------------------------------------------------
# The report.


@dataclass
class Row:
    step: str
    what: str
    result: str
    bound: str = ""
    ratio: str = ""
    target: str = ""
    other: str = ""


class Report:
    def __init__(self):
        self.rows: list[Row] = []
        self.failures: list[str] = []
        self.raw: dict = {}
        self.max_other = 0.0

    def add(self, row: Row, meter: dict | None = None) -> None:
        if meter is not None:
            self.max_other = max(self.max_other, meter["other_cores"])
            row.other = f"{meter['other_cores']:.2f}"
        self.rows.append(row)
        log(f"  {row.what}: {row.result}" + (f" ({row.ratio} of {row.bound})" if row.ratio else ""))

    def fail(self, step: str, what: str, e: BaseException) -> None:
        msg = f"{type(e).__name__}: {e}" if not isinstance(e, StepFailed) else str(e)
        self.failures.append(f"{what}: {msg}")
        self.rows.append(Row(step, what, f"**FAILED**: {msg[:200]}"))
        log(f"  FAILED {what}: {msg}")


def git_describe() -> str:
    try:
        head = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True)
        if head.returncode != 0:
            return "(not a git checkout)"
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--", "src", "connectors", "migrations", "Cargo.toml", "Cargo.lock"],
            cwd=ROOT, capture_output=True, text=True,
        ).stdout.strip()
        return head.stdout.strip() + (" + uncommitted changes" if dirty else "")
    except OSError:
        return "(git not found)"


def busy_builders() -> list[str]:
    names = []
    for d in Path("/proc").iterdir():
        if d.name.isdigit():
            try:
                comm = (d / "comm").read_text().strip()
            except OSError:
                continue
            if comm in ("rustc", "cargo", "cc1", "cc1plus", "ld", "ld.lld", "clippy-driver"):
                names.append(comm)
    return sorted(set(names))


def machine(workdir: Path) -> list[tuple[str, str]]:
    cpu = "unknown"
    with open("/proc/cpuinfo") as f:
        for line in f:
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    mem_kib = proc_meminfo("MemTotal")
    fs = "unknown"
    try:
        r = subprocess.run(["findmnt", "-n", "-o", "FSTYPE,SOURCE,OPTIONS", "--target", str(workdir)],
                           capture_output=True, text=True)
        if r.returncode == 0 and r.stdout.strip():
            fstype, source, options = (r.stdout.split(None, 2) + ["", "", ""])[:3]
            fs = f"{fstype} on {source} ({options.strip()[:60]})"
            if fstype == "ext4":
                # jbd2 lists every mounted ext4 journal; none for this device means no journal,
                # so an fsync costs one data flush and no journal commit.
                dev = Path(source).name
                jbd2 = Path("/proc/fs/jbd2")
                journaled = jbd2.is_dir() and any(p.name.startswith(dev + "-") for p in jbd2.iterdir())
                fs += ", with a journal" if journaled else ", **no journal** (fsync is cheaper than on most servers)"
    except OSError:
        pass
    rustc = subprocess.run(["rustc", "--version"], capture_output=True, text=True).stdout.strip() if shutil.which("rustc") else "?"
    wrk_v = subprocess.run(["wrk", "--version"], capture_output=True, text=True).stdout.split("[")[0].strip() if shutil.which("wrk") else "?"
    return [
        ("CPU", cpu),
        ("Cores", f"{os.cpu_count()} (load generator, sink and hookfan share them)"),
        ("Memory", f"{mem_kib / 2**20:.1f} GiB" if mem_kib else "?"),
        ("Kernel", f"{platform.system()} {platform.release()}"),
        ("Store's file system", fs),
        ("hookfan", git_describe()),
        ("Toolchain", rustc),
        ("Load generators", f"{wrk_v}; bench_load (open loop)"),
    ]


def proc_meminfo(key: str) -> int | None:
    with open("/proc/meminfo") as f:
        for line in f:
            if line.startswith(key + ":"):
                return int(line.split()[1])
    return None


# ---------------------------------------------------------------------------------------------
# The steps.


class Bench:
    def __init__(self, plan: Plan, bins: Path, work: Path, report: Report, keep: bool = False):
        self.plan = plan
        self.keep = keep
        self.hookfan = bins / "hookfan"
        self.sink_bin = bins / "examples" / "bench_sink"
        self.load_bin = bins / "examples" / "bench_load"
        self.work = work
        self.r = report
        self.ceiling: dict[int, float] = {}
        self.sink_ceiling: float | None = None
        self.sink: Sink | None = None
        self.hwm: list[tuple[int, str]] = []
        self.n = 0

    def workdir(self, name: str) -> Path:
        self.n += 1
        d = self.work / f"{self.n:02d}-{name}"
        if d.exists():
            shutil.rmtree(d)
        d.mkdir(parents=True)
        self.settle()
        return d

    def settle(self) -> None:
        """Lets the disk finish the last measurement's work (writing back, and discarding the
        blocks of the stores just deleted) before the next one starts: an accept run leaves
        gigabytes of it, which would otherwise slow the next step's fsyncs. Waits until the
        device has been busy less than 5% of a second (its `io_ticks`), at most 30 s."""
        os.sync()
        stat = disk_stat_file(self.work)
        deadline = time.monotonic() + 30
        while True:
            before = io_ticks(stat)
            time.sleep(1.0)
            after = io_ticks(stat)
            if before is None or after is None or after - before < 50 or time.monotonic() > deadline:
                return

    def note_hwm(self, h: Hookfan, what: str) -> None:
        kib = h.hwm()
        if kib:
            self.hwm.append((kib, what))

    # 1. Bounds ------------------------------------------------------------------------------

    def fsync(self) -> None:
        what = "Disk: write + fsync of 4 KiB, in the store's folder"
        try:
            path = self.work / "fsync.probe"
            m = Meter.start()
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
            try:
                os.ftruncate(fd, 1 << 20)
                os.fsync(fd)
                buf = os.urandom(4096)
                times = {"fsync": [], "fdatasync": []}
                for i in range(self.plan.fsync_n):
                    kind = "fsync" if i % 2 == 0 else "fdatasync"
                    t = time.perf_counter()
                    os.pwrite(fd, buf, (i % 256) * 4096)
                    (os.fsync if kind == "fsync" else os.fdatasync)(fd)
                    times[kind].append((time.perf_counter() - t) * 1000)
            finally:
                os.close(fd)
                path.unlink(missing_ok=True)
            q = {k: statistics.quantiles(v, n=100) for k, v in times.items()}
            med = {k: statistics.median(v) for k, v in times.items()}
            self.r.raw["fsync_ms"] = {k: {"p50": med[k], "p99": q[k][98]} for k in times}
            self.r.add(Row("1 bound", what,
                           f"fsync p50 {med['fsync']:.2f} ms, p99 {q['fsync'][98]:.2f} ms "
                           f"(fdatasync p50 {med['fdatasync']:.2f}, p99 {q['fdatasync'][98]:.2f})"), m.stop())
        except Exception as e:  # noqa: BLE001 — one failed step must not hide the others
            self.r.fail("1 bound", what, e)

    def sink_start(self) -> None:
        what = "Sink ceiling: wrk, 32 connections, POST of the sample payload, 200 at once"
        try:
            self.sink = Sink(self.sink_bin, self.work)
            m = Meter.start()
            before = self.sink.count()
            w = wrk(f"http://127.0.0.1:{self.sink.port}", 32, self.plan.ceiling_s, lua=True)
            got = self.sink.count() - before
            meter = m.stop()
            if w["ok"] == 0 or got == 0:
                raise StepFailed(f"the sink answered no request ({w})")
            self.sink_ceiling = w["ok_per_s"]
            self.r.raw["sink_ceiling"] = w
            self.r.add(Row("1 bound", what, f"{fmt_int(w['ok_per_s'])} req/s (p99 {fmt_ms(w['p99_ms'])} ms)",
                           target="≫ hookfan (aim > 20,000/s)"), meter)
        except Exception as e:  # noqa: BLE001
            self.r.fail("1 bound", what, e)

    # 1 + 2. Ceiling and accept, on the same process --------------------------------------------

    def accept(self) -> None:
        for conns in (32, 128):
            h = Hookfan(self.hookfan, self.workdir(f"accept-c{conns}"), dest_file("archive", enabled=False))
            self._ceiling_and_accept(h, conns, "2 accept", "", self.ceiling)

    def _ceiling_and_accept(self, h: Hookfan, conns: int, step: str, label: str, ceilings: dict[int, float],
                            key: str = "") -> None:
        """The no-store ceiling of `h`, then its accept rate, at `conns` connections (`key`
        prefixes the names of the raw figures)."""
        try:
            h.start()
            what = f"{label}No-store ceiling: wrk GET /healthz, {conns} connections"
            try:
                m = Meter.start(h.pid)
                w = wrk(h.url("/healthz"), conns, self.plan.ceiling_s, lua=False)
                meter = m.stop()
                if w["ok"] == 0:
                    raise StepFailed("no 2xx answer from /healthz")
                ceilings[conns] = w["ok_per_s"]
                self.r.raw[f"{key}ceiling_c{conns}"] = w
                self.r.add(Row("1 bound" if not label else step, what,
                               f"{fmt_int(w['ok_per_s'])} req/s (p99 {fmt_ms(w['p99_ms'])} ms)"), meter)
            except Exception as e:  # noqa: BLE001
                self.r.fail(step, what, e)

            what = f"{label}Accept: wrk POST, new id each, {conns} connections"
            m = Meter.start(h.pid)
            w = wrk(h.url(), conns, self.plan.accept_s, lua=True)
            meter = m.stop()
            stored = h.counts()["notifications"]
            if w["ok"] == 0 or stored == 0:
                raise StepFailed(f"nothing accepted: {w['non2xx']} non-2xx, {w['socket_errors']} socket errors")
            cores = meter[f"cpu_s:{h.pid}"] / meter["elapsed_s"]
            us_per = meter[f"cpu_s:{h.pid}"] / max(w["ok"], 1) * 1e6
            cs_per = meter[f"cs:{h.pid}"] / max(w["ok"], 1)
            ceiling = ceilings.get(conns)
            self.r.raw[f"{key}accept_c{conns}"] = dict(w, stored=stored, hookfan_cores=cores, cpu_us_per_accept=us_per,
                                                      context_switches_per_accept=cs_per,
                                                      postgres_cores=meter.get("postgres_cores"))
            extra = (f"; {w['non2xx']:,} non-2xx" if w["non2xx"] else "") + postgres_cores(meter)
            self.r.add(Row(
                step, what,
                f"{fmt_int(w['ok_per_s'])}/s (p50 {fmt_ms(w['p50_ms'])} ms, p99 {fmt_ms(w['p99_ms'])} ms; "
                f"hookfan {cores:.2f} cores, {us_per:,.0f} µs CPU and {cs_per:.1f} context switches each{extra})",
                bound=f"ceiling {fmt_int(ceiling)}/s" if ceiling else "",
                ratio=pct(w["ok_per_s"] / ceiling) if ceiling else "",
                target="≥ 25% of ceiling",
            ), meter)
            self.note_hwm(h, f"{label}accept, {conns} connections")
        except Exception as e:  # noqa: BLE001
            self.r.fail(step, f"{label}Accept, {conns} connections", e)
        finally:
            self._stop(h, step)

    def _stop(self, h: Hookfan, step: str) -> None:
        try:
            h.stop()
        except Exception as e:  # noqa: BLE001
            self.r.fail(step, "hookfan shutdown", e)
        if not self.keep:
            # Stores grow to hundreds of MB: free the disk as soon as one is measured.
            shutil.rmtree(h.dir, ignore_errors=True)

    # 3. Latency at a fixed arrival rate --------------------------------------------------------

    def latency(self) -> None:
        rate = self.plan.latency_rate
        what = f"202 latency, open loop at {rate:,.0f}/s (64 connections)"
        h = Hookfan(self.hookfan, self.workdir("latency"), dest_file("archive", enabled=False))
        try:
            h.start()
            m = Meter.start(h.pid)
            o = open_loop(self.load_bin, h.url("/hooks/qualifio"), rate, self.plan.latency_s)
            meter = m.stop()
            if o["ok"] == 0:
                raise StepFailed(f"nothing accepted: {o}")
            lat = o["latency_ms"]
            self.r.raw["latency"] = o
            bad = o["non_2xx"] + o["errors"] + o["timeouts"] + o["not_sent"]
            self.r.add(Row(
                "3 latency", what,
                f"p50 {fmt_ms(lat['p50'])} ms, p99 {fmt_ms(lat['p99'])} ms, p99.9 {fmt_ms(lat['p99_9'])} ms, "
                f"max {fmt_ms(lat['max'])} ms ({o['completed']:,} answers at {o['achieved_rate']:,.0f}/s"
                + (f"; {bad:,} not 2xx or failed" if bad else "") + ")",
                target="p99 < 10 ms",
            ), meter)
            self.note_hwm(h, "latency")
        except Exception as e:  # noqa: BLE001
            self.r.fail("3 latency", what, e)
        finally:
            self._stop(h, "3 latency")

    # 4. Delivery ----------------------------------------------------------------------------

    def deliver_while_accepting(self) -> None:
        variants = [("file", "a file destination", dest_file("archive", enabled=True))]
        if self.sink is not None:
            for c in self.plan.webhook_concurrency:
                variants.append((f"webhook-c{c}", f"a webhook destination (concurrency {c})",
                                 dest_webhook("crm", self.sink.port, c)))
        for key, label, dest in variants:
            what = f"Accept while {label} delivers: wrk, 32 connections"
            h = Hookfan(self.hookfan, self.workdir(f"deliver-{key}"), dest)
            try:
                h.start()
                m = Meter.start(h.pid)
                w = wrk(h.url(), 32, self.plan.deliver_s, lua=True)
                meter = m.stop()
                c = h.counts()
                delivered, pending, dead = c.get("delivered", 0), c.get("pending", 0), c.get("dead", 0)
                if w["ok"] == 0:
                    raise StepFailed(f"nothing accepted: {w['non2xx']} non-2xx, {w['socket_errors']} socket errors")
                settle, left = h.wait_pending_zero(self.plan.settle_cap_s)
                drained = c.get("delivered", 0)
                after = h.counts()
                rate_during = delivered / meter["elapsed_s"]
                drain_rate = (after.get("delivered", 0) - drained) / settle if settle > 0.05 else float("nan")
                cores = meter[f"cpu_s:{h.pid}"] / meter["elapsed_s"]
                ceiling = self.ceiling.get(32)
                # Seconds of work the backlog represents: at the rate it drained once the load
                # stopped, or (if it was too small to time) at the rate during the load.
                work_rate = drain_rate if drain_rate == drain_rate and drain_rate > 0 else rate_during
                work_s = pending / work_rate if work_rate > 0 else float("inf")
                if left == 0:
                    backlog = f"backlog at the end {pending:,} ≈ {work_s:.1f} s of work, drained in {settle:.1f} s"
                else:
                    backlog = (f"backlog at the end {pending:,} ≈ {work_s:.0f} s of work at "
                               f"{fmt_int(work_rate)}/s, {left:,} still pending after {settle:.0f} s")
                kept = "kept up" if work_s < 2 else "did not keep up"
                self.r.raw[f"deliver_{key}"] = dict(
                    w, delivered_during=delivered, pending_at_end=pending, dead=dead + after.get("dead", 0),
                    settle_s=settle, left_after_settle=left, hookfan_cores=cores,
                    deliveries_per_s_during=rate_during, deliveries_per_s_after=drain_rate, backlog_work_s=work_s,
                )
                self.r.add(Row(
                    "4 delivery", what,
                    f"accepted {fmt_int(w['ok_per_s'])}/s; delivered {fmt_int(rate_during)}/s meanwhile "
                    f"({delivered:,} of {c['notifications']:,}); {backlog}; {kept} "
                    f"(hookfan {cores:.2f} cores" + (f"; {dead:,} dead" if dead else "") + ")",
                    bound=f"ceiling {fmt_int(ceiling)}/s" if ceiling else "",
                    ratio=pct(w["ok_per_s"] / ceiling) if ceiling else "",
                    target="≥ 15% of ceiling, backlog < 2 s of work" if key == "file" else "delivery ≥ 5,000/s",
                ), meter)
                if key != "file" and self.sink_ceiling:
                    self.r.add(Row(
                        "4 delivery", f"… its webhook delivery rate vs the sink", f"{fmt_int(rate_during)}/s"
                        + (f" during load, {fmt_int(drain_rate)}/s after it" if drain_rate == drain_rate else ""),
                        bound=f"sink {fmt_int(self.sink_ceiling)}/s",
                        ratio=pct(max(rate_during, drain_rate if drain_rate == drain_rate else 0) / self.sink_ceiling),
                        target="≥ 5,000/s",
                    ))
                self.note_hwm(h, f"accept + {key} delivery")
            except Exception as e:  # noqa: BLE001
                self.r.fail("4 delivery", what, e)
            finally:
                self._stop(h, "4 delivery")

    def drains(self) -> None:
        if self.sink is None:
            self.r.fail("4 delivery", "Backlog drain", StepFailed("no sink"))
            return
        templates: dict[int, Path] = {}
        for k, conc in [(1, 4), (1, 64), (3, 4)]:
            names = [f"d{i + 1}" for i in range(k)]
            n = -(-self.plan.backlog // k)
            what = self._drain_what(n, k, conc)
            h = None
            try:
                if k not in templates:
                    log(f"  filling a store: {n:,} notifications × {k}")
                    templates[k] = make_store(self.hookfan, self.workdir(f"backlog-{k}-template"), n, names)
                d = self.workdir(f"drain-{k}x-c{conc}")
                copy_store(templates[k], d)
                h = Hookfan(self.hookfan, d, "".join(dest_webhook(x, self.sink.port, conc) for x in names))
                self._drain(h, what, n * k, "4 delivery", f"drain_{k}x_c{conc}", f"drain {k}×, concurrency {conc}")
            except Exception as e:  # noqa: BLE001
                self.r.fail("4 delivery", what, e)
            finally:
                if h is not None:
                    self._stop(h, "4 delivery")
        if not self.keep:
            for t in templates.values():
                shutil.rmtree(t.parent, ignore_errors=True)

    @staticmethod
    def _drain_what(n: int, k: int, conc: int) -> str:
        return (f"Drain a backlog of {n * k:,} deliveries: {k} webhook destination{'s' if k > 1 else ''} "
                f"per notification (concurrency {conc})")

    def _drain(self, h: Hookfan, what: str, deliveries: int, step: str, key: str, label: str) -> None:
        """Starts `h` on its filled store and times it until nothing is pending."""
        assert self.sink is not None
        sink_before = self.sink.count()
        h.start()
        m = Meter.start(h.pid)
        secs, left = h.wait_pending_zero(self.plan.drain_cap_s)
        meter = m.stop()
        c = h.counts()
        delivered = c.get("delivered", 0)
        if delivered == 0:
            raise StepFailed(f"nothing delivered in {secs:.0f} s ({c}); {h.log_tail()}")
        rate = delivered / secs
        cpu = meter[f"cpu_s:{h.pid}"]
        cs_per = meter[f"cs:{h.pid}"] / delivered
        rss_kib = h.hwm()
        self.r.raw[key] = dict(
            deliveries=deliveries, delivered=delivered, seconds=secs, left=left, rate=rate,
            hookfan_cpu_s=cpu, context_switches_per_delivery=cs_per, sink_received=self.sink.count() - sink_before,
            dead=c.get("dead", 0), postgres_cores=meter.get("postgres_cores"), peak_rss_kib=rss_kib,
        )
        status = f"all in {secs:.1f} s" if left == 0 else f"{delivered:,} in {secs:.0f} s, {left:,} left (capped)"
        extra = (f"; {c.get('dead', 0):,} dead" if c.get("dead") else "") + postgres_cores(meter)
        self.r.add(Row(
            step, what,
            f"{fmt_int(rate)} deliveries/s ({status}; hookfan {cpu / secs:.2f} cores, "
            f"{cpu / delivered * 1000:.2f} ms CPU and {cs_per:.0f} context switches each"
            f"{f', peak RSS {rss_kib / 1024:.1f} MiB' if rss_kib else ''}{extra})",
            bound=f"sink {fmt_int(self.sink_ceiling)}/s" if self.sink_ceiling else "",
            ratio=pct(rate / self.sink_ceiling) if self.sink_ceiling else "",
            target="≥ 5,000/s",
        ), meter)
        self.note_hwm(h, label)

    # 6. PostgreSQL ----------------------------------------------------------------------------

    def postgres(self, pg: PgServer) -> None:
        """Accept and drain again with the store in PostgreSQL (on this machine: the server
        shares the two cores with everything else, and its CPU is printed beside hookfan's)."""
        Meter.with_postgres = True
        try:
            ceilings: dict[int, float] = {}
            for conns in (32, 128):
                h = Hookfan(self.hookfan, self.workdir(f"pg-accept-c{conns}"), dest_file("archive", enabled=False),
                            pg=pg.schema(f"accept_c{conns}"))
                self._ceiling_and_accept(h, conns, "6 postgres", "PostgreSQL: ", ceilings, key="pg_")
            if self.sink is None:
                self.r.fail("6 postgres", "PostgreSQL: backlog drain", StepFailed("no sink"))
                return
            n = self.plan.backlog
            for conc in (4, 64):
                what = "PostgreSQL: " + self._drain_what(n, 1, conc)
                h = None
                try:
                    schema = pg.schema(f"drain_c{conc}")
                    # hookfan creates the tables, then the backlog is written straight in.
                    first = Hookfan(self.hookfan, self.workdir(f"pg-migrate-c{conc}"), "", pg=schema)
                    try:
                        first.start()
                    finally:
                        self._stop(first, "6 postgres")
                    log(f"  filling PostgreSQL: {n:,} notifications × 1")
                    secs = schema.fill(n, ["d1"])
                    log(f"  filled in {secs:.1f} s")
                    h = Hookfan(self.hookfan, self.workdir(f"pg-drain-c{conc}"),
                                dest_webhook("d1", self.sink.port, conc), pg=schema)
                    self._drain(h, what, n, "6 postgres", f"pg_drain_1x_c{conc}", f"PostgreSQL drain, concurrency {conc}")
                except Exception as e:  # noqa: BLE001
                    self.r.fail("6 postgres", what, e)
                finally:
                    if h is not None:
                        self._stop(h, "6 postgres")
        finally:
            Meter.with_postgres = False
            pg.drop_all()

    # 5. Memory and start-up ------------------------------------------------------------------

    def memory_and_startup(self) -> None:
        if self.hwm:
            kib, where = max(self.hwm)
            self.r.raw["peak_rss_kib_2_4"] = {"kib": kib, "where": where, "all": self.hwm}
            self.r.add(Row("5 memory", "Peak RSS (VmHWM) of hookfan during 2–4",
                           f"{kib / 1024:.1f} MiB (in: {where})"))
        what = "Ready: launch → GET /readyz 200, new empty store"
        try:
            times = []
            for i in range(self.plan.ready_repeats):
                h = Hookfan(self.hookfan, self.workdir(f"ready-empty-{i}"), dest_file("archive", enabled=True))
                try:
                    times.append(h.start())
                finally:
                    self._stop(h, "5 start-up")
            self.r.raw["ready_empty_ms"] = times
            self.r.add(Row("5 start-up", what,
                           f"{statistics.median(times):.0f} ms" + (f" (median of {len(times)}: {', '.join(f'{t:.0f}' for t in times)})" if len(times) > 1 else "")))
        except Exception as e:  # noqa: BLE001
            self.r.fail("5 start-up", what, e)

        n = self.plan.pending
        what_rss = f"Peak RSS with {n:,} pending deliveries (hookfan delivering them for {self.plan.pending_run_s:.0f} s)"
        what_ready = f"Ready with {n:,} pending deliveries"
        h = None
        try:
            if self.sink is None:
                raise StepFailed("no sink")
            log(f"  filling a store: {n:,} notifications × 1")
            template = make_store(self.hookfan, self.workdir("pending-template"), n, ["d1"])
            d = template.parent
            h = Hookfan(self.hookfan, d, dest_webhook("d1", self.sink.port, 4))
            sink_before = self.sink.count()
            ready = h.start()
            self.r.raw["ready_pending_ms"] = ready
            self.r.add(Row("5 start-up", what_ready, f"{ready:.0f} ms", target="< 300 ms"))
            m = Meter.start(h.pid)
            time.sleep(self.plan.pending_run_s)
            meter = m.stop()
            sent = self.sink.count() - sink_before
            kib = h.hwm() or 0
            self.r.raw["pending_rss_kib"] = kib
            self.r.raw["pending_delivery_rate"] = sent / meter["elapsed_s"]
            self.r.add(Row("5 memory", what_rss,
                           f"{kib / 1024:.1f} MiB (it delivered {fmt_int(sent / meter['elapsed_s'])}/s meanwhile)",
                           target="< 64 MiB"), meter)
        except Exception as e:  # noqa: BLE001
            self.r.fail("5 memory", f"{what_ready} / {what_rss}", e)
        finally:
            if h is not None:
                self._stop(h, "5 memory")


# ---------------------------------------------------------------------------------------------


STEPS = ("bounds", "accept", "latency", "delivery", "memory", "postgres")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--smoke", action="store_true", help="every step for a second or two (CI)")
    ap.add_argument("--steps", default=None, help=f"comma-separated subset of {','.join(STEPS)} (default: all)")
    ap.add_argument("--bin-dir", default=os.environ.get("BENCH_BIN_DIR", str(ROOT / "target" / "release")))
    ap.add_argument("--out-dir", default=str(ROOT / "target" / "bench"))
    ap.add_argument("--keep", action="store_true", help="keep the stores and logs under the out dir")
    args = ap.parse_args()
    smoke = args.smoke or os.environ.get("BENCH_SMOKE", "") not in ("", "0")
    steps = [s.strip() for s in (args.steps or ",".join(STEPS)).split(",") if s.strip()]
    unknown = set(steps) - set(STEPS)
    if unknown:
        ap.error(f"unknown steps: {', '.join(sorted(unknown))}")
    plan = Plan.make(smoke)

    bins = Path(args.bin_dir).resolve()
    for b in (bins / "hookfan", bins / "examples" / "bench_sink", bins / "examples" / "bench_load"):
        if not os.access(b, os.X_OK):
            print(f"bench: {b} is missing; build it first (bench/run does)", file=sys.stderr)
            return 2
    if not shutil.which("wrk"):
        print("bench: wrk is missing (bench/run installs it)", file=sys.stderr)
        return 2

    out_dir = Path(args.out_dir)
    stamp = dt.datetime.now().strftime("%Y%m%d-%H%M%S")
    work = out_dir / f"work-{stamp}"
    work.mkdir(parents=True, exist_ok=True)
    report = Report()
    started = dt.datetime.now(dt.timezone.utc)
    load_before = os.getloadavg()
    builders_before = busy_builders()
    info = machine(work)
    pg: PgServer | None = None
    if "postgres" in steps:
        pg = PgServer(pg_url())
        version = pg.version()
        if version is None:
            # Asked for by name, a missing server is a failure; in the default run, a skip.
            if args.steps is not None:
                print(f"bench: no PostgreSQL at {without_password(pg.url)} (set HOOKFAN_BENCH_POSTGRES_URL)",
                      file=sys.stderr)
                return 2
            log(f"  no PostgreSQL at {without_password(pg.url)}: step 6 skipped (set HOOKFAN_BENCH_POSTGRES_URL)")
            info.append(("PostgreSQL", f"none at {without_password(pg.url)}: step 6 skipped"))
            pg = None
        else:
            info.append(("PostgreSQL", f"{version}, at {without_password(pg.url)} (shares the cores)"))
    bench = Bench(plan, bins, work, report, keep=args.keep)
    log(f"{'smoke' if smoke else 'full'} run; work files in {work}")
    if builders_before:
        log(f"  note: {', '.join(builders_before)} running: figures will be disturbed")

    def on_signal(signum, _frame):
        Procs.stop_all()
        sys.exit(128 + signum)

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    builders_seen = set(builders_before)
    try:
        if "bounds" in steps:
            log("1. bounds")
            bench.fsync()
        if {"bounds", "delivery", "memory"} & set(steps):
            bench.sink_start()
        builders_seen.update(busy_builders())
        if "accept" in steps or "bounds" in steps:
            log("1-2. no-store ceiling and accept")
            bench.accept()
        builders_seen.update(busy_builders())
        if "latency" in steps:
            log("3. latency at a fixed arrival rate")
            bench.latency()
        builders_seen.update(busy_builders())
        if "delivery" in steps:
            log("4. delivery")
            bench.deliver_while_accepting()
            builders_seen.update(busy_builders())
            bench.drains()
        builders_seen.update(busy_builders())
        if "memory" in steps:
            log("5. memory and start-up")
            bench.memory_and_startup()
        builders_seen.update(busy_builders())
        if pg is not None:
            log("6. PostgreSQL")
            if bench.sink is None:
                bench.sink_start()
            bench.postgres(pg)
        builders_seen.update(busy_builders())
    finally:
        if bench.sink is not None:
            bench.sink.stop()
        Procs.stop_all()
        if not args.keep:
            shutil.rmtree(work, ignore_errors=True)

    finished = dt.datetime.now(dt.timezone.utc)
    load_after = os.getloadavg()
    disturbed = report.max_other >= 0.2 or builders_seen
    lines = [
        f"## hookfan benchmark, {started:%Y-%m-%d %H:%M} UTC ({'smoke run: figures are not measurements' if smoke else 'full run'})",
        "",
        "| Machine | |",
        "| --- | --- |",
        *[f"| {k} | {v} |" for k, v in info],
        f"| Other load | load average {load_before[0]:.2f} before, {load_after[0]:.2f} after; "
        f"other processes used up to {report.max_other:.2f} cores during a step"
        + (f"; seen running: {', '.join(sorted(builders_seen))}" if builders_seen else "")
        + (" — **disturbed**" if disturbed else " — quiet") + " |",
        f"| Duration | {(finished - started).total_seconds():.0f} s |",
        "",
        "| Step | Measurement | Result | Bound | Ratio | Target | Other load (cores) |",
        "| --- | --- | --- | --- | --- | --- | --- |",
    ]
    for row in sorted(report.rows, key=lambda r: r.step[:1]):
        lines.append(f"| {row.step} | {row.what} | {row.result} | {row.bound} | {row.ratio} | {row.target} | {row.other} |")
    if report.failures:
        lines += ["", f"**{len(report.failures)} step(s) failed to run:**", *[f"- {f}" for f in report.failures]]
    text = "\n".join(lines) + "\n"
    print(text)
    out_dir.mkdir(parents=True, exist_ok=True)
    name = f"bench-{stamp}{'-smoke' if smoke else ''}"
    (out_dir / f"{name}.md").write_text(text)
    (out_dir / f"{name}.json").write_text(json.dumps({
        "smoke": smoke, "started": started.isoformat(), "machine": dict(info),
        "max_other_cores": report.max_other, "builders_seen": sorted(builders_seen),
        "results": report.raw, "failures": report.failures,
    }, indent=2, default=str))
    shutil.copyfile(out_dir / f"{name}.md", out_dir / "latest.md")
    log(f"written to {out_dir / (name + '.md')} and .json")
    return 1 if report.failures else 0


if __name__ == "__main__":
    try:
        sys.exit(main())
    finally:
        Procs.stop_all()
