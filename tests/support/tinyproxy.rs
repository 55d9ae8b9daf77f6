//! A real forward proxy (Debian's tinyproxy) on 127.0.0.1, started from
//! the test, stoppable and restartable on the same port.

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// A running (or stopped) tinyproxy.
pub struct Tinyproxy {
    pub port: u16,
    pub conf: PathBuf,
    pub log: PathBuf,
    child: Option<Child>,
}

fn binary() -> String {
    for p in ["/usr/bin/tinyproxy", "/usr/sbin/tinyproxy"] {
        if std::path::Path::new(p).exists() {
            return p.to_string();
        }
    }
    panic!(
        "tinyproxy is not installed: the proxy tests need Debian's tinyproxy \
         (scripts/test installs it from tests/apt-packages.txt)"
    );
}

impl Tinyproxy {
    /// Starts tinyproxy; with `auth`, it requires those proxy credentials.
    pub fn start(dir: &std::path::Path, auth: Option<(&str, &str)>) -> Tinyproxy {
        let port = super::harness::free_port();
        let conf = dir.join("tinyproxy.conf");
        let log = dir.join("tinyproxy.log");
        std::fs::write(
            &conf,
            format!(
                "Port {port}\nListen 127.0.0.1\nAllow 127.0.0.1\nLogFile \"{}\"\nLogLevel Info\nMaxClients 50\nTimeout 30\n",
                log.display()
            ) + &auth.map(|(u, p)| format!("BasicAuth {u} {p}\n")).unwrap_or_default(),
        )
        .unwrap();
        let mut t = Tinyproxy {
            port,
            conf,
            log,
            child: None,
        };
        t.restart();
        t
    }

    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// Starts it again (same port) and waits until it accepts.
    pub fn restart(&mut self) {
        assert!(self.child.is_none(), "tinyproxy already running");
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let child = Command::new(binary())
                .args(["-d", "-c"])
                .arg(&self.conf)
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .expect("start tinyproxy");
            self.child = Some(child);
            let up = Instant::now() + Duration::from_secs(3);
            while Instant::now() < up {
                if std::net::TcpStream::connect(("127.0.0.1", self.port)).is_ok() {
                    return;
                }
                if let Some(Ok(Some(_))) = self.child.as_mut().map(|c| c.try_wait()) {
                    break; // exited (port still in TIME_WAIT?): try again
                }
                std::thread::sleep(Duration::from_millis(50));
            }
            self.stop();
            assert!(
                Instant::now() < deadline,
                "tinyproxy did not come up on port {}",
                self.port
            );
            std::thread::sleep(Duration::from_millis(300));
        }
    }

    pub fn stop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Requests the proxy logged (`Request (file descriptor N): POST url`).
    pub fn logged_requests(&self) -> Vec<String> {
        self.log_text()
            .lines()
            .filter_map(|l| {
                l.split_once("): ")
                    .map(|(_, r)| r.to_string())
                    .filter(|_| l.contains("Request (file descriptor"))
            })
            .collect()
    }
}

impl Drop for Tinyproxy {
    fn drop(&mut self) {
        self.stop();
    }
}
