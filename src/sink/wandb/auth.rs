//! The W&B API key: where it comes from, and keeping it out of every log.
//!
//! Lookup, first found wins:
//!
//! 1. the systemd credential [`CREDENTIAL`]: the file of that name in
//!    `$CREDENTIALS_DIRECTORY`, which systemd sets for a unit with
//!    `LoadCredential=` (a daemon has no `$HOME`, so no netrc, and a
//!    credential is never in the unit's environment, where `systemctl
//!    show` and child processes would see it);
//! 2. `WANDB_API_KEY` (also what the unit's root-only `EnvironmentFile=`
//!    fallback sets, for a systemd without credentials);
//! 3. as the SDK does (`wandb/sdk/lib/wbauth/authenticate.py`,
//!    `wbnetrc.py` in wandb 0.31.0), the netrc entry whose `machine` is
//!    the base URL's netloc (host, plus `:port` when the URL has one), its
//!    `password` being the key. The netrc file is `$NETRC`, else
//!    `~/.netrc`, else `~/_netrc`.
//!
//! The credential comes first because it is only ever set inside a unit
//! that asked for it: there it is the operator's deliberate choice, and the
//! environment file is the fallback.

use std::path::PathBuf;

/// The name of the systemd credential holding the key
/// (`LoadCredential=wandb-api-key` in the unit).
pub const CREDENTIAL: &str = "wandb-api-key";

/// An API key. Its `Debug`/`Display` never show it; the only way out is
/// [`ApiKey::expose`], used when building the `Authorization` header.
#[derive(Clone, PartialEq, Eq)]
pub struct ApiKey(String);

impl ApiKey {
    pub fn new(key: impl Into<String>) -> ApiKey {
        ApiKey(key.into())
    }
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Debug for ApiKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ApiKey(***)")
    }
}

/// Where the key was found, for `check-config` and the start-up log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum KeySource {
    /// `$CREDENTIALS_DIRECTORY/wandb-api-key`.
    Credential {
        path: PathBuf,
    },
    Env,
    Netrc {
        path: PathBuf,
        machine: String,
    },
    None {
        looked_in: String,
    },
}

impl std::fmt::Display for KeySource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            KeySource::Credential { path } => {
                write!(f, "systemd credential {CREDENTIAL} ({})", path.display())
            }
            KeySource::Env => f.write_str("$WANDB_API_KEY"),
            KeySource::Netrc { path, machine } => {
                write!(f, "{} (machine {machine})", path.display())
            }
            KeySource::None { looked_in } => write!(f, "none found ({looked_in})"),
        }
    }
}

/// The netloc (`host[:port]`) of a base URL: the netrc machine name.
pub fn netloc(base_url: &str) -> String {
    let rest = base_url.split_once("://").map_or(base_url, |(_, r)| r);
    let authority = rest.split(['/', '?', '#']).next().unwrap_or("");
    authority
        .rsplit_once('@')
        .map_or(authority, |(_, h)| h)
        .to_ascii_lowercase()
}

fn netrc_path(env: &dyn Fn(&str) -> Option<String>) -> Option<PathBuf> {
    if let Some(p) = env("NETRC").filter(|p| !p.is_empty()) {
        if let (Some(rest), Some(home)) = (p.strip_prefix("~/"), env("HOME")) {
            return Some(PathBuf::from(home).join(rest));
        }
        return Some(PathBuf::from(p));
    }
    let home = PathBuf::from(env("HOME")?);
    let dot = home.join(".netrc");
    if dot.exists() {
        return Some(dot);
    }
    let under = home.join("_netrc");
    if under.exists() {
        return Some(under);
    }
    Some(dot)
}

/// The `password` of `machine` (or of `default`) in netrc `text`.
pub fn netrc_password(text: &str, machine: &str) -> Option<String> {
    let mut tokens = text.split_whitespace();
    let mut current: Option<bool> = None; // Some(matches) inside an entry
    let mut default_password = None;
    let mut in_default = false;
    while let Some(tok) = tokens.next() {
        match tok {
            "machine" => {
                let m = tokens.next()?;
                current = Some(m.eq_ignore_ascii_case(machine));
                in_default = false;
            }
            "default" => {
                current = Some(false);
                in_default = true;
            }
            "login" | "account" => {
                tokens.next();
            }
            "password" => {
                let p = tokens.next()?;
                if current == Some(true) {
                    return Some(p.to_string());
                }
                if in_default && default_password.is_none() {
                    default_password = Some(p.to_string());
                }
            }
            "macdef" => {
                // A macro runs to the next blank line; tokens cannot tell,
                // and W&B never writes one: stop reading rather than guess.
                break;
            }
            _ => {}
        }
    }
    default_password
}

/// The key in the systemd credential directory, if one is set up. An
/// unreadable or empty credential is reported (never its content) and the
/// lookup goes on.
fn credential(env: &dyn Fn(&str) -> Option<String>) -> (Option<(ApiKey, PathBuf)>, String) {
    let Some(dir) = env("CREDENTIALS_DIRECTORY").filter(|d| !d.is_empty()) else {
        return (None, "no $CREDENTIALS_DIRECTORY".into());
    };
    let path = PathBuf::from(dir).join(CREDENTIAL);
    match std::fs::read_to_string(&path) {
        Ok(text) => match text.trim() {
            "" => (None, format!("{} is empty", path.display())),
            key => (Some((ApiKey(key.to_string()), path)), String::new()),
        },
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            (None, format!("no {}", path.display()))
        }
        // The error kind only: io::Error never carries file content.
        Err(e) => (None, format!("{} is unreadable: {e}", path.display())),
    }
}

/// Finds the key for `base_url` (the order is in the module documentation).
pub fn find_key(
    base_url: &str,
    env: &dyn Fn(&str) -> Option<String>,
) -> (Option<ApiKey>, KeySource) {
    let (found, cred_note) = credential(env);
    if let Some((key, path)) = found {
        return (Some(key), KeySource::Credential { path });
    }
    if let Some(k) = env("WANDB_API_KEY")
        .map(|k| k.trim().to_string())
        .filter(|k| !k.is_empty())
    {
        return (Some(ApiKey(k)), KeySource::Env);
    }
    let first = format!("{cred_note}; $WANDB_API_KEY");
    let machine = netloc(base_url);
    let Some(path) = netrc_path(env) else {
        return (
            None,
            KeySource::None {
                looked_in: format!("{first}; no $HOME for a netrc"),
            },
        );
    };
    match std::fs::read_to_string(&path) {
        Ok(text) => match netrc_password(&text, &machine) {
            Some(k) => (Some(ApiKey(k)), KeySource::Netrc { path, machine }),
            None => (
                None,
                KeySource::None {
                    looked_in: format!("{first}; no machine {machine} in {}", path.display()),
                },
            ),
        },
        Err(_) => (
            None,
            KeySource::None {
                looked_in: format!("{first}; {} is absent or unreadable", path.display()),
            },
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn netloc_keeps_the_port() {
        assert_eq!(netloc("https://api.wandb.ai"), "api.wandb.ai");
        assert_eq!(netloc("http://127.0.0.1:8080/"), "127.0.0.1:8080");
    }

    #[test]
    fn netrc_entries_as_the_cli_writes_them() {
        let text = "machine other\n  login user\n  password nope\nmachine api.wandb.ai\n  login user\n  password k123\n";
        assert_eq!(
            netrc_password(text, "api.wandb.ai").as_deref(),
            Some("k123")
        );
        assert_eq!(netrc_password(text, "127.0.0.1:1"), None);
        let text = "machine a login x password y default login d password dk";
        assert_eq!(netrc_password(text, "b").as_deref(), Some("dk"));
    }

    #[test]
    fn env_wins_over_netrc_and_key_never_prints() {
        let dir = tempfile::tempdir().unwrap();
        let rc = dir.path().join("rc");
        std::fs::write(&rc, "machine 127.0.0.1:9 login user password fromnetrc\n").unwrap();
        let rc_s = rc.display().to_string();
        let env = |k: &str| (k == "NETRC").then(|| rc_s.clone());
        let (key, src) = find_key("http://127.0.0.1:9", &env);
        assert_eq!(key.unwrap().expose(), "fromnetrc");
        assert!(matches!(src, KeySource::Netrc { .. }));
        let env2 = |k: &str| match k {
            "WANDB_API_KEY" => Some("fromenv".to_string()),
            "NETRC" => Some(rc_s.clone()),
            _ => None,
        };
        let (key, src) = find_key("http://127.0.0.1:9", &env2);
        assert_eq!(src, KeySource::Env);
        let key = key.unwrap();
        assert_eq!(key.expose(), "fromenv");
        assert!(!format!("{key:?}").contains("fromenv"));
    }

    #[test]
    fn a_systemd_credential_wins_and_its_absence_is_named() {
        let dir = tempfile::tempdir().unwrap();
        let creds = dir.path().join("creds");
        std::fs::create_dir(&creds).unwrap();
        let creds_s = creds.display().to_string();
        let env = |k: &str| match k {
            "CREDENTIALS_DIRECTORY" => Some(creds_s.clone()),
            "WANDB_API_KEY" => Some("fromenv".to_string()),
            _ => None,
        };
        // Directory set, no credential in it: the environment is next.
        let (key, src) = find_key("https://api.wandb.ai", &env);
        assert_eq!((key.unwrap().expose(), src), ("fromenv", KeySource::Env));
        std::fs::write(creds.join(CREDENTIAL), "fromcred\n").unwrap();
        let (key, src) = find_key("https://api.wandb.ai", &env);
        let key = key.unwrap();
        assert_eq!(key.expose(), "fromcred", "trailing newline trimmed");
        let shown = src.to_string();
        assert!(
            shown.contains("wandb-api-key") && shown.contains(&creds_s),
            "{shown}"
        );
        assert!(!shown.contains("fromcred"));
        // Nothing anywhere: the message says where it looked.
        std::fs::write(creds.join(CREDENTIAL), "  \n").unwrap();
        let only_dir = |k: &str| (k == "CREDENTIALS_DIRECTORY").then(|| creds_s.clone());
        let (key, src) = find_key("https://api.wandb.ai", &only_dir);
        assert!(key.is_none());
        let shown = src.to_string();
        assert!(
            shown.contains("is empty") && shown.contains("$WANDB_API_KEY"),
            "{shown}"
        );
    }
}
