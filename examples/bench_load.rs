//! An open-loop HTTP/1.1 load generator for `bench/run`: sends `POST`s at a fixed arrival rate,
//! whatever the server's speed, and measures each response from the moment the request was
//! *due*, not from when a connection was free to send it. A server that falls behind cannot hide
//! its queueing (no "coordinated omission", as in wrk2); `wrk` is closed-loop and cannot do this.
//!
//! Each request is the payload file with its first `"id"` value replaced by a new one, so every
//! request is a new notification; ids are shaped like Qualifio's v2 ids (UUIDs) and random like
//! them. Prints one JSON object on stdout.
//!
//! ```sh
//! cargo build --release --example bench_load
//! target/release/examples/bench_load --url http://127.0.0.1:18080/hooks/qualifio \
//!     --rate 1000 --duration 30 --payload bench/payload.json \
//!     --header 'Authorization: Bearer bench-token-0123456789'
//! ```
//!
//! A dedicated thread dispatches requests on schedule (`std::thread::sleep` is precise to well
//! under a millisecond here, unlike tokio's millisecond timer wheel); a pool of keep-alive
//! connections, opened before the clock starts, takes them in order.

use std::process::ExitCode;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use tokio::io::{AsyncBufReadExt as _, AsyncReadExt as _, AsyncWriteExt as _, BufReader};
use tokio::net::TcpStream;
use tokio::sync::{Mutex, mpsc};

struct Args {
    /// `host:port`
    address: String,
    path: String,
    rate: f64,
    duration: Duration,
    connections: usize,
    payload: String,
    headers: Vec<String>,
    timeout: Duration,
}

const USAGE: &str = "usage: bench_load --url http://HOST:PORT/PATH --rate N --duration SECONDS \
[--connections N] [--payload FILE] [--header 'Name: value']... [--timeout SECONDS]";

fn parse_args() -> Result<Args, String> {
    let mut url = None;
    let mut args = Args {
        address: String::new(),
        path: String::new(),
        rate: 1000.0,
        duration: Duration::from_secs(10),
        connections: 64,
        payload: "bench/payload.json".into(),
        headers: Vec::new(),
        timeout: Duration::from_secs(10),
    };
    let seconds = |v: &str| -> Result<Duration, String> {
        v.parse::<f64>()
            .ok()
            .filter(|s| s.is_finite() && *s > 0.0)
            .map(Duration::from_secs_f64)
            .ok_or_else(|| format!("not a number of seconds: {v}"))
    };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let value = it.next().ok_or_else(|| format!("{flag} needs a value"))?;
        match flag.as_str() {
            "--url" => url = Some(value),
            "--rate" => {
                args.rate = value
                    .parse::<f64>()
                    .ok()
                    .filter(|r| r.is_finite() && *r > 0.0)
                    .ok_or_else(|| format!("--rate {value}: not a positive number"))?;
            }
            "--duration" => args.duration = seconds(&value)?,
            "--timeout" => args.timeout = seconds(&value)?,
            "--connections" => {
                args.connections = value
                    .parse::<usize>()
                    .ok()
                    .filter(|c| *c > 0)
                    .ok_or_else(|| format!("--connections {value}: not a positive integer"))?;
            }
            "--payload" => args.payload = value,
            "--header" => args.headers.push(value),
            other => return Err(format!("unknown option {other}")),
        }
    }
    let url = url.ok_or("--url is required")?;
    let rest = url
        .strip_prefix("http://")
        .ok_or_else(|| format!("--url {url}: only http:// is supported"))?;
    let (address, path) = match rest.find('/') {
        Some(i) => (&rest[..i], &rest[i..]),
        None => (rest, "/"),
    };
    args.address = address.to_owned();
    args.path = path.to_owned();
    Ok(args)
}

/// The payload split around its first `"id"` string value.
struct Template {
    head: Vec<u8>,
    before_id: String,
    after_id: String,
    /// Seeds the ids of this run.
    run: u64,
}

impl Template {
    fn new(args: &Args) -> Result<Template, String> {
        let body = std::fs::read_to_string(&args.payload)
            .map_err(|e| format!("cannot read {}: {e}", args.payload))?;
        let key = body
            .find("\"id\"")
            .ok_or_else(|| format!("{} has no \"id\"", args.payload))?;
        let open = body[key + 4..]
            .find('"')
            .map(|i| key + 4 + i + 1)
            .ok_or("no value after \"id\"")?;
        let close = body[open..]
            .find('"')
            .map(|i| open + i)
            .ok_or("unterminated \"id\" value")?;
        let mut head = format!(
            "POST {} HTTP/1.1\r\nHost: {}\r\nContent-Type: application/json\r\n",
            args.path, args.address
        );
        for h in &args.headers {
            head.push_str(h);
            head.push_str("\r\n");
        }
        let nanos = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or_default();
        Ok(Template {
            head: head.into_bytes(),
            before_id: body[..open].to_owned(),
            after_id: body[close..].to_owned(),
            run: (nanos as u64) ^ u64::from(std::process::id()).rotate_left(48),
        })
    }

    fn request(&self, seq: u64, out: &mut Vec<u8>) {
        // Random-looking where a UUID is (from the run and `seq`), and `seq` itself at the end,
        // so no two ids of a run are the same.
        let r = splitmix64(self.run ^ seq);
        let body = format!(
            "{}{:08x}-{:04x}-4{:03x}-{:04x}-{:012x}{}",
            self.before_id,
            r >> 32,
            (r >> 16) & 0xffff,
            r & 0xfff,
            0x8000 | (splitmix64(r) & 0x3fff),
            seq & 0xffff_ffff_ffff,
            self.after_id
        );
        out.clear();
        out.extend_from_slice(&self.head);
        out.extend_from_slice(format!("Content-Length: {}\r\n\r\n", body.len()).as_bytes());
        out.extend_from_slice(body.as_bytes());
    }
}

struct Job {
    seq: u64,
    due: Instant,
}

#[derive(Default)]
struct Tally {
    /// Microseconds from due time to the whole response, and from sending to it.
    latency_us: Vec<u64>,
    service_us: Vec<u64>,
    ok: u64,
    non_2xx: u64,
    errors: u64,
    timeouts: u64,
    not_sent: u64,
    last_done: Option<Instant>,
}

type Conn = BufReader<TcpStream>;

async fn connect(address: &str) -> std::io::Result<Conn> {
    let stream = TcpStream::connect(address).await?;
    stream.set_nodelay(true)?;
    Ok(BufReader::new(stream))
}

/// Sends one request and reads the whole response: its status, and whether the connection
/// may be used again.
async fn exchange(
    conn: &mut Conn,
    request: &[u8],
    scratch: &mut Vec<u8>,
) -> std::io::Result<(u16, bool)> {
    let bad = |m: &str| std::io::Error::new(std::io::ErrorKind::InvalidData, m.to_owned());
    conn.get_mut().write_all(request).await?;
    let mut line = String::new();
    if conn.read_line(&mut line).await? == 0 {
        return Err(std::io::ErrorKind::UnexpectedEof.into());
    }
    let status: u16 = line
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| bad("no status line"))?;
    let mut length: Option<usize> = None;
    let mut chunked = false;
    let mut keep_alive = true;
    loop {
        line.clear();
        if conn.read_line(&mut line).await? == 0 {
            return Err(std::io::ErrorKind::UnexpectedEof.into());
        }
        let header = line.trim_end();
        if header.is_empty() {
            break;
        }
        if let Some((name, value)) = header.split_once(':') {
            let value = value.trim();
            if name.eq_ignore_ascii_case("content-length") {
                length = Some(value.parse().map_err(|_| bad("bad content-length"))?);
            } else if name.eq_ignore_ascii_case("transfer-encoding") {
                chunked = value.eq_ignore_ascii_case("chunked");
            } else if name.eq_ignore_ascii_case("connection") {
                keep_alive = !value.eq_ignore_ascii_case("close");
            }
        }
    }
    if chunked {
        loop {
            line.clear();
            conn.read_line(&mut line).await?;
            let size = usize::from_str_radix(line.trim().split(';').next().unwrap_or(""), 16)
                .map_err(|_| bad("bad chunk size"))?;
            if size == 0 {
                // Trailers, then the blank line.
                loop {
                    line.clear();
                    if conn.read_line(&mut line).await? == 0 || line.trim_end().is_empty() {
                        break;
                    }
                }
                break;
            }
            scratch.resize(size + 2, 0);
            conn.read_exact(scratch).await?;
        }
    } else if let Some(n) = length {
        scratch.resize(n, 0);
        conn.read_exact(scratch).await?;
    } else {
        return Err(bad("neither content-length nor chunked"));
    }
    Ok((status, keep_alive))
}

/// One request on the worker's connection, opening a new one if the last was closed.
async fn attempt(
    conn: &mut Option<Conn>,
    address: &str,
    request: &[u8],
    scratch: &mut Vec<u8>,
) -> std::io::Result<(u16, bool)> {
    if conn.is_none() {
        *conn = Some(connect(address).await?);
    }
    match conn.as_mut() {
        Some(c) => exchange(c, request, scratch).await,
        None => Err(std::io::ErrorKind::NotConnected.into()),
    }
}

async fn worker(
    jobs: Arc<Mutex<mpsc::UnboundedReceiver<Job>>>,
    mut conn: Option<Conn>,
    template: Arc<Template>,
    address: Arc<str>,
    timeout: Duration,
    hard_deadline: Instant,
) -> Tally {
    let mut tally = Tally::default();
    let mut request = Vec::with_capacity(4096);
    let mut scratch = Vec::with_capacity(1024);
    loop {
        let job = { jobs.lock().await.recv().await };
        let Some(job) = job else { break };
        if Instant::now() > hard_deadline {
            tally.not_sent += 1;
            continue;
        }
        template.request(job.seq, &mut request);
        let sent = Instant::now();
        let result = tokio::time::timeout(
            timeout,
            attempt(&mut conn, &address, &request, &mut scratch),
        )
        .await;
        let done = Instant::now();
        match result {
            Ok(Ok((status, keep_alive))) => {
                tally
                    .latency_us
                    .push(done.saturating_duration_since(job.due).as_micros() as u64);
                tally
                    .service_us
                    .push(done.saturating_duration_since(sent).as_micros() as u64);
                if (200..300).contains(&status) {
                    tally.ok += 1;
                } else {
                    tally.non_2xx += 1;
                }
                tally.last_done = Some(done);
                if !keep_alive {
                    conn = None;
                }
            }
            Ok(Err(_)) => {
                tally.errors += 1;
                conn = None;
            }
            Err(_) => {
                tally.timeouts += 1;
                conn = None;
            }
        }
    }
    tally
}

fn percentile(sorted: &[u64], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    // Nearest rank.
    let rank = ((p / 100.0) * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1] as f64 / 1000.0
}

fn summary(values: &mut [u64]) -> serde_json::Value {
    values.sort_unstable();
    serde_json::json!({
        "p50": percentile(values, 50.0),
        "p90": percentile(values, 90.0),
        "p99": percentile(values, 99.0),
        "p99_9": percentile(values, 99.9),
        "max": values.last().map_or(f64::NAN, |v| *v as f64 / 1000.0),
    })
}

async fn run(args: Args) -> Result<serde_json::Value, String> {
    let template = Arc::new(Template::new(&args)?);
    let address: Arc<str> = args.address.as_str().into();
    let mut conns = Vec::with_capacity(args.connections);
    for _ in 0..args.connections {
        conns.push(
            connect(&address)
                .await
                .map_err(|e| format!("cannot connect to {address}: {e}"))?,
        );
    }
    let (tx, rx) = mpsc::unbounded_channel::<Job>();
    let rx = Arc::new(Mutex::new(rx));
    let total = (args.rate * args.duration.as_secs_f64()).round() as u64;
    let interval = Duration::from_secs_f64(1.0 / args.rate);
    let start = Instant::now() + Duration::from_millis(20);
    let hard_deadline = start + args.duration + args.timeout;
    let mut workers = Vec::with_capacity(conns.len());
    for conn in conns {
        workers.push(tokio::spawn(worker(
            rx.clone(),
            Some(conn),
            template.clone(),
            address.clone(),
            args.timeout,
            hard_deadline,
        )));
    }
    // The clock: one thread, sleeping to each due time; it never waits for a response.
    let dispatcher = std::thread::spawn(move || {
        let mut max_lag = Duration::ZERO;
        for seq in 0..total {
            let due = start + interval.mul_f64(seq as f64);
            let now = Instant::now();
            if due > now {
                std::thread::sleep(due - now);
            }
            max_lag = max_lag.max(Instant::now().saturating_duration_since(due));
            if tx.send(Job { seq, due }).is_err() {
                break;
            }
        }
        max_lag
    });
    let mut tally = Tally::default();
    for w in workers {
        let t = w.await.map_err(|e| format!("a worker failed: {e}"))?;
        tally.latency_us.extend(t.latency_us);
        tally.service_us.extend(t.service_us);
        tally.ok += t.ok;
        tally.non_2xx += t.non_2xx;
        tally.errors += t.errors;
        tally.timeouts += t.timeouts;
        tally.not_sent += t.not_sent;
        tally.last_done = tally.last_done.max(t.last_done);
    }
    let max_lag = dispatcher
        .join()
        .map_err(|_| "the dispatcher thread panicked".to_owned())?;
    let completed = tally.ok + tally.non_2xx;
    let elapsed = tally
        .last_done
        .map_or(0.0, |d| d.saturating_duration_since(start).as_secs_f64());
    let achieved_rate = if elapsed > 0.0 {
        completed as f64 / elapsed
    } else {
        0.0
    };
    Ok(serde_json::json!({
        "target_rate": args.rate,
        "duration_s": args.duration.as_secs_f64(),
        "connections": args.connections,
        "scheduled": total,
        "completed": completed,
        "ok": tally.ok,
        "non_2xx": tally.non_2xx,
        "errors": tally.errors,
        "timeouts": tally.timeouts,
        "not_sent": tally.not_sent,
        "achieved_rate": achieved_rate,
        "dispatch_max_lag_ms": max_lag.as_secs_f64() * 1000.0,
        "latency_ms": summary(&mut tally.latency_us),
        "service_ms": summary(&mut tally.service_us),
    }))
}

fn main() -> ExitCode {
    let args = match parse_args() {
        Ok(a) => a,
        Err(e) => {
            eprintln!("bench_load: {e}\n{USAGE}");
            return ExitCode::from(2);
        }
    };
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => {
            eprintln!("bench_load: cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(run(args)) {
        Ok(report) => {
            println!("{report}");
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("bench_load: {e}");
            ExitCode::FAILURE
        }
    }
}

/// A well-mixed 64-bit value of `x` (SplitMix64's finaliser): ids that look random without a
/// random-number crate.
fn splitmix64(x: u64) -> u64 {
    let mut z = x.wrapping_add(0x9e37_79b9_7f4a_7c15);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}
