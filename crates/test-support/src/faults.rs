//! A fault-injecting proxy in front of the test upstream. It forwards each
//! request to the real test upstream (one request per connection), then writes
//! the response byte for byte itself, so it can do what no well-behaved server
//! does: reset mid-body, lie about Content-Length, stall, garble bytes.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Fault {
    /// Forward unchanged.
    None,
    /// Answer with this status (and optional `Retry-After` seconds), `times` times.
    Status {
        status: u16,
        retry_after: Option<u64>,
        times: usize,
    },
    /// Read the request and never answer.
    Stall,
    /// Send the head and half the body, then reset the connection.
    ResetMidBody,
    /// Announce the whole length, send half, close normally.
    Truncate,
    /// Flip one byte in the middle of the body.
    WrongBytes,
    /// Announce fewer bytes than the body has (the client reads a prefix).
    BodyLongerThanContentLength,
    /// Announce more bytes than the body has, then close.
    BodyShorterThanContentLength,
    /// Replace the body with something that is not index JSON.
    MalformedJson,
}

struct Shared {
    upstream_base: String,
    proxy_base: String,
    /// The fault and the path fragment it applies to.
    fault: Mutex<(Fault, String)>,
    faulted: Mutex<usize>,
}

pub struct FaultProxy {
    shared: Arc<Shared>,
    /// `http://127.0.0.1:PORT/index/`, to give the mirror as its upstream.
    pub url: String,
    _thread: std::thread::JoinHandle<()>,
}

impl FaultProxy {
    /// Proxies `upstream_index_url` (a test upstream's `.../index/`).
    pub fn start(upstream_index_url: &str) -> FaultProxy {
        let upstream_base = upstream_index_url
            .trim_end_matches('/')
            .trim_end_matches("/index")
            .to_string();
        let std_listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind proxy");
        std_listener.set_nonblocking(true).expect("nonblocking");
        let proxy_base = format!("http://{}", std_listener.local_addr().expect("addr"));
        let shared = Arc::new(Shared {
            upstream_base,
            proxy_base: proxy_base.clone(),
            fault: Mutex::new((Fault::None, String::new())),
            faulted: Mutex::new(0),
        });
        let serving = shared.clone();
        let thread = std::thread::spawn(move || {
            let runtime = server_runtime(2, "proxy runtime");
            runtime.block_on(async move {
                let listener = TcpListener::from_std(std_listener).expect("listener");
                let client = reqwest::Client::builder()
                    .no_proxy()
                    .gzip(false)
                    .build()
                    .expect("proxy client");
                loop {
                    let Ok((socket, _)) = listener.accept().await else {
                        continue;
                    };
                    let shared = serving.clone();
                    let client = client.clone();
                    tokio::spawn(async move {
                        let _ = serve(socket, &shared, &client).await;
                    });
                }
            });
        });
        FaultProxy {
            shared,
            url: format!("{proxy_base}/index/"),
            _thread: thread,
        }
    }

    /// Applies `fault` to requests whose path contains `fragment`.
    pub fn set(&self, fault: Fault, fragment: &str) {
        *self.shared.fault.lock().unwrap() = (fault, fragment.to_string());
    }

    pub fn clear(&self) {
        self.set(Fault::None, "");
    }

    /// How many responses were faulted so far.
    pub fn faulted(&self) -> usize {
        *self.shared.faulted.lock().unwrap()
    }
}

/// A request's head up to the blank line, as text; `None` when the client
/// closed first.
async fn read_head(socket: &mut TcpStream) -> std::io::Result<Option<String>> {
    let mut head = Vec::new();
    let mut buf = [0u8; 4096];
    while !head.windows(4).any(|w| w == b"\r\n\r\n") {
        let n = socket.read(&mut buf).await?;
        if n == 0 {
            return Ok(None);
        }
        head.extend_from_slice(&buf[..n]);
    }
    Ok(Some(String::from_utf8_lossy(&head).into_owned()))
}

async fn serve(
    mut socket: TcpStream,
    shared: &Shared,
    client: &reqwest::Client,
) -> std::io::Result<()> {
    let Some(text) = read_head(&mut socket).await? else {
        return Ok(());
    };
    let mut lines = text.split("\r\n");
    let request_line = lines.next().unwrap_or("");
    let path = request_line.split(' ').nth(1).unwrap_or("/").to_string();
    let mut forwarded = client.get(format!("{}{path}", shared.upstream_base));
    for line in lines {
        if let Some((name, value)) = line.split_once(':') {
            let name = name.trim().to_ascii_lowercase();
            if name == "if-none-match" || name == "if-modified-since" {
                forwarded = forwarded.header(name, value.trim());
            }
        }
    }

    let fault = {
        let (fault, fragment) = &mut *shared.fault.lock().unwrap();
        if *fault != Fault::None && path.contains(fragment.as_str()) {
            let current = fault.clone();
            if let Fault::Status { times, .. } = fault {
                *times -= 1;
                if *times == 0 {
                    *fault = Fault::None;
                }
            }
            *shared.faulted.lock().unwrap() += 1;
            current
        } else {
            Fault::None
        }
    };
    match fault {
        Fault::Stall => {
            tokio::time::sleep(Duration::from_secs(60)).await;
            return Ok(());
        }
        Fault::Status {
            status,
            retry_after,
            ..
        } => {
            let extra = retry_after
                .map(|s| format!("Retry-After: {s}\r\n"))
                .unwrap_or_default();
            let response = format!(
                "HTTP/1.1 {status} Injected\r\nContent-Length: 8\r\n{extra}Connection: close\r\n\r\ninjected"
            );
            socket.write_all(response.as_bytes()).await?;
            return socket.shutdown().await;
        }
        _ => {}
    }

    let upstream = match forwarded.send().await {
        Ok(response) => response,
        Err(_) => return Ok(()),
    };
    let status = upstream.status().as_u16();
    let mut headers = String::new();
    for name in ["etag", "last-modified", "content-type"] {
        if let Some(value) = upstream.headers().get(name).and_then(|v| v.to_str().ok()) {
            headers.push_str(&format!("{name}: {value}\r\n"));
        }
    }
    let mut body = upstream
        .bytes()
        .await
        .map(|b| b.to_vec())
        .unwrap_or_default();
    if path == "/index/config.json" {
        // Downloads must come through the proxy too.
        body = String::from_utf8_lossy(&body)
            .replace(&shared.upstream_base, &shared.proxy_base)
            .into_bytes();
    }
    let mut announced = body.len();
    let mut send = body.clone();
    let mut reset = false;
    match fault {
        Fault::ResetMidBody => {
            send.truncate(body.len() / 2);
            reset = true;
        }
        Fault::Truncate => send.truncate(body.len() / 2),
        Fault::WrongBytes if !send.is_empty() => {
            let middle = send.len() / 2;
            send[middle] ^= 0x20;
        }
        Fault::BodyLongerThanContentLength => announced = body.len().saturating_sub(7),
        Fault::BodyShorterThanContentLength => announced = body.len() + 100,
        Fault::MalformedJson => {
            send = b"{\"name\": \"oops\", this is not json\n<html>proxy error</html>\n".to_vec();
            announced = send.len();
        }
        _ => {}
    }
    let head = format!(
        "HTTP/1.1 {status} Proxied\r\nContent-Length: {announced}\r\n{headers}Connection: close\r\n\r\n"
    );
    socket.write_all(head.as_bytes()).await?;
    socket.write_all(&send).await?;
    socket.flush().await?;
    if reset {
        // Zero linger: dropping the socket sends a reset instead of a FIN.
        socket.set_zero_linger()?;
        drop(socket);
        return Ok(());
    }
    socket.shutdown().await
}

/// One scripted answer of a `ScriptedServer`.
#[derive(Clone, Debug)]
pub struct Reply {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
    /// Send the body with chunked transfer encoding (no Content-Length), in
    /// pieces of `size` bytes with `pause` between them and `tail_pause` before
    /// the terminating chunk.
    pub chunked: Option<Chunking>,
}

#[derive(Clone, Copy, Debug)]
pub struct Chunking {
    pub size: usize,
    pub pause: Duration,
    pub tail_pause: Duration,
}

impl Reply {
    pub fn ok(body: impl Into<Vec<u8>>) -> Reply {
        Reply {
            status: 200,
            headers: Vec::new(),
            body: body.into(),
            chunked: None,
        }
    }

    /// A 302 to `location`.
    pub fn redirect(location: &str) -> Reply {
        Reply {
            status: 302,
            headers: vec![("Location".to_string(), location.to_string())],
            body: Vec::new(),
            chunked: None,
        }
    }

    pub fn chunked(mut self, chunking: Chunking) -> Reply {
        self.chunked = Some(chunking);
        self
    }
}

/// A loopback HTTP/1.1 server answering each path with a scripted `Reply`
/// (404 for any other path) and counting the requests per path: an upstream
/// that redirects, or streams without a Content-Length, where the test upstream
/// would not.
pub struct ScriptedServer {
    routes: Arc<Mutex<std::collections::HashMap<String, Reply>>>,
    hits: Arc<Mutex<Vec<String>>>,
    /// `http://127.0.0.1:PORT`, no trailing slash.
    pub base: String,
    pub port: u16,
    _thread: std::thread::JoinHandle<()>,
}

impl ScriptedServer {
    pub fn start() -> ScriptedServer {
        let std_listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind scripted");
        std_listener.set_nonblocking(true).expect("nonblocking");
        let port = std_listener.local_addr().expect("addr").port();
        let routes: Arc<Mutex<std::collections::HashMap<String, Reply>>> = Arc::default();
        let hits: Arc<Mutex<Vec<String>>> = Arc::default();
        let (serving_routes, serving_hits) = (routes.clone(), hits.clone());
        let thread = std::thread::spawn(move || {
            let runtime = server_runtime(1, "scripted runtime");
            runtime.block_on(async move {
                let listener = TcpListener::from_std(std_listener).expect("listener");
                loop {
                    let Ok((socket, _)) = listener.accept().await else {
                        continue;
                    };
                    let (routes, hits) = (serving_routes.clone(), serving_hits.clone());
                    tokio::spawn(async move {
                        let _ = answer(socket, &routes, &hits).await;
                    });
                }
            });
        });
        ScriptedServer {
            routes,
            hits,
            base: format!("http://127.0.0.1:{port}"),
            port,
            _thread: thread,
        }
    }

    /// Answers `path` with `reply` from now on.
    pub fn route(&self, path: &str, reply: Reply) {
        self.routes.lock().unwrap().insert(path.to_string(), reply);
    }

    /// How many requests had exactly this path.
    pub fn hits(&self, path: &str) -> usize {
        self.hits
            .lock()
            .unwrap()
            .iter()
            .filter(|p| *p == path)
            .count()
    }

    pub fn total_hits(&self) -> usize {
        self.hits.lock().unwrap().len()
    }
}

async fn answer(
    mut socket: TcpStream,
    routes: &Mutex<std::collections::HashMap<String, Reply>>,
    hits: &Mutex<Vec<String>>,
) -> std::io::Result<()> {
    let Some(text) = read_head(&mut socket).await? else {
        return Ok(());
    };
    let path = text
        .split("\r\n")
        .next()
        .and_then(|line| line.split(' ').nth(1))
        .unwrap_or("/")
        .to_string();
    hits.lock().unwrap().push(path.clone());
    let reply = routes.lock().unwrap().get(&path).cloned().unwrap_or(Reply {
        status: 404,
        headers: Vec::new(),
        body: b"no such path".to_vec(),
        chunked: None,
    });
    let mut head = format!(
        "HTTP/1.1 {} Scripted\r\nConnection: close\r\n",
        reply.status
    );
    for (name, value) in &reply.headers {
        head.push_str(&format!("{name}: {value}\r\n"));
    }
    let Some(chunking) = reply.chunked else {
        head.push_str(&format!("Content-Length: {}\r\n\r\n", reply.body.len()));
        socket.write_all(head.as_bytes()).await?;
        socket.write_all(&reply.body).await?;
        return socket.shutdown().await;
    };
    head.push_str("Transfer-Encoding: chunked\r\n\r\n");
    socket.write_all(head.as_bytes()).await?;
    socket.flush().await?;
    for piece in reply.body.chunks(chunking.size.max(1)) {
        socket
            .write_all(format!("{:x}\r\n", piece.len()).as_bytes())
            .await?;
        socket.write_all(piece).await?;
        socket.write_all(b"\r\n").await?;
        socket.flush().await?;
        tokio::time::sleep(chunking.pause).await;
    }
    tokio::time::sleep(chunking.tail_pause).await;
    socket.write_all(b"0\r\n\r\n").await?;
    socket.shutdown().await
}

/// The runtime a test server's thread runs on, with `workers` threads.
fn server_runtime(workers: usize, what: &str) -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(workers)
        .enable_all()
        .build()
        .expect(what)
}
