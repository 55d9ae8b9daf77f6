//! A local W&B stand-in: the GraphQL and file_stream endpoints the agent
//! and the wandb SDK use, on 127.0.0.1 with a runtime-picked port.
//!
//! It records every request, keeps each run's history by offset (W&B's
//! file_stream overwrites lines by offset), and can inject faults: error
//! statuses, 429 with Retry-After, slow answers, connections dropped
//! mid-request (before or after applying it). What it answers is what the
//! real SDK needs (docs/wandb-protocol.md section 7.3), and the SDK
//! comparison test checks its expectations against wandb 0.31.0 itself.

use std::collections::{BTreeMap, VecDeque};
use std::io::Read;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde_json::{json, Value};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpListener;

/// One request as received.
#[derive(Debug, Clone)]
pub struct Recorded {
    pub method: String,
    /// Path as sent (origin form; absolute form when it came via a proxy
    /// that forwards it so).
    pub target: String,
    pub path: String,
    /// Header names in lower case.
    pub headers: BTreeMap<String, String>,
    /// Body, gunzipped when `Content-Encoding: gzip`.
    pub body: Vec<u8>,
    pub gzipped: bool,
    /// When the request was read (for tests of what a client stops doing).
    pub at: std::time::Instant,
    /// An artifact file upload is hashed as it arrives instead of being
    /// kept (checkpoints are large): its MD5 (base64) and length; `body`
    /// is then empty.
    pub upload: Option<(String, u64)>,
}

impl Recorded {
    pub fn json(&self) -> Value {
        parse_extended_json(&String::from_utf8_lossy(&self.body))
    }
    pub fn operation(&self) -> Option<String> {
        self.json()
            .get("operationName")
            .and_then(Value::as_str)
            .map(str::to_string)
    }
    pub fn is_file_stream(&self) -> bool {
        self.path.ends_with("/file_stream")
    }
    /// An empty file_stream request: core's heartbeat, which keeps a run
    /// "running" on the server.
    pub fn is_heartbeat(&self) -> bool {
        self.is_file_stream() && self.json() == serde_json::json!({})
    }
}

/// What the stand-in holds for one run.
#[derive(Debug, Clone, Default)]
pub struct RunRecord {
    pub history: BTreeMap<u64, String>,
    /// Lines written in total (more than `history.len()` when a request
    /// was replayed and overwrote lines).
    pub line_writes: u64,
    pub summary: Option<String>,
    pub exit_code: Option<i64>,
    pub entity: String,
    pub project: String,
    /// `output.log` lines by offset (the Logs tab), as file_stream sent them.
    pub console: BTreeMap<u64, String>,
    /// `output.log` lines written in total (replays overwrite).
    pub console_writes: u64,
    /// Run files uploaded (CreateRunFiles, then PUT), last body per name.
    pub files: BTreeMap<String, Vec<u8>>,
    /// `host` and `program` of the last UpsertBucket that set them.
    pub host: Option<String>,
    pub program: Option<String>,
}

/// A fault to inject into the next matching request.
#[derive(Debug, Clone)]
pub enum Fault {
    /// Answer with this status (not applied).
    Status(u16),
    /// 429 with `Retry-After: secs` (not applied).
    TooMany { retry_after_secs: u32 },
    /// Apply the request, then answer only after this delay (past the
    /// client's timeout: it must retry, and the retry overwrites).
    SlowApplied(Duration),
    /// Read half the body, then drop the connection (not applied).
    ResetMidRequest,
    /// Apply the request, then drop the connection without answering.
    DropAfterApply,
    /// 429 with this `Retry-After` value (`None`: no header at all).
    TooManyRaw(Option<String>),
    /// 307 to `location` (not applied).
    Redirect(String),
}

/// Which requests a fault applies to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum On {
    FileStream,
    Graphql,
    /// Artifact file and manifest uploads.
    Upload,
}

#[derive(Default)]
struct Inner {
    requests: Vec<Recorded>,
    runs: BTreeMap<String, RunRecord>,
    faults: VecDeque<(On, Fault)>,
    faults_done: Vec<Fault>,
    artifacts: super::artifacts::Store,
    /// Artifact file uploads are read at most this fast (bytes/s).
    upload_rate: Option<u64>,
    /// Artifact file uploads whose headers arrived (finished or not).
    uploads_started: usize,
    latency: Duration,
    /// Answer every file_stream request with this status until cleared.
    sticky_file_stream_status: Option<u16>,
    /// Optional server features announced by ServerFeaturesQuery.
    features: Vec<String>,
    /// Answer every file_stream request with this fault until cleared.
    sticky_file_stream: Option<Fault>,
    /// Error answers echo the request (see [`echo`]).
    echo: bool,
    /// Requests about this run (by W&B run name) get this status, as a
    /// server answers for a run it will not take; with `true`, only its
    /// file_stream requests.
    refused_run: Option<(String, u16, bool)>,
    /// GraphQL requests about this run (`None`: about any run) are
    /// answered with HTTP 200 and `{"errors": [{"message": ...}]}`, as
    /// W&B answers a resolver's refusal; the error's `extensions` echo the
    /// request's Authorization header (nothing of it may reach a log).
    graphql_error: Option<(Option<String>, String)>,
    /// An artifact operation answered with GraphQL errors in a 200, the
    /// next `times` times it is asked (operation, message, times); the
    /// `extensions` echo the request's Authorization header.
    artifact_error: Option<(String, String, usize)>,
    /// Served over TLS: upload URLs are https.
    tls: bool,
}

/// The running stand-in, on its own thread and runtime (tests stay
/// synchronous). Dropping it stops it.
pub struct StandIn {
    pub addr: SocketAddr,
    inner: Arc<Mutex<Inner>>,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
}

impl Drop for StandIn {
    fn drop(&mut self) {
        if let Some(s) = self.stop.take() {
            let _ = s.send(());
        }
    }
}

impl StandIn {
    pub fn start() -> StandIn {
        StandIn::start_with(None, 0)
    }

    /// On a given port (a server that comes back where it was).
    pub fn start_on(port: u16) -> StandIn {
        StandIn::start_with(None, port)
    }

    /// An https stand-in with this certificate chain and key (PEM files).
    pub fn start_tls(cert: &std::path::Path, key: &std::path::Path) -> StandIn {
        use rustls_pki_types::pem::PemObject;
        use rustls_pki_types::{CertificateDer, PrivateKeyDer};
        let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(cert)
            .expect("read cert")
            .collect::<Result<_, _>>()
            .expect("parse cert");
        let key = PrivateKeyDer::from_pem_file(key).expect("read key");
        let config = tokio_rustls::rustls::ServerConfig::builder_with_provider(Arc::new(
            tokio_rustls::rustls::crypto::ring::default_provider(),
        ))
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_no_client_auth()
        .with_single_cert(certs, key)
        .expect("server certificate");
        StandIn::start_with(Some(tokio_rustls::TlsAcceptor::from(Arc::new(config))), 0)
    }

    fn start_with(tls: Option<tokio_rustls::TlsAcceptor>, port: u16) -> StandIn {
        let inner = Arc::new(Mutex::new(Inner {
            tls: tls.is_some(),
            ..Inner::default()
        }));
        let shared = inner.clone();
        let (addr_tx, addr_rx) = std::sync::mpsc::channel();
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_multi_thread()
                .worker_threads(2)
                .enable_all()
                .build()
                .unwrap();
            rt.block_on(async move {
                let listener = TcpListener::bind(("127.0.0.1", port))
                    .await
                    .expect("bind stand-in");
                let addr = listener.local_addr().unwrap();
                addr_tx.send(addr).unwrap();
                let accept = async {
                    loop {
                        let Ok((stream, _)) = listener.accept().await else {
                            continue;
                        };
                        let shared = shared.clone();
                        let tls = tls.clone();
                        tokio::spawn(async move {
                            match tls {
                                Some(acceptor) => {
                                    if let Ok(stream) = acceptor.accept(stream).await {
                                        let _ = serve(stream, shared, addr).await;
                                    }
                                }
                                None => {
                                    let _ = serve(stream, shared, addr).await;
                                }
                            }
                        });
                    }
                };
                tokio::select! {
                    _ = accept => {}
                    _ = stopped => {}
                }
            });
        });
        let addr = addr_rx.recv().expect("stand-in thread started");
        StandIn {
            addr,
            inner,
            stop: Some(stop),
        }
    }

    pub fn base_url(&self) -> String {
        format!("http://{}", self.addr)
    }

    pub fn https_url(&self) -> String {
        format!("https://{}", self.addr)
    }

    pub fn inject(&self, on: On, fault: Fault) {
        self.inner.lock().unwrap().faults.push_back((on, fault));
    }

    /// Delay before every answer (keeps the agent mid-stream longer).
    pub fn set_latency(&self, d: Duration) {
        self.inner.lock().unwrap().latency = d;
    }

    pub fn set_sticky_file_stream_status(&self, status: Option<u16>) {
        self.inner.lock().unwrap().sticky_file_stream_status = status;
    }

    pub fn set_sticky_file_stream_fault(&self, fault: Option<Fault>) {
        self.inner.lock().unwrap().sticky_file_stream = fault;
    }

    /// Every error answer (injected faults, 404) echoes the request in its
    /// body and headers, as a careless server or proxy page does: the
    /// request line, every header (Authorization and Proxy-Authorization
    /// included), the body, and the Basic credentials decoded and
    /// percent-encoded.
    pub fn set_echo(&self, on: bool) {
        self.inner.lock().unwrap().echo = on;
    }

    pub fn set_features(&self, features: &[&str]) {
        self.inner.lock().unwrap().features = features.iter().map(|s| s.to_string()).collect();
    }

    /// Refuses every request about W&B run `name` (UpsertBucket with that
    /// name, CreateRunFiles for it, its file_stream) with `status`, or
    /// with `file_stream_only` just its file_stream, until cleared (`None`).
    pub fn refuse_run(&self, run: Option<(&str, u16, bool)>) {
        self.inner.lock().unwrap().refused_run =
            run.map(|(name, status, fs_only)| (name.to_string(), status, fs_only));
    }

    /// See `Inner::graphql_error`; `None` clears it.
    pub fn graphql_error(&self, about: Option<(Option<&str>, &str)>) {
        self.inner.lock().unwrap().graphql_error =
            about.map(|(run, message)| (run.map(str::to_string), message.to_string()));
    }

    /// See `Inner::artifact_error`; `None` clears it.
    pub fn artifact_error(&self, op: &str, message: &str, times: usize) {
        self.inner.lock().unwrap().artifact_error =
            Some((op.to_string(), message.to_string(), times));
    }

    /// How many more times the artifact error set will be answered.
    pub fn artifact_errors_left(&self) -> usize {
        self.inner
            .lock()
            .unwrap()
            .artifact_error
            .as_ref()
            .map_or(0, |(_, _, n)| *n)
    }

    pub fn faults_pending(&self) -> usize {
        self.inner.lock().unwrap().faults.len()
    }

    pub fn faults_done(&self) -> Vec<Fault> {
        self.inner.lock().unwrap().faults_done.clone()
    }

    pub fn requests(&self) -> Vec<Recorded> {
        self.inner.lock().unwrap().requests.clone()
    }

    pub fn runs(&self) -> BTreeMap<String, RunRecord> {
        self.inner.lock().unwrap().runs.clone()
    }

    /// Reads artifact file uploads at most `bytes_per_sec` (a slow uplink,
    /// so that a test can kill the agent mid-upload).
    pub fn set_upload_rate(&self, bytes_per_sec: Option<u64>) {
        self.inner.lock().unwrap().upload_rate = bytes_per_sec;
    }

    /// Artifact file uploads begun (their request headers arrived).
    pub fn uploads_started(&self) -> usize {
        self.inner.lock().unwrap().uploads_started
    }

    /// The artifact versions, files and refusals the stand-in holds.
    pub fn artifacts(&self) -> super::artifacts::Store {
        self.inner.lock().unwrap().artifacts.clone()
    }
}

/// The rest of an artifact file upload, hashed as it arrives.
async fn hash_body<S: AsyncRead + Unpin>(
    stream: &mut S,
    mut have: Vec<u8>,
    len: u64,
    rate: Option<u64>,
) -> std::io::Result<Option<(String, u64)>> {
    use md5::{Digest, Md5};
    let mut h = Md5::new();
    have.truncate(len as usize);
    let mut got = have.len() as u64;
    h.update(&have);
    let mut chunk = vec![0u8; 1 << 16];
    while got < len {
        let want = chunk.len().min((len - got) as usize);
        let n = stream.read(&mut chunk[..want]).await?;
        if n == 0 {
            return Ok(None);
        }
        h.update(&chunk[..n]);
        got += n as u64;
        if let Some(rate) = rate {
            tokio::time::sleep(Duration::from_secs_f64(n as f64 / rate.max(1) as f64)).await;
        }
    }
    Ok(Some((super::artifacts::b64(&h.finalize()), got)))
}

type Request = (
    String,
    String,
    BTreeMap<String, String>,
    Vec<u8>,
    Option<(String, u64)>,
);

async fn read_request<S: AsyncRead + Unpin>(
    stream: &mut S,
    inner: &Arc<Mutex<Inner>>,
) -> std::io::Result<Option<Request>> {
    let mut buf = Vec::new();
    let mut chunk = [0u8; 8192];
    let head_end = loop {
        if let Some(p) = find(&buf, b"\r\n\r\n") {
            break p;
        }
        let n = stream.read(&mut chunk).await?;
        if n == 0 {
            return Ok(None);
        }
        buf.extend_from_slice(&chunk[..n]);
    };
    let head = String::from_utf8_lossy(&buf[..head_end]).to_string();
    let mut lines = head.split("\r\n");
    let mut first = lines.next().unwrap_or("").split(' ');
    let method = first.next().unwrap_or("").to_string();
    let target = first.next().unwrap_or("").to_string();
    let mut headers = BTreeMap::new();
    for l in lines {
        if let Some((k, v)) = l.split_once(':') {
            headers.insert(k.trim().to_ascii_lowercase(), v.trim().to_string());
        }
    }
    let mut body = buf[head_end + 4..].to_vec();
    if method == "PUT"
        && (target.contains("/artifact-upload/file/") || target.contains("/artifact-upload/part/"))
    {
        let len: u64 = headers
            .get("content-length")
            .and_then(|v| v.parse().ok())
            .unwrap_or(0);
        let rate = {
            let mut g = inner.lock().unwrap();
            g.uploads_started += 1;
            g.upload_rate
        };
        let Some(upload) = hash_body(stream, body, len, rate).await? else {
            return Ok(None);
        };
        return Ok(Some((method, target, headers, Vec::new(), Some(upload))));
    }
    if headers
        .get("transfer-encoding")
        .is_some_and(|t| t.eq_ignore_ascii_case("chunked"))
    {
        // Read the whole chunked body, then decode it.
        loop {
            if let Some(decoded) = dechunk(&body) {
                body = decoded;
                break;
            }
            let n = stream.read(&mut chunk).await?;
            if n == 0 {
                return Ok(None);
            }
            body.extend_from_slice(&chunk[..n]);
        }
    } else {
        let len: usize = headers
            .get("content-length")
            .and_then(|v| v.parse().ok())
            .unwrap_or(0);
        while body.len() < len {
            let n = stream.read(&mut chunk).await?;
            if n == 0 {
                return Ok(None);
            }
            body.extend_from_slice(&chunk[..n]);
        }
        body.truncate(len);
    }
    Ok(Some((method, target, headers, body, None)))
}

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}

fn dechunk(mut data: &[u8]) -> Option<Vec<u8>> {
    let mut out = Vec::new();
    loop {
        let eol = find(data, b"\r\n")?;
        let size = usize::from_str_radix(
            String::from_utf8_lossy(&data[..eol])
                .split(';')
                .next()?
                .trim(),
            16,
        )
        .ok()?;
        data = &data[eol + 2..];
        if size == 0 {
            return Some(out);
        }
        if data.len() < size + 2 {
            return None;
        }
        out.extend_from_slice(&data[..size]);
        data = &data[size + 2..];
    }
}

async fn respond<S: AsyncWrite + Unpin>(
    stream: &mut S,
    status: u16,
    extra: &[(&str, String)],
    body: &[u8],
) -> std::io::Result<()> {
    let reason = match status {
        200 => "OK",
        307 => "Temporary Redirect",
        400 => "Bad Request",
        404 => "Not Found",
        429 => "Too Many Requests",
        500 => "Internal Server Error",
        502 => "Bad Gateway",
        503 => "Service Unavailable",
        _ => "Status",
    };
    let mut head = format!("HTTP/1.1 {status} {reason}\r\nContent-Length: {}\r\nContent-Type: application/json\r\nConnection: close\r\n", body.len());
    for (k, v) in extra {
        head.push_str(&format!("{k}: {v}\r\n"));
    }
    head.push_str("\r\n");
    stream.write_all(head.as_bytes()).await?;
    stream.write_all(body).await?;
    stream.flush().await?;
    stream.shutdown().await
}

async fn serve<S: AsyncRead + AsyncWrite + Unpin>(
    mut stream: S,
    inner: Arc<Mutex<Inner>>,
    addr: SocketAddr,
) -> std::io::Result<()> {
    let Some((method, target, headers, raw, upload)) = read_request(&mut stream, &inner).await?
    else {
        return Ok(());
    };
    let path = match target.split_once("://") {
        Some((_, rest)) => rest
            .find('/')
            .map_or("/".to_string(), |i| rest[i..].to_string()),
        None => target.clone(),
    };
    let gzipped = headers
        .get("content-encoding")
        .is_some_and(|e| e.eq_ignore_ascii_case("gzip"));
    let body = if gzipped {
        let mut out = Vec::new();
        flate2::read::GzDecoder::new(&raw[..]).read_to_end(&mut out)?;
        out
    } else {
        raw.clone()
    };
    let rec = Recorded {
        method: method.clone(),
        target,
        path: path.clone(),
        headers,
        body,
        gzipped,
        at: std::time::Instant::now(),
        upload,
    };
    let on = if path.ends_with("/file_stream") {
        Some(On::FileStream)
    } else if path.starts_with("/graphql") {
        Some(On::Graphql)
    } else if path.starts_with("/artifact-upload/") {
        Some(On::Upload)
    } else {
        None
    };
    if std::env::var_os("MOSAIC_STANDIN_DEBUG").is_some() {
        eprintln!(
            "stand-in: {} {} {}",
            rec.method,
            rec.path,
            String::from_utf8_lossy(&rec.body[..rec.body.len().min(400)])
        );
    }
    let echoing = inner.lock().unwrap().echo;
    let (echo_body, echo_headers) = if echoing {
        echo(&rec)
    } else {
        (b"{\"error\":\"injected\"}".to_vec(), Vec::new())
    };
    let refused = {
        let g = inner.lock().unwrap();
        g.refused_run.clone()
    }
    .and_then(|(name, status, fs_only)| {
        let about = if path.ends_with("/file_stream") {
            path.split('/').nth(4) == Some(name.as_str())
        } else {
            let vars = rec.json().get("variables").cloned().unwrap_or_default();
            !fs_only
                && path.starts_with("/graphql")
                && [&vars["name"], &vars["run"]]
                    .iter()
                    .any(|v| v.as_str() == Some(name.as_str()))
        };
        about.then_some(status)
    });
    if let Some(status) = refused {
        inner.lock().unwrap().requests.push(rec.clone());
        return respond(&mut stream, status, &[], b"{\"error\":\"run refused\"}").await;
    }
    let graphql_error = {
        let g = inner.lock().unwrap();
        g.graphql_error.clone()
    }
    .filter(|(run, _)| {
        let vars = rec.json().get("variables").cloned().unwrap_or_default();
        let about = [&vars["name"], &vars["run"]]
            .into_iter()
            .find_map(|v| v.as_str().map(str::to_string));
        path.starts_with("/graphql")
            && about.is_some()
            && run.as_ref().map_or(true, |r| about.as_ref() == Some(r))
    });
    if let Some((_, message)) = graphql_error {
        let auth = rec
            .headers
            .get("authorization")
            .cloned()
            .unwrap_or_default();
        inner.lock().unwrap().requests.push(rec.clone());
        let body = json!({
            "data": {"upsertBucket": null},
            "errors": [{"message": message, "path": ["upsertBucket"],
                        "extensions": {"request": {"Authorization": auth}}}],
        });
        return respond(&mut stream, 200, &[], body.to_string().as_bytes()).await;
    }
    let (fault, latency) = {
        let mut g = inner.lock().unwrap();
        g.requests.push(rec.clone());
        let idx = on.and_then(|on| g.faults.iter().position(|(o, _)| *o == on));
        let mut fault = idx.and_then(|i| g.faults.remove(i)).map(|(_, f)| f);
        if on == Some(On::FileStream) && fault.is_none() {
            fault = g.sticky_file_stream_status.map(Fault::Status);
        }
        if on == Some(On::FileStream) && fault.is_none() {
            fault = g.sticky_file_stream.clone();
        }
        if let Some(f) = &fault {
            g.faults_done.push(f.clone());
        }
        (fault, g.latency)
    };
    if !latency.is_zero() {
        tokio::time::sleep(latency).await;
    }
    match fault {
        Some(Fault::Status(s)) => return respond(&mut stream, s, &echo_headers, &echo_body).await,
        Some(Fault::TooMany { retry_after_secs }) => {
            let mut h = echo_headers.clone();
            h.push(("Retry-After", retry_after_secs.to_string()));
            return respond(&mut stream, 429, &h, &echo_body).await;
        }
        Some(Fault::TooManyRaw(value)) => {
            let mut h = echo_headers.clone();
            if let Some(v) = value {
                h.push(("Retry-After", v));
            }
            return respond(&mut stream, 429, &h, &echo_body).await;
        }
        Some(Fault::Redirect(location)) => {
            let mut h = echo_headers.clone();
            h.push(("Location", location));
            return respond(&mut stream, 307, &h, &echo_body).await;
        }
        Some(Fault::ResetMidRequest) => {
            // The body was read already; what matters is that the client
            // sees the connection die with no answer and nothing applied.
            drop(stream);
            return Ok(());
        }
        _ => {}
    }
    let answer = apply(&inner, &rec, addr);
    match fault {
        Some(Fault::SlowApplied(d)) => tokio::time::sleep(d).await,
        Some(Fault::DropAfterApply) => {
            drop(stream);
            return Ok(());
        }
        _ => {}
    }
    match answer {
        Some(mut body) => {
            // A part of a multipart upload is answered as S3 answers it:
            // its MD5 (hex, quoted) in the ETag header.
            let etag = body
                .as_object_mut()
                .and_then(|o| o.remove("__etag"))
                .and_then(|e| e.as_str().map(|e| format!("\"{e}\"")));
            let extra: Vec<(&str, String)> = etag.into_iter().map(|e| ("ETag", e)).collect();
            respond(&mut stream, 200, &extra, body.to_string().as_bytes()).await
        }
        None if echoing => respond(&mut stream, 404, &echo_headers, &echo_body).await,
        None => respond(&mut stream, 404, &[], b"{}").await,
    }
}

/// What an echoing server answers with: the request in the body, its
/// credentials in the headers.
fn echo(rec: &Recorded) -> (Vec<u8>, Vec<(&'static str, String)>) {
    let mut body = format!("ECHO {} {}\n", rec.method, rec.target);
    let mut headers = Vec::new();
    for (k, v) in &rec.headers {
        body.push_str(&format!("{k}: {v}\n"));
    }
    for (name, echo_name) in [
        ("authorization", "X-Echo-Authorization"),
        ("proxy-authorization", "X-Echo-Proxy-Authorization"),
    ] {
        let Some(v) = rec.headers.get(name) else {
            continue;
        };
        headers.push((echo_name, v.clone()));
        if let Some(decoded) = v.strip_prefix("Basic ").and_then(base64_decode) {
            let (_, secret) = decoded.split_once(':').unwrap_or(("", &decoded));
            body.push_str(&format!(
                "{name} decoded: {decoded} secret={} url=http://{decoded}@example.invalid/\n",
                percent_encode(secret)
            ));
            headers.push(("WWW-Authenticate", format!("Basic realm=\"{decoded}\"")));
        }
    }
    body.push_str(&String::from_utf8_lossy(
        &rec.body[..rec.body.len().min(2048)],
    ));
    (body.into_bytes(), headers)
}

pub fn percent_encode(s: &str) -> String {
    s.bytes()
        .map(|b| {
            if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
                (b as char).to_string()
            } else {
                format!("%{b:02X}")
            }
        })
        .collect()
}

fn base64_decode(s: &str) -> Option<String> {
    const T: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut bits = 0u32;
    let mut n = 0;
    let mut out = Vec::new();
    for c in s.trim().bytes().filter(|&c| c != b'=') {
        bits = (bits << 6) | T.iter().position(|&t| t == c)? as u32;
        n += 6;
        if n >= 8 {
            n -= 8;
            out.push((bits >> n) as u8);
        }
    }
    String::from_utf8(out).ok()
}

/// Applies a request to the stored runs; the JSON answer, or `None` (404).
fn apply(inner: &Arc<Mutex<Inner>>, rec: &Recorded, addr: SocketAddr) -> Option<Value> {
    let mut g = inner.lock().unwrap();
    if rec.method == "PUT" && rec.path.starts_with("/upload/") {
        // /upload/<run>/<file>, as CreateRunFiles answered.
        if let Some((run, file)) = rec.path["/upload/".len()..].split_once('/') {
            g.runs
                .entry(run.to_string())
                .or_default()
                .files
                .insert(file.to_string(), rec.body.clone());
        }
        return Some(json!({}));
    }
    if rec.method == "PUT" && rec.path.starts_with("/artifact-upload/part/") {
        let (md5, len) = rec
            .upload
            .clone()
            .unwrap_or_else(|| (super::artifacts::md5_b64(&rec.body), rec.body.len() as u64));
        let content_md5 = rec.headers.get("content-md5").map(String::as_str);
        return g
            .artifacts
            .upload_part(&rec.path, content_md5, &md5, len)
            .map(|hex| json!({"__etag": hex}));
    }
    if rec.method == "PUT" && rec.path.starts_with("/artifact-upload/") {
        let (md5, len) = rec
            .upload
            .clone()
            .unwrap_or_else(|| (super::artifacts::md5_b64(&rec.body), rec.body.len() as u64));
        return g
            .artifacts
            .upload(&rec.path, &md5, len, &rec.body)
            .then(|| json!({}));
    }
    if rec.method != "POST" {
        return None;
    }
    if rec.path.starts_with("/graphql") {
        let req = rec.json();
        // Clients that send no operationName (the SDK's service API) name
        // the operation in the query text.
        let named = req["query"].as_str().and_then(|q| {
            let q = q.trim_start();
            let rest = q
                .strip_prefix("query ")
                .or_else(|| q.strip_prefix("mutation "))?;
            rest.split(|c: char| !c.is_alphanumeric() && c != '_')
                .next()
                .map(str::to_string)
        });
        let op = req
            .get("operationName")
            .and_then(Value::as_str)
            .filter(|s| !s.is_empty())
            .map(str::to_string)
            .or(named)
            .unwrap_or_default();
        let op = op.as_str();
        let v = req.get("variables").cloned().unwrap_or(json!({}));
        let data = match op {
            "UpsertBucket" => {
                let name = v["name"].as_str().unwrap_or("generatedrunid").to_string();
                let project = v["project"].as_str().unwrap_or("uncategorized").to_string();
                let entity = v["entity"].as_str().unwrap_or("test-entity").to_string();
                let run = g.runs.entry(name.clone()).or_default();
                run.entity = entity.clone();
                run.project = project.clone();
                if let Some(h) = v["host"].as_str() {
                    run.host = Some(h.to_string());
                }
                if let Some(p) = v["program"].as_str() {
                    run.program = Some(p.to_string());
                }
                let count = run.history.keys().next_back().map_or(0, |k| k + 1);
                json!({"upsertBucket": {"bucket": {
                    "id": "UnVuOnYxOnN0YW5kaW4=", "name": name,
                    "displayName": v["displayName"], "description": null,
                    "config": v["config"].as_str().unwrap_or("{}"), "sweepName": null,
                    "project": {"id": "UHJvamVjdDox", "name": project,
                                "entity": {"id": "RW50aXR5OjE=", "name": entity}},
                    "historyLineCount": count}, "inserted": true}})
            }
            "CreateRunFiles" => {
                let scheme = if g.tls { "https" } else { "http" };
                let files: Vec<Value> = v["files"].as_array().cloned().unwrap_or_default().iter()
                    .map(|f| json!({"name": f, "uploadUrl": format!("{scheme}://{addr}/upload/{}/{}", v["run"].as_str().unwrap_or("run"), f.as_str().unwrap_or("f"))}))
                    .collect();
                json!({"createRunFiles": {"runID": "UnVuOnYxOnN0YW5kaW4=", "uploadHeaders": [], "files": files}})
            }
            "Viewer" => {
                json!({"viewer": {"id": "VXNlcjox", "entity": "test-entity", "username": "tester",
                                "email": "t@example.com", "flags": "{}", "teams": {"edges": []}}})
            }
            "ServerFeaturesQuery" => {
                let fs: Vec<Value> = g
                    .features
                    .iter()
                    .map(|f| json!({"name": f, "isEnabled": true}))
                    .collect();
                json!({"serverInfo": {"features": fs}})
            }
            "RunResumeStatus" => json!({"model": null}),
            _ if g
                .artifact_error
                .as_ref()
                .is_some_and(|(o, _, left)| o == op && *left > 0) =>
            {
                let (_, message, left) = g.artifact_error.as_mut().unwrap();
                *left -= 1;
                let auth = rec
                    .headers
                    .get("authorization")
                    .cloned()
                    .unwrap_or_default();
                let mut field = op.to_string();
                field[..1].make_ascii_lowercase();
                return Some(json!({
                    "data": {field.as_str(): null},
                    "errors": [{"message": message, "path": [field],
                                "extensions": {"request": {"Authorization": auth}}}],
                }));
            }
            _ => match g.artifacts.graphql(op, &v, addr) {
                Some(d) if d.get("__error").is_some() => {
                    return Some(json!({"errors": [{"message": d["__error"]}], "data": null}));
                }
                Some(d) => d,
                None => json!({}),
            },
        };
        return Some(json!({"data": data}));
    }
    if rec.path.starts_with("/files/") && rec.path.ends_with("/file_stream") {
        let parts: Vec<&str> = rec.path.trim_start_matches('/').split('/').collect();
        if parts.len() != 5 {
            return None;
        }
        let req = rec.json();
        let run = g.runs.entry(parts[3].to_string()).or_default();
        run.entity = parts[1].to_string();
        run.project = parts[2].to_string();
        if let Some(h) = req.pointer("/files/wandb-history.jsonl") {
            let offset = h["offset"].as_u64().unwrap_or(0);
            for (i, line) in h["content"]
                .as_array()
                .cloned()
                .unwrap_or_default()
                .iter()
                .enumerate()
            {
                run.history
                    .insert(offset + i as u64, line.as_str().unwrap_or("").to_string());
                run.line_writes += 1;
            }
        }
        if let Some(h) = req.pointer("/files/output.log") {
            let offset = h["offset"].as_u64().unwrap_or(0);
            for (i, line) in h["content"]
                .as_array()
                .cloned()
                .unwrap_or_default()
                .iter()
                .enumerate()
            {
                run.console
                    .insert(offset + i as u64, line.as_str().unwrap_or("").to_string());
                run.console_writes += 1;
            }
        }
        if let Some(s) = req
            .pointer("/files/wandb-summary.json/content/0")
            .and_then(Value::as_str)
        {
            run.summary = Some(s.to_string());
        }
        if req.get("complete").and_then(Value::as_bool) == Some(true) {
            run.exit_code = req.get("exitcode").and_then(Value::as_i64);
        }
        return Some(json!({"exitcode": null, "limits": {}}));
    }
    None
}

/// Parses W&B's extended JSON (bare `NaN`, `Infinity`, `-Infinity`) by
/// turning those tokens, outside strings, into the strings "NaN", ...
pub fn parse_extended_json(text: &str) -> Value {
    let b = text.as_bytes();
    let mut out: Vec<u8> = Vec::with_capacity(b.len() + 16);
    let mut in_str = false;
    let mut escaped = false;
    let mut i = 0;
    while i < b.len() {
        let c = b[i];
        if in_str {
            out.push(c);
            if escaped {
                escaped = false;
            } else if c == b'\\' {
                escaped = true;
            } else if c == b'"' {
                in_str = false;
            }
            i += 1;
            continue;
        }
        let rest = &b[i..];
        if c == b'"' {
            in_str = true;
            out.push(c);
            i += 1;
        } else if rest.starts_with(b"NaN") {
            out.extend_from_slice(b"\"NaN\"");
            i += 3;
        } else if rest.starts_with(b"-Infinity") {
            out.extend_from_slice(b"\"-Infinity\"");
            i += 9;
        } else if rest.starts_with(b"Infinity") {
            out.extend_from_slice(b"\"Infinity\"");
            i += 8;
        } else {
            out.push(c);
            i += 1;
        }
    }
    serde_json::from_slice(&out).unwrap_or(Value::Null)
}
