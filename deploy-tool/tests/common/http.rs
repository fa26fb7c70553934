//! A static HTTP server of a directory on 127.0.0.1, for the tests and benchmarks of update
//! delivery: GET only, one request per connection, every answer logged with its size. It can
//! misbehave on chosen paths as broken or hostile servers do ([`Misbehaviour`]): stall after
//! the headers, trickle the body, redirect in a loop.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// How the server answers the requests [`Server::misbehave`] names.
#[derive(Debug, Clone, Copy)]
pub enum Misbehaviour {
    /// The headers (with the file's true length), then nothing until the client hangs up.
    Stall,
    /// The headers, then the body one byte at a time, one every `Duration`.
    Trickle(Duration),
    /// A redirect (302) to the same path, this many times in all; then 404, so that a client
    /// that follows redirects without end still stops.
    RedirectLoop(u32),
}

/// Which paths misbehave, and how.
type Rule = (Arc<dyn Fn(&str) -> bool + Send + Sync>, Misbehaviour);

/// What the connection threads share.
#[derive(Default)]
struct Shared {
    log: Mutex<Vec<Request>>,
    rules: Mutex<Vec<Rule>>,
    /// The paths of the requests received (before they are answered), and a signal for each.
    arrived: Mutex<Vec<String>>,
    arrival: Condvar,
    redirects: AtomicU32,
}

/// One request the server answered.
#[derive(Debug, Clone)]
pub struct Request {
    pub path: String,
    pub status: u16,
    pub bytes: u64,
}

/// A static HTTP server of a directory on 127.0.0.1 (GET only, one request per connection),
/// logging every request; stopped and joined on drop.
pub struct Server {
    port: u16,
    shared: Arc<Shared>,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl Server {
    pub fn start(root: &Path) -> Server {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let shared = Arc::new(Shared::default());
        let stop = Arc::new(AtomicBool::new(false));
        let (root, sh, s) = (root.to_path_buf(), shared.clone(), stop.clone());
        let thread = std::thread::spawn(move || {
            for conn in listener.incoming() {
                if s.load(Ordering::SeqCst) {
                    break;
                }
                let Ok(conn) = conn else { continue };
                let (root, sh) = (root.clone(), sh.clone());
                std::thread::spawn(move || serve(&root, conn, &sh));
            }
        });
        Server {
            port,
            shared,
            stop,
            thread: Some(thread),
        }
    }

    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}/", self.port)
    }

    /// The requests answered since the last call.
    pub fn take_log(&self) -> Vec<Request> {
        std::mem::take(&mut *self.shared.log.lock().unwrap())
    }

    /// From now on, answers the requests whose path `matches` as `how` says.
    pub fn misbehave(
        &self,
        matches: impl Fn(&str) -> bool + Send + Sync + 'static,
        how: Misbehaviour,
    ) {
        self.shared
            .rules
            .lock()
            .unwrap()
            .push((Arc::new(matches), how));
    }

    /// Answers every request normally again.
    pub fn behave(&self) {
        self.shared.rules.lock().unwrap().clear();
    }

    /// Waits until a request whose path `matches` has arrived (since the start, answered or
    /// not), at most `timeout`; whether one did.
    pub fn wait_for_request(&self, matches: impl Fn(&str) -> bool, timeout: Duration) -> bool {
        let deadline = Instant::now() + timeout;
        let mut arrived = self.shared.arrived.lock().unwrap();
        loop {
            if arrived.iter().any(|p| matches(p)) {
                return true;
            }
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return false;
            }
            arrived = self.shared.arrival.wait_timeout(arrived, left).unwrap().0;
        }
    }

    /// The redirects answered so far ([`Misbehaviour::RedirectLoop`]).
    pub fn redirects(&self) -> u32 {
        self.shared.redirects.load(Ordering::SeqCst)
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        // Wakes the accept loop, which then sees the flag.
        let _ = TcpStream::connect(("127.0.0.1", self.port));
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// Answers one GET request on `conn` with the file under `root`, or 404, or as a rule of
/// `shared` says.
fn serve(root: &Path, mut conn: TcpStream, shared: &Shared) {
    let mut reader = BufReader::new(conn.try_clone().unwrap());
    let mut line = String::new();
    if reader.read_line(&mut line).is_err() {
        return;
    }
    // The request's headers are not needed: read up to the blank line.
    let mut header = String::new();
    while reader.read_line(&mut header).is_ok_and(|n| n > 2) {
        header.clear();
    }
    let mut words = line.split_whitespace();
    let (method, target) = (words.next().unwrap_or(""), words.next().unwrap_or(""));
    let path = target.split('?').next().unwrap_or("").to_string();
    shared.arrived.lock().unwrap().push(path.clone());
    shared.arrival.notify_all();
    let rule = shared
        .rules
        .lock()
        .unwrap()
        .iter()
        .find(|(m, _)| m(&path))
        .map(|(_, how)| *how);
    let file = Path::new(path.trim_start_matches('/'));
    let safe = file
        .components()
        .all(|c| matches!(c, std::path::Component::Normal(_)));
    let body = (method == "GET" && safe)
        .then(|| std::fs::read(root.join(file)).ok())
        .flatten();
    if let Some(Misbehaviour::RedirectLoop(max)) = rule {
        if shared.redirects.fetch_add(1, Ordering::SeqCst) < max {
            let n = shared.redirects.load(Ordering::SeqCst);
            let head = format!(
                "HTTP/1.1 302 Found\r\nLocation: {path}?loop={n}\r\nContent-Length: 0\r\n\
                 Connection: close\r\n\r\n"
            );
            let _ = conn.write_all(head.as_bytes());
            log(shared, path, 302, 0);
            return;
        }
    }
    let (status, body) = match body {
        Some(b) => (200, b),
        None => (404, b"not found\n".to_vec()),
    };
    let reason = if status == 200 { "OK" } else { "Not Found" };
    let head = format!(
        "HTTP/1.1 {status} {reason}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    );
    let sent = match rule {
        Some(Misbehaviour::Stall) => {
            let _ = conn.write_all(head.as_bytes());
            // Nothing more, until the client gives up (or its process ends).
            let _ = reader.read(&mut [0; 1]);
            return;
        }
        Some(Misbehaviour::Trickle(every)) => conn.write_all(head.as_bytes()).and_then(|()| {
            for b in &body {
                conn.write_all(std::slice::from_ref(b))?;
                std::thread::sleep(every);
            }
            Ok(())
        }),
        _ => conn
            .write_all(head.as_bytes())
            .and_then(|()| conn.write_all(&body)),
    };
    log(
        shared,
        path,
        status,
        if sent.is_ok() { body.len() as u64 } else { 0 },
    );
}

fn log(shared: &Shared, path: String, status: u16, bytes: u64) {
    shared.log.lock().unwrap().push(Request {
        path,
        status,
        bytes,
    });
}

/// The bytes of the answers in `log`.
pub fn total(log: &[Request]) -> u64 {
    log.iter().map(|r| r.bytes).sum()
}
