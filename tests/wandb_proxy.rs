//! The W&B sink through a real proxy (Debian's tinyproxy on 127.0.0.1):
//! the proxy's log shows the requests; with the proxy stopped rows wait in
//! the journal and arrive after it restarts; NO_PROXY bypasses it; proxy
//! credentials work and are never shown.

mod support;

use std::process::Command;
use std::time::Duration;

use support::harness::{self, agent, assert_history, gen_logs, wait_child, wait_for, write_config};
use support::standin::StandIn;
use support::tinyproxy::Tinyproxy;

fn proxied(proxy: &Tinyproxy, standin: &StandIn, suffix: &str) -> usize {
    let base = format!("POST {}/", standin.base_url());
    let end = format!("{suffix} HTTP/1.1");
    proxy
        .logged_requests()
        .iter()
        .filter(|r| r.starts_with(&base) && r.ends_with(&end))
        .count()
}

/// Run file uploads (PUT, `wandb-metadata.json` among them) the proxy
/// logged to the stand-in.
fn proxied_uploads(proxy: &Tinyproxy, standin: &StandIn) -> usize {
    let base = format!("PUT {}/upload/", standin.base_url());
    proxy
        .logged_requests()
        .iter()
        .filter(|r| r.starts_with(&base))
        .count()
}

#[test]
fn requests_go_through_the_proxy_and_survive_its_outage() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let standin = StandIn::start();
    let mut proxy = Tinyproxy::start(dir, Some(("shipper", "pr0xyS3cret")));
    let with_creds = format!("http://shipper:pr0xyS3cret@127.0.0.1:{}", proxy.port);
    let config = write_config(
        dir,
        &standin.base_url(),
        &format!("proxy = \"{with_creds}\"\nidle_finish_secs = 0\n"),
    );

    // check-config names the proxy and why, without the password.
    let out = Command::new(env!("CARGO_BIN_EXE_mosaic-shipper"))
        .args(["check-config", "--config"])
        .arg(&config)
        .env("WANDB_API_KEY", harness::KEY)
        .output()
        .unwrap();
    let shown = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{shown}");
    assert!(
        !shown.contains("pr0xyS3cret") && !shown.contains(harness::KEY),
        "{shown}"
    );
    assert!(
        shown.contains(&format!("***@127.0.0.1:{}", proxy.port)),
        "{shown}"
    );
    assert!(
        shown.contains("sinks.wandb.proxy in the configuration"),
        "{shown}"
    );

    let first = "01JDAP00000000000000000001";
    let e1 = gen_logs(dir, first, 150, 3);
    let mut child = harness::spawn(&mut agent(dir, &config, &[]));
    wait_for(dir, Duration::from_secs(60), "the first run's rows", || {
        standin
            .runs()
            .get(&harness::wandb_id(first))
            .is_some_and(|r| r.history.len() >= e1.len())
    });
    assert!(
        proxied(&proxy, &standin, "/graphql") >= 1,
        "UpsertBucket did not go through the proxy"
    );
    assert!(
        proxied(&proxy, &standin, "/file_stream") >= 1,
        "file_stream did not go through the proxy"
    );

    // Outage: rows of a new run wait in the journal...
    proxy.stop();
    let second = "01JDAP00000000000000000002";
    let e2 = gen_logs(dir, second, 150, 4);
    std::thread::sleep(Duration::from_secs(3));
    assert!(
        standin
            .runs()
            .get(&harness::wandb_id(second))
            .map_or(true, |r| r.history.is_empty()),
        "rows arrived while the proxy was down"
    );
    // ...and arrive by themselves once it is back.
    proxy.restart();
    wait_for(
        dir,
        Duration::from_secs(90),
        "the second run's rows after the proxy restart",
        || {
            standin
                .runs()
                .get(&harness::wandb_id(second))
                .is_some_and(|r| r.history.len() >= e2.len())
        },
    );
    unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
    assert!(wait_child(&mut child, Duration::from_secs(60)).success());

    let runs = standin.runs();
    assert_history(&runs[&harness::wandb_id(first)], &e1);
    assert_history(&runs[&harness::wandb_id(second)], &e2);
    // Every request the stand-in saw came through the proxy.
    let via: usize = ["/graphql", "/file_stream"]
        .iter()
        .map(|s| proxied(&proxy, &standin, s))
        .sum::<usize>()
        + proxied_uploads(&proxy, &standin);
    assert!(
        via >= standin.requests().len(),
        "{via} proxied, {} received",
        standin.requests().len()
    );
    let logs = harness::stderr_logs(dir);
    assert!(!logs.contains("pr0xyS3cret") && !logs.contains(harness::KEY));
    assert!(
        logs.contains("retrying"),
        "the outage left no trace in the agent's log"
    );
}

#[test]
fn environment_proxy_and_no_proxy_bypass() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let standin = StandIn::start();
    let proxy = Tinyproxy::start(dir, None);
    let config = write_config(dir, &standin.base_url(), "");

    // HTTP_PROXY (the base URL is http) carries the traffic.
    let a = "01JDAN00000000000000000001";
    let ea = gen_logs(dir, a, 60, 5);
    let mut child = harness::spawn(agent(dir, &config, &["--once"]).env("HTTP_PROXY", proxy.url()));
    assert!(
        wait_child(&mut child, Duration::from_secs(60)).success(),
        "{}",
        harness::stderr_logs(dir)
    );
    assert_history(&standin.runs()[&harness::wandb_id(a)], &ea);
    let through = proxied(&proxy, &standin, "/file_stream");
    let gql = proxied(&proxy, &standin, "/graphql");
    assert!(through >= 1 && gql >= 1, "HTTP_PROXY was not used");

    // NO_PROXY lists the W&B host: the proxy sees nothing more.
    let b = "01JDAN00000000000000000002";
    let eb = gen_logs(dir, b, 60, 6);
    let mut child = harness::spawn(
        agent(dir, &config, &["--once"])
            .env("http_proxy", proxy.url())
            .env("NO_PROXY", "example.com,127.0.0.1"),
    );
    assert!(
        wait_child(&mut child, Duration::from_secs(60)).success(),
        "{}",
        harness::stderr_logs(dir)
    );
    assert_history(&standin.runs()[&harness::wandb_id(b)], &eb);
    assert_eq!(
        proxied(&proxy, &standin, "/file_stream"),
        through,
        "NO_PROXY was not honoured"
    );
    assert_eq!(
        proxied(&proxy, &standin, "/graphql"),
        gql,
        "NO_PROXY was not honoured"
    );

    // check-config says which applies and why.
    let out = Command::new(env!("CARGO_BIN_EXE_mosaic-shipper"))
        .args(["check-config", "--config"])
        .arg(&config)
        .env("WANDB_API_KEY", harness::KEY)
        .env("HTTP_PROXY", proxy.url())
        .env("NO_PROXY", "127.0.0.1")
        .env_remove("WANDB_VPN_HTTP_PROXY")
        .output()
        .unwrap();
    let shown = String::from_utf8_lossy(&out.stdout);
    assert!(
        shown.contains("direct ($HTTP_PROXY is set but $NO_PROXY entry \"127.0.0.1\" matches"),
        "{shown}"
    );
    let out = Command::new(env!("CARGO_BIN_EXE_mosaic-shipper"))
        .args(["check-config", "--config"])
        .arg(&config)
        .env("WANDB_API_KEY", harness::KEY)
        .env("HTTP_PROXY", "http://other:1")
        .env("WANDB_VPN_HTTP_PROXY", proxy.url())
        .output()
        .unwrap();
    let shown = String::from_utf8_lossy(&out.stdout);
    assert!(
        shown.contains(&format!("{} ($WANDB_VPN_HTTP_PROXY)", proxy.url())),
        "{shown}"
    );
}
