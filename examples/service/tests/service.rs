//! The service example, driven over loopback by hyper's HTTP client: the real binary, its real
//! worker processes, real signals.

use std::io::{BufRead, BufReader, Read};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use http_body_util::{BodyExt, Empty};
use hyper::body::Bytes;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;

/// The service, running, and what it logged so far.
struct Service {
    child: Child,
    base: String,
    log: Arc<Mutex<String>>,
}

impl Service {
    fn start() -> Service {
        let mut child = Command::new(env!("CARGO_BIN_EXE_service"))
            .args(["--listen", "127.0.0.1:0", "--workers", "2"])
            .env("RUST_BACKTRACE", "0")
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("start the service");
        let mut stdout = BufReader::new(child.stdout.take().unwrap());
        let mut line = String::new();
        stdout.read_line(&mut line).unwrap();
        let base = line
            .trim()
            .strip_prefix("listening on ")
            .unwrap_or_else(|| panic!("unexpected first line {line:?}"))
            .to_owned();
        let log = Arc::new(Mutex::new(String::new()));
        let sink = log.clone();
        let mut stderr = child.stderr.take().unwrap();
        std::thread::spawn(move || {
            let mut buf = [0u8; 4096];
            while let Ok(n) = stderr.read(&mut buf) {
                if n == 0 {
                    break;
                }
                sink.lock()
                    .unwrap()
                    .push_str(&String::from_utf8_lossy(&buf[..n]));
            }
        });
        Service { child, base, log }
    }

    fn log(&self) -> String {
        self.log.lock().unwrap().clone()
    }

    /// The log, once it holds `text` (it is read from the service's stderr as it comes).
    async fn log_with(&self, text: &str) -> String {
        let until = Instant::now() + Duration::from_secs(10);
        loop {
            let log = self.log();
            if log.contains(text) {
                return log;
            }
            assert!(Instant::now() < until, "no {text:?} in the log:\n{log}");
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    /// The workers' pids, cancelled calls and calls served now, from `/stats`.
    async fn stats(&self, client: &HttpClient) -> Vec<(u32, u64, u64)> {
        let (status, body) = get(client, &format!("{}/stats", self.base), None).await;
        assert_eq!(status, 200, "{body}");
        body.lines()
            .map(|l| {
                let f: Vec<&str> = l.split(' ').collect();
                (
                    f[1].parse().unwrap(),
                    f[3].parse().unwrap(),
                    f[5].parse().unwrap(),
                )
            })
            .collect()
    }
}

impl Drop for Service {
    fn drop(&mut self) {
        if self.child.try_wait().ok().flatten().is_none() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

type HttpClient = Client<HttpConnector, Empty<Bytes>>;

fn client() -> HttpClient {
    Client::builder(TokioExecutor::new()).build_http()
}

/// A GET with an optional deadline header; the status and the whole body.
async fn get(client: &HttpClient, uri: &str, deadline_ms: Option<u64>) -> (u16, String) {
    let mut request = hyper::Request::get(uri);
    if let Some(ms) = deadline_ms {
        request = request.header("x-deadline-ms", ms.to_string());
    }
    let response = client
        .request(request.body(Empty::new()).unwrap())
        .await
        .unwrap();
    let status = response.status().as_u16();
    let body = response.into_body().collect().await.unwrap().to_bytes();
    (status, String::from_utf8_lossy(&body).into_owned())
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap()
}

/// Sixteen requests at once, each fanning out to the worker pool, all answered right.
#[test]
fn concurrent_requests_are_answered() {
    let service = Service::start();
    runtime().block_on(async {
        let client = client();
        let mut requests = tokio::task::JoinSet::new();
        for x in 20..36u64 {
            let (client, uri) = (
                client.clone(),
                format!("{}/square?x={x}&n=3&delay_ms=20", service.base),
            );
            requests.spawn(async move { (x, get(&client, &uri, None).await) });
        }
        while let Some(answer) = requests.join_next().await {
            let (x, (status, body)) = answer.unwrap();
            assert_eq!(status, 200, "{body}");
            let want: u64 = (x..x + 3).map(|v| v * v).sum();
            assert_eq!(body.trim(), want.to_string());
        }
    });
}

/// A deadline that fires: 504, the error in the log, and the calls in the workers cancelled.
#[test]
fn a_deadline_answers_504_and_cancels_the_calls() {
    let service = Service::start();
    runtime().block_on(async {
        let client = client();
        let uri = format!("{}/square?n=2&delay_ms=5000", service.base);
        let (status, body) = get(&client, &uri, Some(100)).await;
        assert_eq!(status, 504, "{body}");
        let log = service.log_with("/square answered 504").await;
        assert!(log.contains("deadline"), "{log}");
        // Both calls were cancelled in the workers, which serve nothing now.
        loop {
            let stats = service.stats(&client).await;
            let cancelled: u64 = stats.iter().map(|s| s.1).sum();
            if cancelled >= 2 && stats.iter().all(|s| s.2 == 0) {
                break;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    });
}

/// A failing worker function: 500 for the client, the error tree (naming the worker and the
/// error) in the log, no internals in the answer.
#[test]
fn a_failure_answers_500_with_the_error_tree_in_the_log() {
    let service = Service::start();
    runtime().block_on(async {
        let client = client();
        let (status, body) = get(&client, &format!("{}/square?x=13", service.base), None).await;
        assert_eq!(status, 500);
        assert_eq!(body, "the work failed\n");
        let log = service.log_with("13 is unlucky").await;
        assert!(log.contains("errors in nursery (1 error)"), "{log}");
        assert!(log.contains("└─ [1] actor worker-"), "{log}");
    });
}

/// A client that goes away mid-response: the stream's remote call is cancelled in the
/// worker, and nothing is left running.
#[test]
fn a_client_that_disconnects_cancels_the_remote_call() {
    let service = Service::start();
    runtime().block_on(async {
        let client = client();
        let uri = format!("{}/count?n=100000&pace_ms=5", service.base);
        let response = client
            .request(hyper::Request::get(uri).body(Empty::new()).unwrap())
            .await
            .unwrap();
        assert_eq!(response.status(), 200);
        let mut body = response.into_body();
        let mut seen = String::new();
        while seen.lines().count() < 3 {
            let frame = body.frame().await.unwrap().unwrap();
            if let Ok(data) = frame.into_data() {
                seen.push_str(&String::from_utf8_lossy(&data));
            }
        }
        assert!(seen.starts_with("0\n1\n2\n"), "{seen}");
        drop(body); // the client goes away
        let other = self::client();
        loop {
            let stats = service.stats(&other).await;
            let cancelled: u64 = stats.iter().map(|s| s.1).sum();
            if cancelled >= 1 && stats.iter().all(|s| s.2 == 0) {
                break;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    });
}

/// SIGINT: the service stops accepting, cancels what runs (a streamed response among it),
/// stops its workers and exits 130; no worker process is left.
#[test]
fn ctrl_c_exits_cleanly() {
    let mut service = Service::start();
    let workers = runtime().block_on(async {
        let client = client();
        let workers: Vec<u32> = service.stats(&client).await.iter().map(|s| s.0).collect();
        // A response in flight when the signal comes.
        let uri = format!("{}/count?n=100000&pace_ms=5", service.base);
        let response = client
            .request(hyper::Request::get(uri).body(Empty::new()).unwrap())
            .await
            .unwrap();
        let mut body = response.into_body();
        body.frame().await.unwrap().unwrap();
        nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(service.child.id() as i32),
            nix::sys::signal::Signal::SIGINT,
        )
        .unwrap();
        // The response ends (cut short) rather than hanging.
        while let Some(Ok(_)) = body.frame().await {}
        workers
    });
    let until = Instant::now() + Duration::from_secs(10);
    let status = loop {
        if let Some(status) = service.child.try_wait().unwrap() {
            break status;
        }
        assert!(Instant::now() < until, "the service did not exit");
        std::thread::sleep(Duration::from_millis(10));
    };
    assert_eq!(status.code(), Some(130), "{}", service.log());
    assert_eq!(workers.len(), 2);
    for pid in workers {
        assert!(
            !std::path::Path::new(&format!("/proc/{pid}")).exists(),
            "worker {pid} is left"
        );
    }
}
