//! Streams and long requests through the proxy across a swap, as real applications have them: a
//! WebSocket and a server-sent event stream opened before a deploy, and a 100 MB upload and a
//! 10 s request sent while it switches. New requests reach the new release at once; what was open stays on the
//! previous container until it is done or `drain-timeout` runs out, never cut at the switch.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use super::support::{http_get, unique, ActionRun, Bed};
use super::{inputs, run_with, set};

const DRAIN: u64 = 12;
const UPLOAD: usize = 100 * 1024 * 1024;

/// Lines read from a stream with the moment each came; the last entry is the end (`None`).
type Timeline = Arc<Mutex<Vec<(Instant, Option<String>)>>>;

#[test]
fn a_websocket_an_event_stream_and_an_upload_in_flight_ride_out_a_deploy() {
    let bed = Bed::load();
    let suite = unique("s");
    let web = bed.fleet_in(&suite, 1, &["Role=web"]);
    let repo = unique("streams");
    bed.create_repository(&repo);
    let release = |tag: &str| {
        let mut i = inputs(&bed, &repo, &suite, tag, &format!("VERSION={tag}"));
        set(&mut i, "drain-timeout", &DRAIN.to_string());
        i
    };
    let r = run_with(&bed, release("v1"));
    assert_eq!(r.code, 0, "{}", r.log());
    assert!(r.stdout.contains(&format!("keep the previous container up to {DRAIN}s (drain-timeout)")), "{}", r.stdout);
    let addr = format!("{}:3000", web.ips[0]);

    // A WebSocket: a message every 500 ms, each answer with the time it came.
    let (mut socket, _) =
        tungstenite::client(format!("ws://{addr}/ws"), TcpStream::connect(&addr).unwrap()).expect("the upgrade");
    let websocket: Timeline = Arc::default();
    let ws_thread = {
        let websocket = websocket.clone();
        std::thread::spawn(move || {
            for n in 0.. {
                let answer = socket.send(tungstenite::Message::text(format!("m{n}"))).and_then(|()| socket.read());
                match answer {
                    Ok(tungstenite::Message::Text(t)) => {
                        websocket.lock().unwrap().push((Instant::now(), Some(t.to_string())))
                    }
                    Ok(_) => continue,
                    Err(_) => break,
                }
                std::thread::sleep(Duration::from_millis(500));
            }
            websocket.lock().unwrap().push((Instant::now(), None));
        })
    };
    // An event stream, read as it comes.
    let events: Timeline = Arc::default();
    let sse_thread = {
        let (events, addr) = (events.clone(), addr.clone());
        std::thread::spawn(move || {
            let mut stream = TcpStream::connect(&addr).unwrap();
            // Connection: close: the end of the stream is the end of the connection (else the proxy
            // ends the chunked response and keeps the connection for another request).
            stream
                .write_all(
                    b"GET /events HTTP/1.1\r\nHost: app\r\nAccept: text/event-stream\r\nConnection: close\r\n\r\n",
                )
                .unwrap();
            for line in BufReader::new(stream).lines() {
                match line {
                    Ok(l) if l.starts_with("data: ") => {
                        events.lock().unwrap().push((Instant::now(), Some(l[6..].to_string())))
                    }
                    Ok(_) => {}
                    Err(_) => break,
                }
            }
            events.lock().unwrap().push((Instant::now(), None));
        })
    };
    // The moment the proxy sends new requests to v2.
    let switched = Arc::new(Mutex::new(None::<Instant>));
    let watch = {
        let (switched, addr) = (switched.clone(), addr.clone());
        std::thread::spawn(move || {
            let deadline = Instant::now() + Duration::from_secs(120);
            while Instant::now() < deadline {
                if http_get(&format!("http://{addr}/version")).is_some_and(|(_, b)| b.trim() == "v2") {
                    *switched.lock().unwrap() = Some(Instant::now());
                    return;
                }
                std::thread::sleep(Duration::from_millis(100));
            }
        })
    };

    let borrowed: Vec<(String, String)> = release("v2");
    let borrowed: Vec<(&str, &str)> = borrowed.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
    let action = ActionRun::new(&borrowed);
    let deploy = action.spawn(&bed);
    // 100 MB, paced over 8 s from the deploy's start: in flight when it switches.
    let upload = std::thread::spawn({
        let addr = addr.clone();
        move || {
            let mut stream = TcpStream::connect(&addr).unwrap();
            let head =
                format!("POST /upload HTTP/1.1\r\nHost: app\r\nContent-Length: {UPLOAD}\r\nConnection: close\r\n\r\n");
            stream.write_all(head.as_bytes()).unwrap();
            let chunk = vec![b'x'; 1024 * 1024];
            let started = Instant::now();
            let mut answer = String::new();
            let sent = (0..UPLOAD / chunk.len()).try_for_each(|n| {
                stream.write_all(&chunk)?;
                let due = Duration::from_millis(80 * (n as u64 + 1));
                std::thread::sleep(due.saturating_sub(started.elapsed()));
                Ok::<(), std::io::Error>(())
            });
            if let Err(e) = sent.and_then(|()| stream.read_to_string(&mut answer).map(|_| ())) {
                answer = format!("the upload was cut: {e}");
            }
            (started, Instant::now(), answer)
        }
    });
    // A request that takes 10 s, sent as the deploy starts.
    let slow = std::thread::spawn({
        let addr = addr.clone();
        move || {
            let started = Instant::now();
            let mut stream = TcpStream::connect(&addr).unwrap();
            stream.write_all(b"GET /slow?seconds=10 HTTP/1.1\r\nHost: app\r\nConnection: close\r\n\r\n").unwrap();
            let mut answer = String::new();
            let _ = stream.read_to_string(&mut answer);
            (started, answer, Instant::now())
        }
    });
    let r = deploy.wait();
    assert_eq!(r.code, 0, "{}", r.log());
    watch.join().unwrap();
    let (upload_started, upload_done, answer) = upload.join().unwrap();
    let (slow_started, slow_answer, slow_done) = slow.join().unwrap();
    ws_thread.join().unwrap();
    sse_thread.join().unwrap();
    let switched = switched.lock().unwrap().expect("new requests never reached v2");

    // The upload was under way when new requests went to v2, and it completed, whole.
    println!(
        "upload: started {:?} before the switch, done {:?} after it",
        switched - upload_started,
        upload_done - switched
    );
    assert!(upload_started < switched && upload_done > switched, "the upload was not in flight at the switch");
    assert!(answer.starts_with("HTTP/1.1 200") && answer.contains(&format!("received {UPLOAD} bytes")), "{answer}");
    // So was the slow request, answered by the previous container.
    println!(
        "slow request: started {:?} before the switch, answered {:?} after it",
        switched - slow_started,
        slow_done - switched
    );
    assert!(slow_started < switched && slow_done > switched, "the slow request was not in flight at the switch");
    assert!(slow_answer.starts_with("HTTP/1.1 200") && slow_answer.ends_with("\r\n\r\nv1\n"), "{slow_answer}");
    for (what, timeline) in [("the WebSocket", &websocket), ("the event stream", &events)] {
        let timeline = timeline.lock().unwrap();
        let (ended, _) = *timeline.last().unwrap();
        let answers: Vec<&(Instant, Option<String>)> = timeline.iter().filter(|(_, l)| l.is_some()).collect();
        // Every answer came from the previous container, also after the switch …
        assert!(answers.iter().all(|(_, l)| l.as_deref().unwrap().starts_with("v1")), "{what}: {answers:?}");
        assert!(answers.iter().any(|(t, _)| *t > switched + Duration::from_secs(DRAIN - 4)), "{what} went quiet early");
        // … until the drain timeout ran out (not cut at the switch), when the container stopped.
        let open_after_switch = ended.duration_since(switched);
        println!(
            "{what}: {} answers, the last {:?} after the switch, ended {open_after_switch:?} after it",
            answers.len(),
            answers.last().map(|(t, _)| t.duration_since(switched))
        );
        assert!(
            open_after_switch >= Duration::from_secs(DRAIN - 2) && open_after_switch < Duration::from_secs(DRAIN + 10),
            "{what} ended {open_after_switch:?} after the switch (drain-timeout {DRAIN}s)"
        );
    }
}
