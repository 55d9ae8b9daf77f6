//! The HTTP client for W&B: TLS, proxy, auth, and which failures are
//! worth retrying.
//!
//! Retry classification follows the issue (and is close to W&B core's
//! `RetryMostFailures`, `core/internal/clients/retry_policy.go`):
//! connection errors, timeouts, 5xx, 408 and 409 are retried with
//! exponential backoff and jitter; 429 waits for `Retry-After` when the
//! server gives one, but never less than a floor (`retry_initial`, at
//! least 1 s: a `Retry-After: 0` must not turn into hundreds of requests a
//! second); any other 4xx is final for the request and reported with the
//! run, the URL and the status, never the body (a server or proxy page may
//! echo the request, key included: bodies go to debug logs only, and only
//! as a scrubbed excerpt, see redact.rs). A request that is
//! still failing after `give_up_after` is reported as an error too; the
//! sink runner then recovers and tries again later, so rows stay in the
//! journal and nothing is dropped.

use std::io::Write;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use backoff::backoff::Backoff;
use thiserror::Error;

use super::auth::ApiKey;
use super::proxy::{mask_url, ProxyChoice};
use super::redact;

/// How the client connects and how hard it retries.
#[derive(Debug, Clone)]
pub struct HttpOptions {
    pub timeout: Duration,
    pub proxy: ProxyChoice,
    pub ca_file: Option<PathBuf>,
    pub retry_initial: Duration,
    pub retry_max: Duration,
    /// A request still failing after this long is reported as an error.
    pub give_up_after: Duration,
    /// `X-WANDB-USERNAME` / `X-WANDB-USER-EMAIL`, sent (even empty) on
    /// GraphQL requests as the SDK does.
    pub username: String,
    pub email: String,
}

/// A W&B request failure, with the run, URL (no credentials) and status.
#[derive(Debug, Error)]
pub enum WandbError {
    #[error("W&B refused {what} for run {run}: HTTP {status} from {url} (not retried)")]
    Rejected {
        what: &'static str,
        run: String,
        url: String,
        status: u16,
    },
    #[error("W&B {what} for run {run} at {url} still failing after {attempts} attempts: {last}")]
    Unavailable {
        what: &'static str,
        run: String,
        url: String,
        attempts: u32,
        last: String,
    },
    #[error("W&B {what} for run {run}: {message}")]
    Protocol {
        what: &'static str,
        run: String,
        message: String,
    },
    /// GraphQL errors in a 200 answer about one run (see gql_errors.rs):
    /// the run is refused, as for a 4xx.
    #[error("W&B refused {what} for run {run}: GraphQL errors in the answer from {url}: {messages} (not retried)")]
    GraphQlRun {
        what: &'static str,
        run: String,
        url: String,
        messages: String,
    },
    /// GraphQL errors in a 200 answer that concern every run (the key,
    /// the entity, the project): retried, with what to check.
    #[error("W&B answered {what} for run {run} at {url} with GraphQL errors that concern every run: {messages} (check the API key, WANDB_ENTITY / sinks.wandb.entity and WANDB_PROJECT / sinks.wandb.project; retried)")]
    GraphQlShared {
        what: &'static str,
        run: String,
        url: String,
        messages: String,
    },
    #[error("W&B client setup: {0}")]
    Setup(String),
}

/// One request to send.
pub struct Request<'a> {
    pub url: &'a str,
    /// What it is, for errors: "UpsertBucket", "file_stream".
    pub what: &'static str,
    pub run: &'a str,
    pub body: Vec<u8>,
    pub gzip: bool,
    pub graphql: bool,
    /// A file upload (PUT to a pre-signed URL) instead of a JSON POST.
    pub upload: Option<Upload>,
}

/// How to PUT a run file (`CreateRunFiles` answer).
#[derive(Debug, Clone, Default)]
pub struct Upload {
    /// `uploadHeaders`, split at the first `:`.
    pub headers: Vec<(String, String)>,
    /// Attach the API key. Core sends none on uploads (pre-signed URLs).
    pub with_auth: bool,
}

/// The configured client plus the credentials it attaches.
pub struct Http {
    client: reqwest::Client,
    key: ApiKey,
    opts: HttpOptions,
}

/// What one attempt came to.
enum Outcome {
    /// The body, and the `ETag` header if there was one (a part's).
    Done(Vec<u8>, Option<String>),
    Retry {
        why: String,
        after: Option<Duration>,
        /// The server asked us to slow down (429, or a `Retry-After`):
        /// wait at least the floor, whatever it said.
        slow_down: bool,
    },
    Final(WandbError),
}

impl Http {
    pub fn new(key: ApiKey, opts: HttpOptions) -> Result<Http, WandbError> {
        // Before anything is sent: whatever echoes these back is scrubbed.
        redact::register_key(key.expose());
        if let Some(url) = &opts.proxy.url {
            redact::register_proxy(url);
        }
        // Proxy selection is ours (proxy.rs), so reqwest must not apply the
        // environment on its own.
        let mut builder = reqwest::Client::builder()
            .no_proxy()
            .timeout(opts.timeout)
            .connect_timeout(opts.timeout.min(Duration::from_secs(30)))
            .user_agent(concat!("mosaic-shipper/", env!("CARGO_PKG_VERSION")))
            .use_rustls_tls();
        if let Some(url) = &opts.proxy.url {
            let proxy = reqwest::Proxy::all(url.as_str()).map_err(|e| {
                WandbError::Setup(format!(
                    "bad proxy URL {}: {}",
                    mask_url(url),
                    e.without_url()
                ))
            })?;
            builder = builder.proxy(proxy);
        }
        if let Some(path) = &opts.ca_file {
            let pem = std::fs::read(path).map_err(|e| {
                WandbError::Setup(format!("cannot read ca_file {}: {e}", path.display()))
            })?;
            let certs = reqwest::Certificate::from_pem_bundle(&pem).map_err(|e| {
                WandbError::Setup(format!(
                    "ca_file {} holds no usable PEM certificate: {e}",
                    path.display()
                ))
            })?;
            if certs.is_empty() {
                return Err(WandbError::Setup(format!(
                    "ca_file {} holds no PEM certificate",
                    path.display()
                )));
            }
            for cert in certs {
                builder = builder.add_root_certificate(cert);
            }
        }
        let client = builder
            .build()
            .map_err(|e| WandbError::Setup(e.without_url().to_string()))?;
        Ok(Http { client, key, opts })
    }

    /// Sends `req`, retrying as the module documentation says; returns the
    /// body of the first successful (2xx) response.
    pub async fn post(&self, req: &Request<'_>) -> Result<Vec<u8>, WandbError> {
        let body = if req.gzip {
            let mut enc = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
            enc.write_all(&req.body)
                .expect("writing to a Vec cannot fail");
            enc.finish().expect("writing to a Vec cannot fail")
        } else {
            req.body.clone()
        };
        self.with_retries(req, None, || async {
            Ok(reqwest::Body::from(body.clone()))
        })
        .await
        .map(|(b, _)| b)
    }

    /// PUTs the file at `path` (`len` bytes) to `req.url` as it is read,
    /// never whole in memory, with the same retry policy; every attempt
    /// reads the file again from its start (an upload restarts in full).
    /// `req.upload` says which headers go with it; `req.body` is unused.
    /// The timeout (`timeout_ms`) is for the answer; the body gets on top
    /// of it one second per MiB (an uplink slower than 1 MiB/s fails).
    pub async fn put_file(
        &self,
        req: &Request<'_>,
        path: &std::path::Path,
        len: u64,
    ) -> Result<Vec<u8>, WandbError> {
        let timeout = self.opts.timeout + Duration::from_secs(len >> 20);
        self.with_retries(req, Some(timeout), || async move {
            let file = tokio::fs::File::open(path)
                .await
                .map_err(|e| format!("cannot open {}: {e}", path.display()))?;
            use tokio::io::AsyncReadExt;
            let stream = tokio_util::io::ReaderStream::with_capacity(file.take(len), 1 << 20);
            Ok(reqwest::Body::wrap_stream(stream))
        })
        .await
        .map(|(b, _)| b)
    }

    /// PUTs `len` bytes of the file at `path` from `offset` (a part of a
    /// multipart upload), streamed as [`put_file`](Self::put_file) does;
    /// returns the answer's `ETag`, which the storage gives a part.
    pub async fn put_file_range(
        &self,
        req: &Request<'_>,
        path: &std::path::Path,
        offset: u64,
        len: u64,
    ) -> Result<Option<String>, WandbError> {
        let timeout = self.opts.timeout + Duration::from_secs(len >> 20);
        self.with_retries(req, Some(timeout), || async move {
            let mut file = tokio::fs::File::open(path)
                .await
                .map_err(|e| format!("cannot open {}: {e}", path.display()))?;
            use tokio::io::{AsyncReadExt, AsyncSeekExt};
            file.seek(std::io::SeekFrom::Start(offset))
                .await
                .map_err(|e| format!("cannot seek {} to {offset}: {e}", path.display()))?;
            let stream = tokio_util::io::ReaderStream::with_capacity(file.take(len), 1 << 20);
            Ok(reqwest::Body::wrap_stream(stream))
        })
        .await
        .map(|(_, etag)| etag)
    }

    async fn with_retries<F, Fut>(
        &self,
        req: &Request<'_>,
        timeout: Option<Duration>,
        mut body: F,
    ) -> Result<(Vec<u8>, Option<String>), WandbError>
    where
        F: FnMut() -> Fut,
        Fut: std::future::Future<Output = Result<reqwest::Body, String>>,
    {
        let mut backoff = backoff::ExponentialBackoff {
            initial_interval: self.opts.retry_initial,
            max_interval: self.opts.retry_max,
            randomization_factor: 0.25,
            multiplier: 2.0,
            max_elapsed_time: None,
            ..Default::default()
        };
        let started = Instant::now();
        let mut attempts = 0u32;
        loop {
            attempts += 1;
            let outcome = match body().await {
                Ok(b) => self.attempt(req, b, timeout).await,
                Err(why) => Outcome::Final(WandbError::Protocol {
                    what: req.what,
                    run: req.run.to_string(),
                    message: why,
                }),
            };
            let (why, after, slow_down) = match outcome {
                Outcome::Done(b, etag) => return Ok((b, etag)),
                Outcome::Final(e) => return Err(e),
                Outcome::Retry {
                    why,
                    after,
                    slow_down,
                } => (why, after, slow_down),
            };
            let mut wait = after
                .map(|d| d.min(Duration::from_secs(600)))
                .unwrap_or_else(|| backoff.next_backoff().unwrap_or(self.opts.retry_max));
            if slow_down {
                wait = wait.max(self.slow_down_floor());
            }
            if started.elapsed() + wait > self.opts.give_up_after {
                return Err(WandbError::Unavailable {
                    what: req.what,
                    run: req.run.to_string(),
                    url: redact::url(req.url),
                    attempts,
                    last: why,
                });
            }
            tracing::warn!(what = req.what, run = req.run, url = %redact::url(req.url), error = %why, retry_in = ?wait, "W&B request failed; retrying");
            tokio::time::sleep(wait).await;
        }
    }

    /// The least a server that asks us to slow down is given.
    fn slow_down_floor(&self) -> Duration {
        self.opts.retry_initial.max(Duration::from_secs(1))
    }

    async fn attempt(
        &self,
        req: &Request<'_>,
        body: reqwest::Body,
        timeout: Option<Duration>,
    ) -> Outcome {
        let mut rb = match &req.upload {
            None => self
                .client
                .post(req.url)
                .basic_auth("api", Some(self.key.expose()))
                .header(reqwest::header::CONTENT_TYPE, "application/json")
                .body(body),
            Some(up) => {
                let mut rb = self.client.put(req.url).body(body);
                if up.with_auth {
                    rb = rb.basic_auth("api", Some(self.key.expose()));
                }
                for (k, v) in &up.headers {
                    rb = rb.header(k.as_str(), v.as_str());
                }
                rb
            }
        };
        if req.gzip {
            rb = rb.header(reqwest::header::CONTENT_ENCODING, "gzip");
        }
        if let Some(t) = timeout {
            rb = rb.timeout(t);
        }
        if req.graphql {
            rb = rb
                .header("X-WANDB-USERNAME", self.opts.username.as_str())
                .header("X-WANDB-USER-EMAIL", self.opts.email.as_str());
        }
        let resp = match rb.send().await {
            Ok(r) => r,
            Err(e) => return self.classify_transport(&e),
        };
        let status = resp.status().as_u16();
        let retry_after = resp
            .headers()
            .get(reqwest::header::RETRY_AFTER)
            .and_then(|v| v.to_str().ok())
            .and_then(parse_retry_after);
        let etag = resp
            .headers()
            .get(reqwest::header::ETAG)
            .and_then(|v| v.to_str().ok())
            .map(str::to_string);
        let bytes = match resp.bytes().await {
            Ok(b) => b.to_vec(),
            Err(e) => return self.classify_transport(&e),
        };
        // W&B core accepts 200..=300 from file_stream; any 2xx is success.
        if (200..300).contains(&status) {
            return Outcome::Done(bytes, etag);
        }
        if !bytes.is_empty() {
            tracing::debug!(what = req.what, run = req.run, status, url = %redact::url(req.url), body = %redact::excerpt(&bytes), "W&B error answer");
        }
        match status {
            429 => Outcome::Retry {
                why: "HTTP 429 (rate limited)".into(),
                after: retry_after,
                slow_down: true,
            },
            408 | 409 => Outcome::Retry {
                why: format!("HTTP {status}"),
                after: None,
                slow_down: false,
            },
            s if s >= 500 => {
                let after = if s == 503 { retry_after } else { None };
                Outcome::Retry {
                    why: format!("HTTP {status}"),
                    after,
                    slow_down: after.is_some(),
                }
            }
            _ => Outcome::Final(WandbError::Rejected {
                what: req.what,
                run: req.run.to_string(),
                url: redact::url(req.url),
                status,
            }),
        }
    }

    fn classify_transport(&self, e: &reqwest::Error) -> Outcome {
        // Without the URL (it is logged separately, masked) but with the
        // cause chain, which says "connection refused", "timed out", ...
        let mut why = e.to_string();
        let mut source = std::error::Error::source(e);
        while let Some(s) = source {
            why.push_str(": ");
            why.push_str(&s.to_string());
            source = s.source();
        }
        if let Some(url) = e.url() {
            why = why.replace(url.as_str(), &redact::url(url.as_str()));
        }
        let why = redact::scrubbed(&why);
        if e.is_builder() {
            return Outcome::Final(WandbError::Setup(why));
        }
        // An untrusted certificate will not become trusted by retrying (W&B
        // core does not retry TLS errors either); say what to do instead.
        if why.contains("invalid peer certificate") {
            return Outcome::Final(WandbError::Setup(format!(
                "TLS certificate not trusted ({why}); if a proxy re-signs TLS, set sinks.wandb.ca_file to its CA"
            )));
        }
        // Through a proxy, a connection that cannot be made is one to the
        // proxy: name it, or the user looks for a dead W&B server.
        let why = match &self.opts.proxy.url {
            Some(proxy) if e.is_connect() => {
                format!("cannot connect to proxy {}: {why}", mask_url(proxy))
            }
            _ => why,
        };
        Outcome::Retry {
            why,
            after: None,
            slow_down: false,
        }
    }
}

/// `Retry-After`: delay-seconds (fractions accepted, as W&B core does) or
/// an HTTP date.
pub fn parse_retry_after(v: &str) -> Option<Duration> {
    let v = v.trim();
    if let Ok(secs) = v.parse::<f64>() {
        return (secs.is_finite() && secs >= 0.0).then(|| Duration::from_secs_f64(secs));
    }
    let when =
        time::OffsetDateTime::parse(v, &time::format_description::well_known::Rfc2822).ok()?;
    let now = time::OffsetDateTime::now_utc();
    Some(Duration::try_from(when - now).unwrap_or(Duration::ZERO))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retry_after_forms() {
        assert_eq!(parse_retry_after("2"), Some(Duration::from_secs(2)));
        assert_eq!(parse_retry_after("0.5"), Some(Duration::from_millis(500)));
        assert_eq!(
            parse_retry_after("Wed, 21 Oct 2015 07:28:00 GMT"),
            Some(Duration::ZERO)
        );
        assert_eq!(parse_retry_after("soon"), None);
    }
}
