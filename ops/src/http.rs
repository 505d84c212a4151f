//! The `/metrics` HTTP responder: a `std::net::TcpListener` on its own thread; `GET /metrics`
//! answers what the caller's render function returns (OpenMetrics text), anything else 404. A
//! request head is read bounded (8 KiB, 2 s); one response per connection.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use crate::threads::StopThreads;

/// Why the metrics endpoint did not start.
#[derive(Debug, thiserror::Error)]
#[error("cannot listen for /metrics on {addr}: {source} (change metrics.listen, or turn /metrics off in the config)")]
pub struct MetricsError {
    pub addr: SocketAddr,
    pub source: std::io::Error,
}

/// The `/metrics` HTTP responder on its own thread.
#[derive(Debug)]
pub struct MetricsServer {
    thread: StopThreads,
    addr: SocketAddr,
}

/// What a scrape answers: the OpenMetrics text.
pub type RenderFn = dyn Fn() -> String + Send + Sync;

impl MetricsServer {
    /// Listens on `addr` (port 0: any free port) and answers each `GET /metrics` with
    /// `render()`.
    pub fn start(addr: SocketAddr, render: Arc<RenderFn>) -> Result<MetricsServer, MetricsError> {
        let err = |source| MetricsError { addr, source };
        let listener = TcpListener::bind(addr).map_err(err)?;
        let addr = listener.local_addr().map_err(err)?;
        listener.set_nonblocking(true).map_err(err)?;
        let mut thread = StopThreads::new();
        let quit = thread.flag();
        thread
            .spawn("photon-metrics", move || {
                while !quit.load(Ordering::Relaxed) {
                    match listener.accept() {
                        Ok((stream, _)) => serve(stream, &*render),
                        Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                            std::thread::sleep(Duration::from_millis(20));
                        }
                        Err(_) => std::thread::sleep(Duration::from_millis(20)),
                    }
                }
            })
            .map_err(err)?;
        Ok(MetricsServer { thread, addr })
    }

    /// The address it listens on.
    pub fn local_addr(&self) -> SocketAddr {
        self.addr
    }

    /// Stops the thread.
    pub fn stop(mut self) {
        self.thread.stop();
    }
}

/// Answers one connection: reads the request head (bounded: 8 KiB, 2 s), then one response.
fn serve(mut stream: TcpStream, render: &RenderFn) {
    let _ = stream.set_nonblocking(false);
    let _ = stream.set_read_timeout(Some(Duration::from_secs(2)));
    let _ = stream.set_write_timeout(Some(Duration::from_secs(2)));
    let mut buf = [0u8; 8192];
    let mut len = 0;
    while len < buf.len() {
        match stream.read(&mut buf[len..]) {
            Ok(0) => break,
            Ok(n) => {
                len += n;
                if buf[..len].windows(4).any(|w| w == b"\r\n\r\n") {
                    break;
                }
            }
            Err(_) => break,
        }
    }
    let head = String::from_utf8_lossy(&buf[..len]);
    let mut words = head.split_whitespace();
    let (method, path) = (words.next().unwrap_or(""), words.next().unwrap_or(""));
    let response = if method == "GET" && (path == "/metrics" || path.starts_with("/metrics?")) {
        let body = render();
        format!(
            "HTTP/1.1 200 OK\r\nContent-Type: application/openmetrics-text; version=1.0.0; charset=utf-8\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
            body.len()
        )
    } else {
        let body = "not found: try GET /metrics\n";
        format!(
            "HTTP/1.1 404 Not Found\r\nContent-Type: text/plain\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
            body.len()
        )
    };
    let _ = stream.write_all(response.as_bytes());
}

#[cfg(test)]
mod tests {
    use super::*;

    fn get(addr: SocketAddr, path: &str) -> String {
        let mut c = TcpStream::connect(addr).unwrap();
        write!(c, "GET {path} HTTP/1.1\r\nHost: x\r\n\r\n").unwrap();
        let mut out = String::new();
        c.read_to_string(&mut out).unwrap();
        out
    }

    #[test]
    fn answers_get_metrics_with_the_render_and_404_otherwise() {
        let s = MetricsServer::start(
            "127.0.0.1:0".parse().unwrap(),
            Arc::new(|| "photon_up 1\n# EOF\n".to_string()),
        )
        .unwrap();
        let ok = get(s.local_addr(), "/metrics");
        assert!(ok.starts_with("HTTP/1.1 200 OK"), "{ok}");
        assert!(ok.contains("Content-Length: 18\r\n"), "{ok}");
        assert!(ok.ends_with("photon_up 1\n# EOF\n"), "{ok}");
        assert!(get(s.local_addr(), "/metrics?x=1").starts_with("HTTP/1.1 200 OK"));
        assert!(get(s.local_addr(), "/other").starts_with("HTTP/1.1 404"));
        s.stop();
    }

    #[test]
    fn a_taken_address_is_an_error_naming_it() {
        let s =
            MetricsServer::start("127.0.0.1:0".parse().unwrap(), Arc::new(String::new)).unwrap();
        let e = MetricsServer::start(s.local_addr(), Arc::new(String::new)).unwrap_err();
        assert!(e.to_string().contains(&s.local_addr().to_string()), "{e}");
    }
}
