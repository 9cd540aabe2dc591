//! A loopback HTTP sink for `bench/run`: answers every request `200 OK` with an empty body as
//! soon as the body is read, and counts the requests it answered. `GET /count` returns that
//! count (and is not counted), so the harness can tell how many deliveries reached it.
//!
//! ```sh
//! cargo build --release --example bench_sink
//! target/release/examples/bench_sink --listen 127.0.0.1:18090 --workers 2
//! ```
//!
//! It must be much faster than hookfan, or it would be the bound: `bench/run` measures its
//! ceiling with the same `wrk` load it puts on hookfan and prints it beside the delivery figures.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use actix_web::{App, HttpResponse, HttpServer, web};

struct Args {
    listen: SocketAddr,
    workers: usize,
}

fn usage(problem: &str) -> std::io::Error {
    std::io::Error::new(
        std::io::ErrorKind::InvalidInput,
        format!("{problem}\nusage: bench_sink [--listen 127.0.0.1:PORT] [--workers N]"),
    )
}

fn parse_args() -> std::io::Result<Args> {
    let mut args = Args {
        listen: SocketAddr::from(([127, 0, 0, 1], 18090)),
        workers: 2,
    };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let value = it
            .next()
            .ok_or_else(|| usage(&format!("{flag} needs a value")))?;
        match flag.as_str() {
            "--listen" => {
                args.listen = value
                    .parse()
                    .map_err(|e| usage(&format!("--listen {value}: {e}")))?;
            }
            "--workers" => {
                args.workers = value
                    .parse()
                    .map_err(|e| usage(&format!("--workers {value}: {e}")))?;
            }
            other => return Err(usage(&format!("unknown option {other}"))),
        }
    }
    Ok(args)
}

/// Any method, any path: the body is read (the extractor takes it whole), counted, answered.
async fn receive(count: web::Data<Arc<AtomicU64>>, _body: web::Bytes) -> HttpResponse {
    count.fetch_add(1, Ordering::Relaxed);
    HttpResponse::Ok().finish()
}

async fn count(count: web::Data<Arc<AtomicU64>>) -> HttpResponse {
    HttpResponse::Ok()
        .content_type("text/plain")
        .body(count.load(Ordering::Relaxed).to_string())
}

#[actix_web::main]
async fn main() -> std::io::Result<()> {
    let args = parse_args()?;
    let counter = Arc::new(AtomicU64::new(0));
    let server = HttpServer::new(move || {
        App::new()
            .app_data(web::Data::new(counter.clone()))
            // Deliveries are small; the ceiling load posts the ~1.6 KB sample payload.
            .app_data(web::PayloadConfig::new(1 << 20))
            .route("/count", web::get().to(count))
            .default_service(web::to(receive))
    })
    .workers(args.workers.max(1))
    .backlog(4096)
    .bind(args.listen)?;
    println!("bench_sink listening on {}", args.listen);
    server.run().await
}
