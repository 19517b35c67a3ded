//! The demo service that ec2-deploy ships in the demo, the tests and the benchmarks.
//!
//! It is built as a static binary into a `FROM scratch` image, so it needs no base image:
//!
//! - `GET /health` — 200, or 503 depending on `DEMO_HEALTH` (how tests make bad releases):
//!   `ok` (default), `fail`, `tcp:HOST:PORT` (healthy while a dependency at HOST:PORT accepts
//!   connections; a test cuts one instance off it), `delay:N` (unhealthy for N seconds after start),
//!   `crash:N` (healthy, but the process exits with 1 after N seconds: a crash loop under a restart
//!   policy);
//! - `GET /version` — the release it was built as (`DEMO_VERSION`, set by the image);
//! - `GET /env` — the *names* of the environment variables it received, one per line. Never
//!   values: tests use it to check that a secret's keys arrived without reading them.
//! - `GET /forwarded` — what a framework behind a proxy reads to tell the client and the scheme:
//!   `peer=<address> for=<X-Forwarded-For> proto=<X-Forwarded-Proto> host=<X-Forwarded-Host>`
//!   (`-` for a header that is absent).
//!
//! - `GET /events` — a server-sent event stream: `data: <version> <n>` every 500 ms until the
//!   client leaves (`?count=N` ends it after N events), each event written at once (no buffering).
//! - `GET /ws` — a WebSocket (RFC 6455, with `tungstenite`) that answers each text message with
//!   `<version>: <message>`, until the client closes it.
//! - `POST /upload` — reads the request body (`Content-Length`) and answers `<version> received N
//!   bytes`.
//! - `GET /slow?seconds=N` — answers `<version>` after N seconds (a long request).
//! - `GET /log?text=WORD` — prints `WORD` on its standard output (a line the logs must show).
//!
//! `demo-app --probe` asks the server on 127.0.0.1 for `/health` and exits 0 or 1, so the image
//! can declare its own `HEALTHCHECK` without a shell or curl.
//!
//! `demo-app --length-of FILE OUT` writes the length in bytes of FILE into OUT and exits: a
//! Dockerfile step without a shell (`RUN --mount=type=secret,id=… ["/demo-app", "--length-of",
//! "/run/secrets/…", "/secret-length"]`), with which tests show a build secret reached the build
//! without putting its value anywhere.
//!
//! `demo-app --stamp OUT` writes the time in nanoseconds since the epoch into OUT and exits: a
//! Dockerfile step whose result differs every time it really runs (`RUN ["/demo-app", "--stamp",
//! "/built-at"]`), with which tests tell a step that ran from one taken from a layer cache.
//!
//! `demo-app --exit N` prints a line and exits with N: a one-off command (a migration) that fails.
//!
//! `DEMO_LOG_ENV=NAME,…` makes it print `NAME=value` for those variables when it starts (as a
//! server or for `--exit`): an app
//! that logs its configuration, secrets included, as real ones do (tests check that ec2-deploy
//! masks such values in what it shows of a failing container).

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::time::{Duration, Instant};

fn port() -> u16 {
    std::env::var("PORT").ok().and_then(|p| p.parse().ok()).unwrap_or(3000)
}

fn main() {
    if std::env::args().nth(1).as_deref() == Some("--probe") {
        std::process::exit(if probe() { 0 } else { 1 });
    }
    for name in std::env::var("DEMO_LOG_ENV").unwrap_or_default().split(',').filter(|n| !n.is_empty()) {
        println!("{name}={}", std::env::var(name).unwrap_or_default());
    }
    if std::env::args().nth(1).as_deref() == Some("--exit") {
        let code: i32 = std::env::args().nth(2).and_then(|n| n.parse().ok()).unwrap_or(1);
        println!("demo-app: migration 7 failed, exiting with {code} as asked");
        std::process::exit(code);
    }
    if std::env::args().nth(1).as_deref() == Some("--stamp") {
        let Some(out) = std::env::args().nth(2) else {
            eprintln!("usage: demo-app --stamp OUT");
            std::process::exit(2)
        };
        let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap_or_default();
        std::fs::write(&out, now.as_nanos().to_string()).unwrap_or_else(|e| {
            eprintln!("demo-app: {out}: {e}");
            std::process::exit(1)
        });
        return;
    }
    if std::env::args().nth(1).as_deref() == Some("--length-of") {
        let args: Vec<String> = std::env::args().skip(2).collect();
        let [file, out] = &args[..] else {
            eprintln!("usage: demo-app --length-of FILE OUT");
            std::process::exit(2)
        };
        let length = std::fs::metadata(file).map(|m| m.len()).unwrap_or_else(|e| {
            eprintln!("demo-app: {file}: {e}");
            std::process::exit(1)
        });
        std::fs::write(out, length.to_string()).unwrap_or_else(|e| {
            eprintln!("demo-app: {out}: {e}");
            std::process::exit(1)
        });
        return;
    }
    // PID 1 in a container gets no default action for SIGTERM: exit at once when asked to stop.
    // Requests are drained by the load balancer before a stop, so nothing is in flight here.
    unsafe {
        libc::signal(libc::SIGTERM, on_term as *const () as libc::sighandler_t);
        libc::signal(libc::SIGINT, on_term as *const () as libc::sighandler_t);
    }
    STARTED.get_or_init(Instant::now);
    if let Some(secs) =
        std::env::var("DEMO_HEALTH").ok().and_then(|h| h.strip_prefix("crash:").and_then(|n| n.parse::<u64>().ok()))
    {
        std::thread::spawn(move || {
            std::thread::sleep(Duration::from_secs(secs));
            eprintln!("demo-app: crashing, as DEMO_HEALTH=crash:{secs} asks");
            std::process::exit(1);
        });
    }
    let listener = TcpListener::bind(("0.0.0.0", port())).unwrap_or_else(|e| {
        eprintln!("demo-app: cannot listen on port {}: {e}", port());
        std::process::exit(1)
    });
    eprintln!("demo-app {} listening on {}", version(), port());
    for stream in listener.incoming().flatten() {
        std::thread::spawn(move || {
            let _ = serve(stream);
        });
    }
}

extern "C" fn on_term(_: libc::c_int) {
    unsafe { libc::_exit(0) }
}

static STARTED: std::sync::OnceLock<Instant> = std::sync::OnceLock::new();

fn healthy() -> bool {
    let setting = std::env::var("DEMO_HEALTH").unwrap_or_default();
    if setting == "fail" {
        return false;
    }
    if let Some(addr) = setting.strip_prefix("tcp:") {
        return addr
            .parse::<std::net::SocketAddr>()
            .is_ok_and(|a| TcpStream::connect_timeout(&a, Duration::from_secs(1)).is_ok());
    }
    if let Some(secs) = setting.strip_prefix("delay:").and_then(|n| n.parse::<u64>().ok()) {
        return STARTED.get().is_some_and(|t| t.elapsed() >= Duration::from_secs(secs));
    }
    true
}

fn version() -> String {
    std::env::var("DEMO_VERSION").unwrap_or_else(|_| "dev".into())
}

fn serve(mut stream: TcpStream) -> std::io::Result<()> {
    stream.set_nodelay(true)?;
    stream.set_read_timeout(Some(Duration::from_secs(10)))?;
    let mut reader = BufReader::new(stream.try_clone()?);
    let mut request_line = String::new();
    reader.read_line(&mut request_line)?;
    // Headers up to the blank line (the forwarded ones kept); the body (if any) is ignored.
    let mut forwarded =
        [("x-forwarded-for", String::from("-")), ("x-forwarded-proto", "-".into()), ("x-forwarded-host", "-".into())];
    let (mut length, mut websocket_key) = (0u64, None);
    loop {
        let mut line = String::new();
        if reader.read_line(&mut line)? == 0 || line == "\r\n" || line == "\n" {
            break;
        }
        if let Some((name, value)) = line.split_once(':') {
            for (wanted, seen) in forwarded.iter_mut() {
                if name.trim().eq_ignore_ascii_case(wanted) {
                    *seen = value.trim().to_string();
                }
            }
            if name.trim().eq_ignore_ascii_case("content-length") {
                length = value.trim().parse().unwrap_or(0);
            }
            if name.trim().eq_ignore_ascii_case("sec-websocket-key") {
                websocket_key = Some(value.trim().to_string());
            }
        }
    }
    let target = request_line.split_whitespace().nth(1).unwrap_or("/");
    let (path, query) = target.split_once('?').unwrap_or((target, ""));
    let number =
        |name: &str| query.split('&').find_map(|kv| kv.strip_prefix(name)?.strip_prefix('=')?.parse::<u64>().ok());
    match (path, websocket_key) {
        ("/ws", Some(key)) => return websocket(stream, &key),
        ("/events", _) => return events(stream, number("count")),
        _ => {}
    }
    let (status, body) = match path {
        "/upload" => {
            stream.set_read_timeout(Some(Duration::from_secs(60)))?;
            let received = std::io::copy(&mut reader.by_ref().take(length), &mut std::io::sink())?;
            ("200 OK", format!("{} received {received} bytes\n", version()))
        }
        "/log" => {
            let text = query.split('&').find_map(|kv| kv.strip_prefix("text=")).unwrap_or("-");
            println!("{text}");
            ("200 OK", "logged\n".to_string())
        }
        "/slow" => {
            std::thread::sleep(Duration::from_secs(number("seconds").unwrap_or(1)));
            ("200 OK", format!("{}\n", version()))
        }
        "/health" if healthy() => ("200 OK", "ok\n".to_string()),
        "/health" => ("503 Service Unavailable", "unhealthy\n".to_string()),
        "/version" => ("200 OK", format!("{}\n", version())),
        "/env" => {
            let mut names: Vec<String> = std::env::vars_os().map(|(k, _)| k.to_string_lossy().into_owned()).collect();
            names.sort();
            ("200 OK", names.join("\n") + "\n")
        }
        "/forwarded" => {
            let peer = stream.peer_addr().map(|a| a.ip().to_string()).unwrap_or_else(|_| "-".into());
            let [(_, f), (_, p), (_, h)] = &forwarded;
            ("200 OK", format!("peer={peer} for={f} proto={p} host={h}\n"))
        }
        "/" => ("200 OK", format!("demo-app {}\n", version())),
        _ => ("404 Not Found", "not found\n".to_string()),
    };
    // One write of the whole answer: written in pieces, Nagle's algorithm and the client's
    // delayed ACK would hold the tail back ~40 ms.
    let answer = format!(
        "HTTP/1.1 {status}\r\nContent-Type: text/plain\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    stream.write_all(answer.as_bytes())?;
    stream.flush()
}

/// Server-sent events: one every 500 ms, each written (and sent) on its own.
fn events(mut stream: TcpStream, count: Option<u64>) -> std::io::Result<()> {
    stream.write_all(b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nCache-Control: no-cache\r\n\r\n")?;
    for n in 1.. {
        stream.write_all(format!("data: {} {n}\n\n", version()).as_bytes())?;
        stream.flush()?;
        if count.is_some_and(|c| n >= c) {
            return Ok(());
        }
        std::thread::sleep(Duration::from_millis(500));
    }
    Ok(())
}

/// A WebSocket that echoes each text message with the version, until the client closes it. The
/// request was read above: the handshake's answer, then tungstenite for the frames.
fn websocket(mut stream: TcpStream, key: &str) -> std::io::Result<()> {
    use tungstenite::protocol::{Role, WebSocket};
    use tungstenite::Message;
    let accept = tungstenite::handshake::derive_accept_key(key.as_bytes());
    stream.write_all(
        format!("HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Accept: {accept}\r\n\r\n")
            .as_bytes(),
    )?;
    stream.set_read_timeout(None)?;
    let mut socket = WebSocket::from_raw_socket(stream, Role::Server, None);
    loop {
        match socket.read() {
            Ok(Message::Text(text)) => {
                let _ = socket.send(Message::text(format!("{}: {text}", version())));
            }
            Ok(Message::Close(_)) | Err(_) => return Ok(()),
            Ok(_) => {}
        }
    }
}

fn probe() -> bool {
    let Ok(mut stream) = TcpStream::connect_timeout(&([127, 0, 0, 1], port()).into(), Duration::from_secs(2)) else {
        return false;
    };
    let _ = stream.set_read_timeout(Some(Duration::from_secs(2)));
    if stream.write_all(b"GET /health HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n").is_err() {
        return false;
    }
    let mut answer = String::new();
    let _ = stream.read_to_string(&mut answer);
    answer.starts_with("HTTP/1.1 200")
}
