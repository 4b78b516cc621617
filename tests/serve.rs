//! `recpredict --serve` with the real binary on a loopback port and a real HTTP client:
//! SageMaker's routes, each content type and `Accept`, answers equal to the batch mode's
//! `--sagemaker --squash` lines for the same files, every error status with the server
//! still answering afterwards, dynamic batching under concurrent clients, 503 from a
//! full queue, graceful SIGTERM/SIGINT, SageMaker's `serve` container entry, and slow
//! clients (header and body timeouts, the connection cap).

use std::fs;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::mpsc;
use std::sync::{Arc, Barrier, Mutex, OnceLock};
use std::thread;
use std::time::{Duration, Instant};

use pipeline_tests::{dark_light_model, run_expect, stdout_text, tool};

struct Trained {
    _dir: tempfile::TempDir,
    model: PathBuf,
    /// (file, bytes, Content-Type, the batch mode's `--sagemaker --squash` line).
    images: Vec<(PathBuf, Vec<u8>, &'static str, String)>,
}

/// [`dark_light_model`] (2 classes at 3×28×28), and test images of other sizes (PNG and JPEG) with the
/// batch mode's answers for them.
fn trained() -> &'static Trained {
    static T: OnceLock<Trained> = OnceLock::new();
    T.get_or_init(|| {
        let dir = tempfile::tempdir().unwrap();
        let (_, model) = dark_light_model(dir.path());
        let test = dir.path().join("test");
        fs::create_dir_all(&test).unwrap();
        let mut files = Vec::new();
        for (i, (w, h, ext)) in [
            (40, 30, "png"),
            (33, 57, "jpg"),
            (28, 28, "png"),
            (64, 20, "jpg"),
        ]
        .into_iter()
        .enumerate()
        {
            let img = image::RgbImage::from_fn(w, h, |x, y| {
                let v = ((x * 7 + y * 3 + i as u32 * 50) % 256) as u8;
                image::Rgb([v, v / 2, 255 - v])
            });
            let path = test.join(format!("t{i}.{ext}"));
            img.save(&path).unwrap();
            files.push(path);
        }
        let out = run_expect(
            pipeline_tests::recpredict(&model)
                .args(["--squash", "--sagemaker"])
                .args(&files),
            0,
        );
        let lines: Vec<String> = stdout_text(&out).lines().map(str::to_owned).collect();
        assert_eq!(lines.len(), files.len());
        let images = files
            .into_iter()
            .zip(lines)
            .map(|(f, line)| {
                let ct = if f.extension().unwrap() == "png" {
                    "image/png"
                } else {
                    "image/jpeg"
                };
                (f.clone(), fs::read(&f).unwrap(), ct, line)
            })
            .collect();
        Trained {
            _dir: dir,
            model,
            images,
        }
    })
}

/// A running server: its address and everything it printed on stderr so far.
struct Server {
    child: Child,
    url: String,
    stderr: Arc<Mutex<String>>,
    reader: Option<thread::JoinHandle<()>>,
}

impl Server {
    /// Start `recpredict --device cpu --serve 127.0.0.1:0 ARGS` on `model` and wait until it
    /// says where it listens.
    fn start(model: &Path, args: &[&str]) -> Server {
        let mut cmd = tool("recpredict");
        cmd.arg("-m")
            .arg(model)
            .args(["--device", "cpu", "--serve", "127.0.0.1:0"])
            .args(args);
        Server::spawn(cmd)
    }

    fn spawn(mut cmd: Command) -> Server {
        let mut child = cmd
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn recpredict");
        let stderr = Arc::new(Mutex::new(String::new()));
        let (tx, rx) = mpsc::channel();
        let err = child.stderr.take().unwrap();
        let log = stderr.clone();
        let reader = thread::spawn(move || {
            for line in BufReader::new(err).lines() {
                let Ok(line) = line else { break };
                {
                    let mut log = log.lock().unwrap();
                    log.push_str(&line);
                    log.push('\n');
                }
                if let Some(rest) = line.split(" on http://").nth(1) {
                    let _ = tx.send(rest.split(' ').next().unwrap().to_owned());
                }
            }
        });
        let Ok(addr) = rx.recv_timeout(Duration::from_secs(120)) else {
            let _ = child.kill();
            panic!("the server did not start:\n{}", stderr.lock().unwrap());
        };
        Server {
            child,
            url: format!("http://{addr}"),
            stderr,
            reader: Some(reader),
        }
    }

    fn log(&self) -> String {
        self.stderr.lock().unwrap().clone()
    }

    /// Send `signal`, wait (at most a minute) for the exit, and return its status, stdout
    /// and stderr.
    fn stop(mut self, signal: &str) -> (ExitStatus, String, String) {
        let ok = Command::new("kill")
            .arg(format!("-{signal}"))
            .arg(self.child.id().to_string())
            .status()
            .unwrap();
        assert!(ok.success());
        let start = Instant::now();
        let status = loop {
            if let Some(s) = self.child.try_wait().unwrap() {
                break s;
            }
            if start.elapsed() > Duration::from_secs(60) {
                let _ = self.child.kill();
                panic!("no exit a minute after {signal}:\n{}", self.log());
            }
            thread::sleep(Duration::from_millis(20));
        };
        let mut out = String::new();
        self.child
            .stdout
            .take()
            .unwrap()
            .read_to_string(&mut out)
            .unwrap();
        // The stderr reader ends at the end of the stream.
        self.reader.take().unwrap().join().unwrap();
        (status, out, self.log())
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// An HTTP answer: status, Content-Type and body.
#[derive(Debug)]
struct Answer {
    status: u16,
    content_type: String,
    body: String,
}

fn answer(r: Result<ureq::Response, ureq::Error>) -> Answer {
    let resp = match r {
        Ok(resp) => resp,
        Err(ureq::Error::Status(_, resp)) => resp,
        Err(e) => panic!("no HTTP answer: {e}"),
    };
    Answer {
        status: resp.status(),
        content_type: resp.content_type().to_owned(),
        body: resp.into_string().unwrap(),
    }
}

fn agent() -> ureq::Agent {
    ureq::AgentBuilder::new()
        .timeout(Duration::from_secs(60))
        .build()
}

fn post(url: &str, content_type: Option<&str>, accept: Option<&str>, body: &[u8]) -> Answer {
    post_with(&agent(), url, content_type, accept, body)
}

fn post_with(
    agent: &ureq::Agent,
    url: &str,
    content_type: Option<&str>,
    accept: Option<&str>,
    body: &[u8],
) -> Answer {
    let mut req = agent.post(&format!("{url}/invocations"));
    if let Some(ct) = content_type {
        req = req.set("Content-Type", ct);
    }
    if let Some(a) = accept {
        req = req.set("Accept", a);
    }
    answer(req.send_bytes(body))
}

/// The probabilities of a batch-mode `{"prediction": [...]}` line.
fn prediction(line: &str) -> Vec<f64> {
    let v: serde_json::Value = serde_json::from_str(line).unwrap();
    serde_json::from_value(v["prediction"].clone()).unwrap()
}

/// An error answer: `status`, a JSON body `{"error": "<non-empty>"}` naming `needle`.
fn assert_error(a: &Answer, status: u16, needle: &str) {
    assert_eq!(a.status, status, "{a:?}");
    assert_eq!(a.content_type, "application/json", "{a:?}");
    let v: serde_json::Value = serde_json::from_str(&a.body).unwrap();
    let obj = v.as_object().unwrap();
    assert_eq!(obj.len(), 1, "{a:?}");
    let msg = obj["error"].as_str().unwrap();
    assert!(msg.contains(needle), "{msg:?} does not contain {needle:?}");
}

/// One line per request on stderr: `recpredict: METHOD PATH STATUS N.N ms[ batch=N]`.
fn request_lines(log: &str) -> Vec<(String, String, u16, Option<usize>)> {
    log.lines()
        .filter_map(|l| {
            let rest = l.strip_prefix("recpredict: ")?;
            let mut f = rest.split(' ');
            let method = f.next()?;
            if !["GET", "POST", "PUT", "DELETE"].contains(&method) {
                return None;
            }
            let path = f.next()?.to_owned();
            let status = f.next()?.parse().ok()?;
            let _ms: f64 = f.next()?.parse().ok()?;
            assert_eq!(f.next(), Some("ms"), "{l}");
            let batch = f
                .next()
                .map(|b| b.strip_prefix("batch=").unwrap().parse().unwrap());
            Some((method.to_owned(), path, status, batch))
        })
        .collect()
}

#[test]
fn every_content_type_and_accept_answers_as_the_batch_mode() {
    let t = trained();
    let server = Server::start(&t.model, &["--squash"]);
    let ping = answer(agent().get(&format!("{}/ping", server.url)).call());
    assert_eq!(ping.status, 200);
    let mut requests = 1;
    for (file, bytes, ct, line) in &t.images {
        let want = prediction(line);
        for content_type in [*ct, "application/x-image", "image/jpeg; charset=binary"] {
            // SageMaker's default answer: a bare array, formatted as the batch line's.
            for accept in [None, Some("application/json"), Some("*/*")] {
                let a = post(&server.url, Some(content_type), accept, bytes);
                requests += 1;
                assert_eq!(a.status, 200, "{file:?} {content_type} {accept:?}: {a:?}");
                assert_eq!(a.content_type, "application/json");
                assert_eq!(
                    format!("{{\"prediction\": {}}}", a.body),
                    *line,
                    "{file:?} {content_type} {accept:?}"
                );
            }
        }
        // JSON Lines: byte-identical to `recpredict --sagemaker`.
        let a = post(&server.url, Some(ct), Some("application/jsonlines"), bytes);
        requests += 1;
        assert_eq!(a.status, 200);
        assert_eq!(a.content_type, "application/jsonlines");
        assert_eq!(a.body, format!("{line}\n"));
        // The tool's own line: batch mode's fields without the input fields.
        let a = post(
            &server.url,
            Some(ct),
            Some("application/vnd.recpredict+json"),
            bytes,
        );
        requests += 1;
        assert_eq!(a.status, 200);
        assert_eq!(a.content_type, "application/vnd.recpredict+json");
        let v: serde_json::Value = serde_json::from_str(&a.body).unwrap();
        let mut keys: Vec<&str> = v.as_object().unwrap().keys().map(String::as_str).collect();
        keys.sort_unstable();
        assert_eq!(
            keys,
            ["class", "label", "prediction", "probability", "top_k"],
            "{}",
            a.body
        );
        let got: Vec<f64> = serde_json::from_value(v["prediction"].clone()).unwrap();
        assert_eq!(got, want);
        let best = if want[1] > want[0] { 1 } else { 0 };
        assert_eq!(v["class"], best);
        assert_eq!(v["label"], ["dark", "light"][best]);
        assert_eq!(v["top_k"].as_array().unwrap().len(), 2);
    }
    let (status, stdout, stderr) = server.stop("TERM");
    assert!(status.success(), "{status:?}\n{stderr}");
    assert_eq!(stdout, "", "nothing on stdout");
    let logged = request_lines(&stderr);
    assert_eq!(logged.len(), requests, "{stderr}");
    assert_eq!(logged[0], ("GET".into(), "/ping".into(), 200, None));
    assert!(logged[1..]
        .iter()
        .all(|(m, p, s, b)| m == "POST" && p == "/invocations" && *s == 200 && b.is_some()));
    assert!(
        stderr.contains(&format!(
            "stopped: {requests} requests, {} images predicted",
            requests - 1
        )),
        "{stderr}"
    );
}

#[test]
fn bad_requests_get_json_errors_and_the_server_keeps_answering() {
    let t = trained();
    let server = Server::start(&t.model, &["--squash", "--max-payload-mb", "0.05"]);
    let url = &server.url;
    let (_, png, _, line) = &t.images[0];
    assert_error(
        &post(url, Some("image/jpeg"), None, b"not an image at all"),
        400,
        "cannot use the image",
    );
    let mut truncated = png.clone();
    truncated.truncate(png.len() / 2);
    assert_error(
        &post(url, Some("image/png"), None, &truncated),
        400,
        "cannot use the image",
    );
    assert_error(&post(url, Some("image/png"), None, b""), 400, "empty");
    assert_error(&post(url, Some("text/plain"), None, png), 415, "text/plain");
    assert_error(&post(url, None, None, png), 415, "Content-Type");
    assert_error(
        &post(url, Some("image/png"), Some("text/html"), png),
        406,
        "text/html",
    );
    // 0.05 MiB = 52,428 bytes.
    let big = vec![0u8; 52_429];
    assert_error(
        &post(url, Some("image/png"), None, &big),
        413,
        "52428 bytes",
    );
    assert_error(
        &post(url, Some("image/png"), None, &big[..52_428]),
        400,
        "cannot use",
    );
    // A client that sends all of a large body before reading the answer still gets it.
    assert_error(
        &post(url, Some("image/png"), None, &vec![7u8; 3 << 20]),
        413,
        "over the limit",
    );
    let a = answer(agent().get(&format!("{url}/nope")).call());
    assert_error(&a, 404, "/nope");
    let a = answer(agent().get(&format!("{url}/invocations")).call());
    assert_error(&a, 405, "POST");
    let a = answer(agent().post(&format!("{url}/ping")).call());
    assert_error(&a, 405, "GET");
    // Still serving, and still right.
    assert_eq!(
        answer(agent().get(&format!("{url}/ping")).call()).status,
        200
    );
    let a = post(url, Some("image/png"), Some("application/jsonlines"), png);
    assert_eq!(a.body, format!("{line}\n"));
    let (status, stdout, stderr) = server.stop("INT");
    assert!(status.success(), "{status:?}\n{stderr}");
    assert_eq!(stdout, "");
    assert!(stderr.contains("SIGINT"), "{stderr}");
    let statuses: Vec<u16> = request_lines(&stderr).iter().map(|r| r.2).collect();
    assert_eq!(
        statuses,
        [400, 400, 400, 415, 415, 406, 413, 400, 413, 404, 405, 405, 200, 200],
        "{stderr}"
    );
}

/// `clients` threads, each sending `per_client` requests at once (after a barrier); every
/// fourth request of a client is garbage. Returns (answers to good images that were not
/// 503, count of 503, count of 400).
fn hammer(server: &Server, clients: usize, per_client: usize) -> (usize, usize, usize) {
    let t = trained();
    let barrier = Arc::new(Barrier::new(clients));
    let handles: Vec<_> = (0..clients)
        .map(|c| {
            let barrier = barrier.clone();
            let url = server.url.clone();
            thread::spawn(move || {
                let agent = agent();
                barrier.wait();
                let (mut ok, mut busy, mut bad) = (0, 0, 0);
                for i in 0..per_client {
                    let (file, bytes, ct, line) = &t.images[(c + i) % t.images.len()];
                    let garbage = i % 4 == 3;
                    let body: &[u8] = if garbage { b"\xff\xd8garbage" } else { bytes };
                    let a = post_with(&agent, &url, Some(ct), Some("application/jsonlines"), body);
                    match a.status {
                        503 => {
                            assert_error(&a, 503, "busy");
                            busy += 1;
                        }
                        400 if garbage => bad += 1,
                        200 if !garbage => {
                            assert_eq!(a.body, format!("{line}\n"), "{file:?}");
                            ok += 1;
                        }
                        _ => panic!("{file:?} garbage={garbage}: {a:?}"),
                    }
                }
                (ok, busy, bad)
            })
        })
        .collect();
    handles.into_iter().fold((0, 0, 0), |acc, h| {
        let (a, b, c) = h.join().unwrap();
        (acc.0 + a, acc.1 + b, acc.2 + c)
    })
}

#[test]
fn concurrent_requests_are_batched_and_every_answer_is_right() {
    let t = trained();
    let server = Server::start(
        &t.model,
        &["--squash", "--max-batch-delay", "20", "--batch-size", "8"],
    );
    let (ok, busy, bad) = hammer(&server, 8, 12);
    assert_eq!((ok, busy, bad), (8 * 9, 0, 8 * 3));
    let (status, _, stderr) = server.stop("TERM");
    assert!(status.success());
    let batches: Vec<usize> = request_lines(&stderr).iter().filter_map(|r| r.3).collect();
    assert_eq!(batches.len(), 72);
    assert!(batches.iter().all(|&b| (1..=8).contains(&b)), "{batches:?}");
    assert!(
        batches.iter().any(|&b| b > 1),
        "8 concurrent clients never shared a forward pass: {batches:?}"
    );
}

#[test]
fn a_full_queue_answers_503_and_loses_nothing() {
    let t = trained();
    let server = Server::start(
        &t.model,
        &["--squash", "--queue-size", "1", "--max-batch-delay", "0"],
    );
    // Eight clients against one slot: some get 503 at once; every other answer is right
    // (`hammer` checks each). Bounded: at most five rounds.
    let mut total = (0, 0, 0);
    for _ in 0..5 {
        let (ok, busy, bad) = hammer(&server, 8, 8);
        assert_eq!(ok + busy + bad, 64);
        total = (total.0 + ok, total.1 + busy, total.2 + bad);
        if total.0 > 0 && total.1 > 0 {
            break;
        }
    }
    assert!(total.0 > 0 && total.1 > 0, "answers {total:?}");
    assert_eq!(
        answer(agent().get(&format!("{}/ping", server.url)).call()).status,
        200
    );
    let (status, _, _) = server.stop("TERM");
    assert!(status.success());
}

#[test]
fn sigterm_lets_requests_in_flight_finish() {
    let t = trained();
    let server = Server::start(&t.model, &["--squash"]);
    let url = server.url.clone();
    let (_, bytes, ct, line) = t.images[1].clone();
    // Two clients send until the server is gone (bounded): every answer that arrives is
    // complete and right; after the signal, connections are refused or closed.
    let clients: Vec<_> = (0..2)
        .map(|_| {
            let (url, bytes, line) = (url.clone(), bytes.clone(), line.clone());
            thread::spawn(move || {
                let mut answered = 0;
                for _ in 0..2000 {
                    let r = agent()
                        .post(&format!("{url}/invocations"))
                        .set("Content-Type", ct)
                        .set("Accept", "application/jsonlines")
                        .send_bytes(&bytes);
                    match r {
                        Ok(resp) => {
                            assert_eq!(resp.status(), 200);
                            assert_eq!(resp.into_string().unwrap(), format!("{line}\n"));
                            answered += 1;
                        }
                        Err(ureq::Error::Status(s, resp)) => {
                            panic!("{s}: {}", resp.into_string().unwrap())
                        }
                        Err(ureq::Error::Transport(_)) => break,
                    }
                }
                answered
            })
        })
        .collect();
    thread::sleep(Duration::from_millis(500));
    let (status, stdout, stderr) = server.stop("TERM");
    let answered: usize = clients.into_iter().map(|c| c.join().unwrap()).sum();
    assert!(status.success(), "{status:?}\n{stderr}");
    assert_eq!(stdout, "");
    assert!(answered > 0, "{stderr}");
    assert!(stderr.contains("SIGTERM: no new connections"), "{stderr}");
    // Every request the server logged is one a client received in full.
    let logged = request_lines(&stderr);
    assert!(logged.iter().all(|r| r.2 == 200), "{stderr}");
    assert_eq!(logged.len(), answered, "{stderr}");
}

#[test]
fn sagemakers_serve_entry_takes_the_model_from_its_environment() {
    let t = trained();
    // `recpredict serve` is SageMaker's entry: the model from $SM_MODEL_DIR, SageMaker's
    // resize (--squash). Tests listen on loopback only, so the address is given (the
    // entry's 0.0.0.0:$SAGEMAKER_BIND_TO_PORT is checked in recpredict's unit tests).
    let mut cmd = tool("recpredict");
    cmd.args(["serve", "--device", "cpu", "--serve", "127.0.0.1:0"])
        .env("SM_MODEL_DIR", &t.model);
    let server = Server::spawn(cmd);
    assert!(server
        .log()
        .contains(&format!("serving {} on", t.model.display())));
    for (_, bytes, ct, line) in &t.images {
        let a = post(&server.url, Some(ct), Some("application/jsonlines"), bytes);
        assert_eq!(a.body, format!("{line}\n"));
    }
    let (status, _, _) = server.stop("TERM");
    assert!(status.success());
}

#[test]
fn an_address_in_use_or_a_bad_model_is_exit_2() {
    let t = trained();
    let taken = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = taken.local_addr().unwrap().to_string();
    let out = run_expect(
        tool("recpredict")
            .arg("-m")
            .arg(&t.model)
            .args(["--device", "cpu", "--serve", &addr]),
        2,
    );
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains(&format!("error: cannot listen on {addr}")),
        "{err}"
    );
    let out = run_expect(
        tool("recpredict").args(["-m", "/nonexistent/model", "--serve", "127.0.0.1:0"]),
        2,
    );
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("/nonexistent/model"), "{err}");
    assert!(out.stdout.is_empty());
}

/// Read from `s` until the server closes it (at most `within`): everything it sent.
/// Panics if it is still open by then.
fn until_closed(s: &mut TcpStream, within: Duration) -> String {
    let deadline = Instant::now() + within;
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        assert!(
            !left.is_zero(),
            "still open after {within:?}: {:?}",
            String::from_utf8_lossy(&got)
        );
        s.set_read_timeout(Some(left)).unwrap();
        match s.read(&mut buf) {
            Ok(0) => return String::from_utf8_lossy(&got).into_owned(),
            Ok(n) => got.extend_from_slice(&buf[..n]),
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => {
                return String::from_utf8_lossy(&got).into_owned()
            }
            Err(e) => panic!(
                "still open after {within:?} ({e}): {:?}",
                String::from_utf8_lossy(&got)
            ),
        }
    }
}

/// Slow clients cannot hold the server: 40 connections that send half a header (more
/// than `--max-connections 16`) are all closed within seconds of `--header-timeout 1`,
/// a body shorter than its Content-Length gets 408 after `--body-timeout 1` and its
/// connection closed, and `/ping` answers at once all along.
#[test]
fn slow_clients_are_dropped_while_ping_keeps_answering() {
    let t = trained();
    let server = Server::start(
        &t.model,
        &[
            "--header-timeout",
            "1",
            "--body-timeout",
            "1",
            "--max-connections",
            "16",
        ],
    );
    let addr = server.url.trim_start_matches("http://").to_string();
    let ping = || {
        let start = Instant::now();
        let a = answer(agent().get(&format!("{}/ping", server.url)).call());
        assert_eq!(a.status, 200, "{}", server.log());
        start.elapsed()
    };
    let mut half: Vec<TcpStream> = (0..40)
        .map(|_| {
            let mut s = TcpStream::connect(&addr).unwrap();
            s.write_all(b"POST /invocations HTTP/1.1\r\nHost: x\r\nContent-Ty")
                .unwrap();
            s
        })
        .collect();
    let mut short_body = TcpStream::connect(&addr).unwrap();
    short_body
        .write_all(
            b"POST /invocations HTTP/1.1\r\nHost: x\r\nContent-Type: image/png\r\n\
              Content-Length: 1000\r\n\r\n0123456789",
        )
        .unwrap();
    // 16 slots, 41 slow clients: /ping waits at most for a slot to free (about one
    // header timeout), never for the slow clients to finish.
    assert!(ping() < Duration::from_secs(5), "{}", server.log());

    let answer_408 = until_closed(&mut short_body, Duration::from_secs(10));
    assert!(
        answer_408.starts_with("HTTP/1.1 408")
            && answer_408.contains("did not arrive within 1 s (--body-timeout)"),
        "{answer_408:?}"
    );
    for s in &mut half {
        // Closed (hyper may say 408 first); the last ones waited for a slot before
        // their header timer started.
        let said = until_closed(s, Duration::from_secs(15));
        assert!(
            said.is_empty() || said.starts_with("HTTP/1.1 408"),
            "{said:?}"
        );
    }
    assert!(ping() < Duration::from_secs(2), "{}", server.log());
    let (status, _, log) = server.stop("TERM");
    assert!(status.success(), "{log}");
    assert!(
        log.contains("16 connections open (--max-connections): new ones wait until one closes"),
        "{log}"
    );
}
