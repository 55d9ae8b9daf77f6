//! TLS is verified (rustls), and `ca_file` adds a private CA, as needed
//! behind a corporate proxy that re-signs TLS. The stand-in serves https
//! with a certificate from a test CA made with openssl.

mod support;

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use support::harness::{self, agent, assert_history, gen_logs, wait_child, write_config};
use support::standin::StandIn;

fn openssl(dir: &Path, args: &[&str]) {
    let out = Command::new("openssl")
        .args(args)
        .current_dir(dir)
        .output()
        .expect("the TLS test needs the openssl command");
    assert!(
        out.status.success(),
        "openssl {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A CA and a server certificate for 127.0.0.1 signed by it.
fn make_certs(dir: &Path) {
    openssl(
        dir,
        &[
            "req",
            "-x509",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-keyout",
            "ca.key",
            "-out",
            "ca.pem",
            "-days",
            "2",
            "-subj",
            "/CN=mosaic-test-ca",
        ],
    );
    openssl(
        dir,
        &[
            "req",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-keyout",
            "srv.key",
            "-out",
            "srv.csr",
            "-subj",
            "/CN=127.0.0.1",
        ],
    );
    std::fs::write(
        dir.join("ext.cnf"),
        "subjectAltName=IP:127.0.0.1\nbasicConstraints=CA:FALSE\nkeyUsage=digitalSignature,keyEncipherment\nextendedKeyUsage=serverAuth\n",
    )
    .unwrap();
    openssl(
        dir,
        &[
            "x509",
            "-req",
            "-in",
            "srv.csr",
            "-CA",
            "ca.pem",
            "-CAkey",
            "ca.key",
            "-CAcreateserial",
            "-out",
            "srv.pem",
            "-days",
            "2",
            "-extfile",
            "ext.cnf",
        ],
    );
}

#[test]
fn tls_is_verified_and_ca_file_adds_a_private_ca() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let certs = dir.join("certs");
    std::fs::create_dir_all(&certs).unwrap();
    make_certs(&certs);
    let standin = StandIn::start_tls(&certs.join("srv.pem"), &certs.join("srv.key"));
    let run = "01JDAT00000000000000000001";
    let expected = gen_logs(dir, run, 60, 31);

    // Not trusted without the CA: refused at once, with a hint.
    let config = write_config(dir, &standin.https_url(), "");
    let mut child = harness::spawn(&mut agent(dir, &config, &["--once"]));
    assert!(!wait_child(&mut child, Duration::from_secs(120)).success());
    let logs = harness::stderr_logs(dir);
    assert!(
        logs.contains("certificate") && logs.contains("ca_file"),
        "{logs}"
    );
    assert!(
        standin.requests().is_empty(),
        "a request passed an untrusted certificate"
    );

    // A file that holds no certificate is a clear start-up error.
    std::fs::write(dir.join("junk.pem"), "not a certificate\n").unwrap();
    let config = write_config(
        dir,
        &standin.https_url(),
        &format!("ca_file = \"{}\"\n", dir.join("junk.pem").display()),
    );
    let mut child = harness::spawn(&mut agent(dir, &config, &["--once"]));
    assert!(!wait_child(&mut child, Duration::from_secs(60)).success());
    assert!(harness::stderr_logs(dir).contains("junk.pem"));

    // With ca_file: delivered, verified.
    let config = write_config(
        dir,
        &standin.https_url(),
        &format!("ca_file = \"{}\"\n", certs.join("ca.pem").display()),
    );
    let mut child = harness::spawn(&mut agent(dir, &config, &["--once"]));
    assert!(
        wait_child(&mut child, Duration::from_secs(60)).success(),
        "{}",
        harness::stderr_logs(dir)
    );
    assert_history(&standin.runs()[&harness::wandb_id(run)], &expected);
}
