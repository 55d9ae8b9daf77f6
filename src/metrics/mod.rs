//! The `[metrics]` endpoint: `/metrics` for Prometheus, `/health` and
//! `/ready` for probes. Off by default.
//!
//! - `/metrics`: the counters of `status --json` (read from the journal at
//!   each scrape, so they are exact and survive restarts) plus the sink
//!   runners' retries and last progress, in the Prometheus text format
//!   ([`exposition`]).
//! - `/health`, liveness: 200 whenever the agent's runtime answers.
//! - `/ready`, readiness: 200 when the journal answers a read and every
//!   sink the agent runs is *current*: it has nothing left to deliver, or
//!   its last progress (an acknowledgement, or finding itself caught up)
//!   is less than `metrics.stale_after_secs` old. A sink that stopped (it
//!   gave up, `--once`) is not current. Else 503, naming each reason. A
//!   sink still retrying a failing destination stays current until that
//!   window passes, so one slow request does not flap the probe.

pub mod exposition;
mod http;

use std::net::SocketAddr;
use std::sync::Arc;

use anyhow::Context;

use crate::config::Config;
use crate::ingest::Unreadable;
use crate::journal::Journal;
use crate::sink::SinkHealth;
use crate::status::Status;
use http::Response;

/// What the endpoint reads: the journal, the agent's configuration, the
/// tailer's unreadable files and the sink runners' health.
#[derive(Clone)]
pub struct Probe {
    pub journal: Arc<Journal>,
    pub config: Config,
    pub unreadable: Unreadable,
    pub runners: Vec<(&'static str, Arc<SinkHealth>)>,
    pub started_at: f64,
}

/// The readiness verdict and why.
#[derive(Debug, Clone, Default)]
pub struct Readiness {
    pub ready: bool,
    /// Sinks that are not current (also set in `reasons`).
    pub lagging: Vec<String>,
    pub reasons: Vec<String>,
}

impl Probe {
    /// The status report with the runners' figures, as the snapshot has it.
    pub fn status(&self) -> anyhow::Result<Status> {
        let list = self
            .unreadable
            .lock()
            .map(|m| m.clone())
            .unwrap_or_default();
        let runners: Vec<_> = self.runners.iter().map(|(n, h)| (*n, h.report())).collect();
        Ok(
            Status::collect(&self.journal, &self.config.enabled_sinks(), list)?
                .with_runners(&runners),
        )
    }

    /// Readiness of a report (see the module documentation).
    pub fn readiness(&self, status: &anyhow::Result<Status>) -> Readiness {
        let status = match status {
            Ok(s) => s,
            Err(e) => {
                return Readiness {
                    ready: false,
                    lagging: vec![],
                    reasons: vec![format!("the journal does not answer: {e:#}")],
                }
            }
        };
        let stale = self.config.metrics.stale_after_secs as f64;
        let now = crate::util::now_secs();
        let mut r = Readiness::default();
        for sink in &status.sinks {
            let Some(runner) = sink.runner else { continue };
            let why = if !runner.running {
                Some("has stopped".to_string())
            } else if sink.pending > 0 && now - runner.last_progress_at > stale {
                Some(format!(
                    "has {} rows pending and made no progress for {:.0} s (limit {stale:.0} s; {} failures in a row)",
                    sink.pending,
                    now - runner.last_progress_at,
                    runner.consecutive_failures
                ))
            } else {
                None
            };
            if let Some(why) = why {
                r.reasons.push(format!("sink {} {why}", sink.name));
                r.lagging.push(sink.name.clone());
            }
        }
        r.ready = r.reasons.is_empty();
        r
    }

    async fn answer(self: Arc<Self>, path: String) -> Response {
        match path.as_str() {
            "/health" => Response::text(200, "ok\n"),
            "/metrics" | "/ready" => {
                // sled reads are blocking: off the runtime's workers.
                let me = self.clone();
                let (status, ready) = match tokio::task::spawn_blocking(move || {
                    let status = me.status();
                    let ready = me.readiness(&status);
                    (status, ready)
                })
                .await
                {
                    Ok(pair) => pair,
                    Err(e) => return Response::text(503, format!("status failed: {e}\n")),
                };
                if path == "/ready" {
                    return ready_response(&ready);
                }
                match status {
                    Ok(status) => Response {
                        status: 200,
                        content_type: exposition::CONTENT_TYPE,
                        body: exposition::render(
                            &status,
                            &ready,
                            &exposition::Meta {
                                version: env!("CARGO_PKG_VERSION"),
                                started_at: self.started_at,
                                max_bytes: self.config.store.max_bytes,
                            },
                        ),
                    },
                    Err(e) => Response::text(503, format!("the journal does not answer: {e:#}\n")),
                }
            }
            _ => Response::text(404, "not found; try /metrics, /health or /ready\n"),
        }
    }
}

fn ready_response(r: &Readiness) -> Response {
    if r.ready {
        Response::text(200, "ready\n")
    } else {
        Response::text(503, format!("not ready\n{}\n", r.reasons.join("\n")))
    }
}

/// Binds `metrics.listen`, before anything else starts, so that a taken
/// port fails the agent's start with the address named.
pub fn bind(config: &crate::config::MetricsConfig) -> anyhow::Result<tokio::net::TcpListener> {
    let addr: SocketAddr = config.addr().map_err(anyhow::Error::msg)?;
    let context = || format!("cannot listen on {addr} (metrics.listen)");
    let listener = std::net::TcpListener::bind(addr).with_context(context)?;
    listener.set_nonblocking(true).with_context(context)?;
    let listener = tokio::net::TcpListener::from_std(listener).with_context(context)?;
    let bound = listener.local_addr()?;
    if !bound.ip().is_loopback() {
        tracing::warn!(listen = %bound, "the metrics endpoint is reachable beyond this machine; it has no authentication");
    }
    tracing::info!(listen = %bound, "metrics endpoint: /metrics, /health, /ready");
    Ok(listener)
}

/// Serves `/metrics`, `/health` and `/ready` on `listener` until dropped.
pub async fn serve(listener: tokio::net::TcpListener, probe: Probe) {
    let probe = Arc::new(probe);
    http::serve(listener, move |path| probe.clone().answer(path)).await
}
