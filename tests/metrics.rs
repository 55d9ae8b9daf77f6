//! The `[metrics]` endpoint of a running agent: `/metrics` passes the real
//! `promtool check metrics` and agrees with `status --json`, a real
//! Prometheus scrapes it, and `/ready` turns 503 while a sink cannot
//! deliver, and 200 again once it can.
//!
//! promtool and prometheus are Debian's `prometheus` package
//! (tests/apt-packages.txt; `scripts/test` installs it). Everything
//! listens on 127.0.0.1 with ports picked at run time.

mod support;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use support::harness::{self, agent, free_port, gen_logs, wait_for, write_config};
use support::standin::StandIn;

/// `GET path` over HTTP/1.0 (no chunking, the server closes): status and body.
fn get(port: u16, path: &str) -> Option<(u16, String)> {
    let mut s = TcpStream::connect(("127.0.0.1", port)).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(10))).ok()?;
    write!(s, "GET {path} HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n").ok()?;
    let mut out = String::new();
    s.read_to_string(&mut out).ok()?;
    let (head, body) = out.split_once("\r\n\r\n")?;
    let status = head.split(' ').nth(1)?.parse().ok()?;
    Some((status, body.to_string()))
}

/// The value of the sample `series` (`name` or `name{labels}`) in a page.
fn value(page: &str, series: &str) -> Option<f64> {
    page.lines()
        .find_map(|l| l.strip_prefix(series)?.strip_prefix(' ')?.parse().ok())
}

/// An agent config with the metrics endpoint on `port`; `wandb` lines go
/// to `[sinks.wandb]` (see harness::write_config).
fn config(dir: &Path, base_url: &str, wandb: &str, port: u16, stale: u64) -> PathBuf {
    let path = write_config(dir, base_url, wandb);
    let mut text = std::fs::read_to_string(&path).unwrap();
    // A file sink under a steady stream makes progress once per flush
    // interval (5 s by default): here, well within the short stale windows.
    assert!(
        !text.contains("[sinks.tensorboard]"),
        "config template changed"
    );
    text.push_str(&format!(
        "\n[metrics]\nenabled = true\nlisten = \"127.0.0.1:{port}\"\nstale_after_secs = {stale}\n\n[sinks.tensorboard]\nflush_interval_ms = 500\n"
    ));
    std::fs::write(&path, text).unwrap();
    path
}

fn promtool(page: &str) -> (bool, String) {
    let mut child = Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("promtool runs (Debian's prometheus package; scripts/test installs it)");
    child
        .stdin
        .take()
        .unwrap()
        .write_all(page.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    let said = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.success(), said)
}

#[test]
fn metrics_pass_promtool_and_agree_with_status() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let standin = StandIn::start();
    let run = "01JDMT00000000000000000001";
    let expected = gen_logs(dir, run, 150, 41);
    let port = free_port();
    let config = config(dir, &standin.base_url(), "", port, 300);
    let _agent = harness::spawn(&mut agent(dir, &config, &[]));

    let mut page = String::new();
    wait_for(
        dir,
        Duration::from_secs(60),
        "every row delivered, per /metrics",
        || {
            let Some((200, body)) = get(port, "/metrics") else {
                return false;
            };
            page = body;
            ["tensorboard", "wandb"].iter().all(|s| {
                value(
                    &page,
                    &format!("mosaic_shipper_sink_pending_rows{{sink=\"{s}\"}}"),
                ) == Some(0.0)
            }) && value(&page, "mosaic_shipper_journal_rows_total") >= Some(expected.len() as f64)
        },
    );

    let (ok, said) = promtool(&page);
    assert!(
        ok && said.trim().is_empty(),
        "promtool check metrics:\n{said}\n{page}"
    );
    // promtool is real: it flags a counter named against the conventions.
    let (ok, said) = promtool("# HELP x_bytes A.\n# TYPE x_bytes counter\nx_bytes 1\n");
    assert!(
        !ok && said.contains("_total"),
        "promtool passed a bad page: {said}"
    );

    for family in [
        "mosaic_shipper_lines_read_total",
        "mosaic_shipper_rows_extracted_total",
        "mosaic_shipper_lines_skipped_total",
        "mosaic_shipper_sink_pending_rows",
        "mosaic_shipper_sink_lag_seconds",
        "mosaic_shipper_sink_set_aside_rows",
        "mosaic_shipper_sink_retries_total",
        "mosaic_shipper_journal_held_bytes",
        "mosaic_shipper_files_followed",
    ] {
        assert!(
            page.contains(&format!("# HELP {family} ")),
            "{family}:\n{page}"
        );
    }
    // Rotated: the generator wrote several files (8000-byte rotation).
    assert!(
        value(&page, "mosaic_shipper_files_followed") > Some(1.0),
        "{page}"
    );
    assert_eq!(
        value(&page, "mosaic_shipper_sink_lag_seconds{sink=\"wandb\"}"),
        Some(0.0)
    );
    assert_eq!(value(&page, "mosaic_shipper_ready"), Some(1.0));

    // The same figures as `status --json` (the running agent's snapshot,
    // refreshed every 2 s: wait for it to catch up with the page).
    let lines = value(&page, "mosaic_shipper_lines_read_total").unwrap();
    let mut status = serde_json::Value::Null;
    wait_for(
        dir,
        Duration::from_secs(20),
        "a snapshot as recent as the page",
        || {
            let out = harness::shipper(dir, "status", &config, &["--json"])
                .stdout(Stdio::piped())
                .output()
                .unwrap();
            status = serde_json::from_slice(&out.stdout).unwrap_or_default();
            status["counters"]["lines"].as_f64() == Some(lines)
        },
    );
    let c = &status["counters"];
    assert_eq!(
        value(&page, "mosaic_shipper_rows_extracted_total"),
        c["rows"].as_f64()
    );
    assert_eq!(
        value(
            &page,
            "mosaic_shipper_lines_skipped_total{reason=\"unmatched\"}"
        ),
        c["unmatched"].as_f64()
    );
    assert_eq!(
        value(&page, "mosaic_shipper_files_followed"),
        Some(status["files"].as_array().unwrap().len() as f64)
    );
    let wandb = status["sinks"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["name"] == "wandb")
        .unwrap();
    assert_eq!(wandb["runner"]["running"], true, "{wandb}");
    assert_eq!(
        value(&page, "mosaic_shipper_sink_retries_total{sink=\"wandb\"}"),
        wandb["runner"]["retries"].as_f64()
    );

    assert_eq!(get(port, "/health"), Some((200, "ok\n".into())));
    assert_eq!(get(port, "/ready"), Some((200, "ready\n".into())));
    assert_eq!(get(port, "/nothing").map(|r| r.0), Some(404));
}

#[test]
fn ready_fails_while_a_sink_cannot_deliver_and_recovers() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let standin = StandIn::start();
    standin.set_sticky_file_stream_status(Some(503));
    let run = "01JDMT00000000000000000002";
    gen_logs(dir, run, 40, 42);
    let port = free_port();
    // Attempts end after 1 s of retries, and 2 s without progress is stale.
    let config = config(dir, &standin.base_url(), "give_up_secs = 1\n", port, 2);
    let _agent = harness::spawn(&mut agent(dir, &config, &[]));

    let mut body = String::new();
    wait_for(
        dir,
        Duration::from_secs(60),
        "/ready to say 503",
        || match get(port, "/ready") {
            Some((503, b)) => {
                body = b;
                true
            }
            _ => false,
        },
    );
    assert!(
        body.starts_with("not ready\n")
            && body.contains("sink wandb has")
            && body.contains("pending"),
        "{body}"
    );
    assert!(
        !body.contains("tensorboard"),
        "tensorboard delivers: {body}"
    );
    // Liveness is unaffected.
    assert_eq!(get(port, "/health").map(|r| r.0), Some(200));
    let mut page = String::new();
    wait_for(dir, Duration::from_secs(30), "a counted retry", || {
        page = get(port, "/metrics").map(|r| r.1).unwrap_or_default();
        value(&page, "mosaic_shipper_sink_retries_total{sink=\"wandb\"}") >= Some(1.0)
    });
    assert_eq!(value(&page, "mosaic_shipper_ready"), Some(0.0), "{page}");
    assert_eq!(
        value(&page, "mosaic_shipper_sink_current{sink=\"wandb\"}"),
        Some(0.0)
    );
    assert_eq!(
        value(&page, "mosaic_shipper_sink_current{sink=\"tensorboard\"}"),
        Some(1.0)
    );
    assert!(value(&page, "mosaic_shipper_sink_lag_seconds{sink=\"wandb\"}") > Some(0.0));
    let (ok, said) = promtool(&page);
    assert!(
        ok && said.trim().is_empty(),
        "promtool check metrics:\n{said}"
    );

    standin.set_sticky_file_stream_status(None);
    wait_for(
        dir,
        Duration::from_secs(60),
        "/ready to say 200 again",
        || get(port, "/ready").map(|r| r.0) == Some(200),
    );
}

/// A real Prometheus server scrapes the endpoint (a 1 s interval) and its
/// query API returns the agent's figures.
#[test]
fn a_real_prometheus_scrapes_the_agent() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let run = "01JDMT00000000000000000003";
    let expected = gen_logs(dir, run, 60, 43);
    let port = free_port();
    let config = config(dir, "http://127.0.0.1:9", "enabled = false\n", port, 300);
    let _agent = harness::spawn(&mut agent(dir, &config, &[]));
    wait_for(dir, Duration::from_secs(30), "/health", || {
        get(port, "/health").is_some()
    });

    let prom_port = free_port();
    let prom_config = dir.join("prometheus.yml");
    std::fs::write(
        &prom_config,
        format!(
            "global:\n  scrape_interval: 1s\n  evaluation_interval: 1s\nscrape_configs:\n  - job_name: mosaic\n    static_configs:\n      - targets: [\"127.0.0.1:{port}\"]\n"
        ),
    )
    .unwrap();
    let log = std::fs::File::create(dir.join("prometheus.log")).unwrap();
    let _prometheus = harness::spawn(
        Command::new("prometheus")
            .arg(format!("--config.file={}", prom_config.display()))
            .arg(format!(
                "--storage.tsdb.path={}",
                dir.join("tsdb").display()
            ))
            .arg(format!("--web.listen-address=127.0.0.1:{prom_port}"))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log),
    );
    let query = |q: &str| -> Option<f64> {
        let (status, body) = get(prom_port, &format!("/api/v1/query?query={q}"))?;
        let v: serde_json::Value = serde_json::from_str(&body).ok()?;
        (status == 200).then_some(())?;
        v["data"]["result"][0]["value"][1].as_str()?.parse().ok()
    };
    let mut rows = None;
    wait_for(
        dir,
        Duration::from_secs(90),
        "Prometheus to have scraped every row",
        || {
            rows = query("mosaic_shipper_journal_rows_total");
            query("up") == Some(1.0) && rows >= Some(expected.len() as f64)
        },
    );
    let prom_log = std::fs::read_to_string(dir.join("prometheus.log")).unwrap_or_default();
    assert!(
        !prom_log.contains("level=warn") || !prom_log.contains("scrape"),
        "Prometheus warned about the scrape:\n{prom_log}"
    );
    // The scraped value is the page's.
    let page = get(port, "/metrics").unwrap().1;
    assert_eq!(rows, value(&page, "mosaic_shipper_journal_rows_total"));
}
