//! The one place where text from or about a W&B server is made safe to
//! show: log lines, error messages, `sync` and `export` output.
//!
//! A server or a proxy page may echo the request back (its headers, its
//! URL, its body), and reqwest's errors embed URLs; any of these can carry
//! the API key, the `Authorization` value or the proxy's credentials. So
//! the HTTP client registers every secret it is about to send
//! ([`register_key`], [`register_proxy`]) before the first request, and
//! [`scrub`] removes them, in the forms they travel in, from any text:
//!
//! - each registered secret, as is and percent-encoded (upper- and
//!   lower-case hex);
//! - the base64 of `api:<key>` and of the proxy's `user:password` (the
//!   HTTP Basic values), whatever precedes them;
//! - the value of any `Authorization` / `Proxy-Authorization` header and
//!   any `Basic` / `Bearer` token, registered or not;
//! - the user-info (`user:password@`) of any URL.
//!
//! The agent's log writer passes every line through [`scrub`] as a last
//! guard (logging.rs), so a message built anywhere cannot leak what was
//! registered; the code that turns server answers into text uses
//! [`excerpt`] and [`url`] so that messages are short and readable too.

use std::borrow::Cow;
use std::sync::{OnceLock, RwLock};

use regex::Regex;

/// What replaces a secret.
pub const MASK: &str = "***";

/// Secrets shorter than this are not searched for: replacing every `ab`
/// in the logs would destroy them and protect nothing.
const MIN_SECRET: usize = 4;

/// Every form of every registered secret, longest first (so that a
/// longer form is removed before a shorter one inside it).
static SECRETS: RwLock<Vec<String>> = RwLock::new(Vec::new());

fn patterns() -> &'static [(Regex, &'static str)] {
    static P: OnceLock<Vec<(Regex, &'static str)>> = OnceLock::new();
    P.get_or_init(|| {
        [
            // Header values, in "Name: value", "name=value", JSON or
            // Python-dict form; up to the end of the value.
            (
                r#"(?i)\b((?:proxy-)?authori[sz]ation\\?["']?\s*[:=]\s*\\?["']?)[^\r\n"'\\,;}]+"#,
                "${1}***",
            ),
            (
                r"(?i)\b(basic|bearer)(\s+)[A-Za-z0-9+/=._~-]{6,}",
                "${1}${2}***",
            ),
            // URL user-info: scheme://user:password@host
            (r#"(?i)\b([a-z][a-z0-9+.-]*://)[^/\s@"'<>]+@"#, "${1}***@"),
        ]
        .into_iter()
        .map(|(p, r)| (Regex::new(p).expect("redaction patterns compile"), r))
        .collect()
    })
}

/// Registers the W&B API key: it is sent as HTTP Basic `api:<key>`.
pub fn register_key(key: &str) {
    let mut forms = forms_of(key);
    forms.push(base64(format!("api:{key}").as_bytes()));
    add(forms);
}

/// Registers the credentials of a proxy URL (`http://user:pw@host:port`),
/// as is and percent-decoded; a URL without them registers nothing.
pub fn register_proxy(url: &str) {
    let Some(userinfo) = userinfo(url) else {
        return;
    };
    let mut forms = Vec::new();
    for info in [userinfo.to_string(), percent_decode(userinfo)] {
        let (user, password) = info.split_once(':').unwrap_or((&info, ""));
        forms.extend(forms_of(password));
        if password.is_empty() {
            forms.extend(forms_of(user));
        }
        forms.push(base64(info.as_bytes()));
    }
    add(forms);
}

fn add(forms: Vec<String>) {
    let mut secrets = SECRETS.write().unwrap_or_else(|e| e.into_inner());
    for f in forms {
        if f.len() >= MIN_SECRET && !secrets.contains(&f) {
            secrets.push(f);
        }
    }
    secrets.sort_by_key(|s| std::cmp::Reverse(s.len()));
}

/// A secret and its percent-encoded forms.
fn forms_of(secret: &str) -> Vec<String> {
    if secret.len() < MIN_SECRET {
        return Vec::new();
    }
    let upper = percent_encode(secret);
    let lower = lower_hex_escapes(&upper);
    let mut v = vec![secret.to_string(), upper, lower];
    v.dedup();
    v
}

fn userinfo(url: &str) -> Option<&str> {
    let rest = url.split_once("://")?.1;
    let authority = &rest[..rest.find(['/', '?', '#']).unwrap_or(rest.len())];
    authority.rsplit_once('@').map(|(info, _)| info)
}

/// Removes every secret this module knows of from `text` (see the module
/// documentation). Cheap when there is nothing to remove.
pub fn scrub(text: &str) -> Cow<'_, str> {
    let mut out = Cow::Borrowed(text);
    {
        let secrets = SECRETS.read().unwrap_or_else(|e| e.into_inner());
        for s in secrets.iter() {
            if out.contains(s.as_str()) {
                out = Cow::Owned(out.replace(s.as_str(), MASK));
            }
        }
    }
    for (re, with) in patterns() {
        if re.is_match(&out) {
            out = Cow::Owned(re.replace_all(&out, *with).into_owned());
        }
    }
    out
}

/// An owned, scrubbed copy (for error values that outlive the text).
pub fn scrubbed(text: &str) -> String {
    scrub(text).into_owned()
}

/// How a request URL is shown: as it was requested (parsed as the HTTP
/// client parses it, so `/proj/../file_stream` shows as the path that was
/// actually asked for), without user-info or query (pre-signed upload
/// URLs carry signatures there), scrubbed.
pub fn url(raw: &str) -> String {
    let shown = match reqwest::Url::parse(raw) {
        Ok(mut u) => {
            if !u.username().is_empty() || u.password().is_some() {
                let _ = u.set_username(MASK);
                let _ = u.set_password(None);
            }
            if u.query().is_some() {
                u.set_query(Some(MASK));
            }
            u.set_fragment(None);
            u.to_string()
        }
        Err(_) => raw.to_string(),
    };
    scrubbed(&shown)
}

/// A short, printable, scrubbed excerpt of a response body, for debug
/// logs only: never the raw body, never more than 200 characters.
pub fn excerpt(body: &[u8]) -> String {
    let text = String::from_utf8_lossy(body);
    let clean = scrub(text.trim());
    let mut out: String = clean
        .chars()
        .take(200)
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect();
    if clean.chars().count() > 200 {
        out.push('…');
    }
    out
}

fn percent_encode(s: &str) -> String {
    let mut out = String::new();
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~') {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

fn lower_hex_escapes(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let mut chars = s.chars();
    while let Some(c) = chars.next() {
        out.push(c);
        if c == '%' {
            out.extend(chars.by_ref().take(2).map(|h| h.to_ascii_lowercase()));
        }
    }
    out
}

fn percent_decode(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%' {
            if let Some(v) = s
                .get(i + 1..i + 3)
                .and_then(|h| u8::from_str_radix(h, 16).ok())
            {
                out.push(v);
                i += 3;
                continue;
            }
        }
        out.push(b[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// Standard base64 with padding, as HTTP Basic uses it.
pub fn base64(input: &[u8]) -> String {
    const T: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::with_capacity(input.len().div_ceil(3) * 4);
    for c in input.chunks(3) {
        let n = (u32::from(c[0]) << 16)
            | (u32::from(*c.get(1).unwrap_or(&0)) << 8)
            | u32::from(*c.get(2).unwrap_or(&0));
        for i in 0..4 {
            if i <= c.len() {
                out.push(T[((n >> (18 - 6 * i)) & 63) as usize] as char);
            } else {
                out.push('=');
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    // Registration is process-wide: each test uses secrets of its own.
    #[test]
    fn registered_key_in_every_form() {
        let key = "redactkey+/=0123456789abcdefghijklmnopqrstu";
        register_key(key);
        let basic = base64(format!("api:{key}").as_bytes());
        let text = format!(
            "echo {key} ?k={} ?k={} auth={basic} X-Echo: Basic {basic}",
            percent_encode(key),
            lower_hex_escapes(&percent_encode(key))
        );
        let out = scrub(&text);
        assert!(!out.contains(key), "{out}");
        assert!(!out.contains("redactkey"), "{out}");
        assert!(!out.contains(&basic), "{out}");
        assert!(out.starts_with("echo ***"), "{out}");
    }

    #[test]
    fn proxy_credentials_and_headers() {
        register_proxy("http://prox%40user:pr0xy%2Fpass@127.0.0.1:3128");
        let out = scrub(
            "via pr0xy/pass and pr0xy%2Fpass, Proxy-Authorization: Basic cHJveDpwYXNz\r\n\
             {\"authorization\": \"Bearer abcdef123456\"} http://u:other@h:1/x",
        );
        for leak in ["pr0xy", "cHJveDpwYXNz", "abcdef123456", "other"] {
            assert!(!out.contains(leak), "{leak} in {out}");
        }
        assert!(out.contains("http://***@h:1/x"), "{out}");
        // Ordinary text is untouched.
        assert_eq!(scrub("file=/a/b.log offset=17"), "file=/a/b.log offset=17");
    }

    #[test]
    fn urls_show_what_was_requested() {
        assert_eq!(
            url("http://h:1/files/e/proj/../file_stream"),
            "http://h:1/files/e/file_stream"
        );
        assert_eq!(
            url("http://h:1/files/e/proj/%2e%2e/file_stream"),
            "http://h:1/files/e/file_stream"
        );
        assert_eq!(
            url("https://u:pw@s3.example/b/f?X-Amz-Signature=abc"),
            "https://***@s3.example/b/f?***"
        );
    }

    #[test]
    fn excerpts_are_short_and_printable() {
        let body = format!("line1\nline2\t{}", "x".repeat(500));
        let e = excerpt(body.as_bytes());
        assert!(e.chars().count() <= 201 && !e.contains('\n'), "{e}");
        assert_eq!(base64(b"api:k"), "YXBpOms=");
    }
}
