//! A static HTTP server of a directory on 127.0.0.1, for the tests and benchmarks of update
//! delivery: GET only, one request per connection, every answer logged with its size.

use std::io::{BufRead, BufReader, Write};
use std::net::{TcpListener, TcpStream};
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;

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
    log: Arc<Mutex<Vec<Request>>>,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl Server {
    pub fn start(root: &Path) -> Server {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let log = Arc::new(Mutex::new(Vec::new()));
        let stop = Arc::new(AtomicBool::new(false));
        let (root, l, s) = (root.to_path_buf(), log.clone(), stop.clone());
        let thread = std::thread::spawn(move || {
            for conn in listener.incoming() {
                if s.load(Ordering::SeqCst) {
                    break;
                }
                let Ok(conn) = conn else { continue };
                let (root, l) = (root.clone(), l.clone());
                std::thread::spawn(move || serve(&root, conn, &l));
            }
        });
        Server {
            port,
            log,
            stop,
            thread: Some(thread),
        }
    }

    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}/", self.port)
    }

    /// The requests answered since the last call.
    pub fn take_log(&self) -> Vec<Request> {
        std::mem::take(&mut *self.log.lock().unwrap())
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

/// Answers one GET request on `conn` with the file under `root`, or 404.
fn serve(root: &Path, mut conn: TcpStream, log: &Mutex<Vec<Request>>) {
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
    let file = Path::new(path.trim_start_matches('/'));
    let safe = file
        .components()
        .all(|c| matches!(c, std::path::Component::Normal(_)));
    let body = (method == "GET" && safe)
        .then(|| std::fs::read(root.join(file)).ok())
        .flatten();
    let (status, body) = match body {
        Some(b) => (200, b),
        None => (404, b"not found\n".to_vec()),
    };
    let reason = if status == 200 { "OK" } else { "Not Found" };
    let head = format!(
        "HTTP/1.1 {status} {reason}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    );
    let sent = conn
        .write_all(head.as_bytes())
        .and_then(|()| conn.write_all(&body));
    log.lock().unwrap().push(Request {
        path,
        status,
        bytes: if sent.is_ok() { body.len() as u64 } else { 0 },
    });
}

/// The bytes of the answers in `log`.
pub fn total(log: &[Request]) -> u64 {
    log.iter().map(|r| r.bytes).sum()
}
