//! GraphQL errors inside an HTTP 200 answer, and whom they concern.
//!
//! W&B's GraphQL endpoint answers a resolver's refusal (an invalid run or
//! project name, a run that was deleted, a permission the key lacks) with
//! HTTP 200 and `{"errors": [{"message": ...}], "data": ...}`. W&B core
//! (genqlient) turns any non-empty `errors` into an error and never
//! retries it (its retry policy looks at the status only); the SDK then
//! shows the messages (`FormatGQLErrors`, joined with "; ") and fails
//! `wandb.init`. The agent cannot fail: it must keep shipping the other
//! runs. So the errors are classified the way HTTP 4xx answers are
//! (`refuses_run` in the sink):
//!
//! - about **every run**: the key, the account, the entity or the project
//!   (which are one setting for all runs), or a rate limit. Setting the
//!   run aside would set every run aside one by one; these stay errors
//!   the runner retries, with a message that says what to check.
//! - about **this run** (anything else: the request names one run, e.g. a
//!   name the server will not take, a run deleted on the server): the run
//!   is refused and its rows set aside for the sink.
//!
//! The messages are taken from `message` only (never the whole body, whose
//! `extensions` may echo the request) and pass through the redaction point
//! ([`super::redact::excerpt`]).

use serde_json::Value;

use super::http::WandbError;
use super::redact;

/// Whom a list of GraphQL errors concerns.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scope {
    /// The request's run only.
    Run,
    /// Every run (key, account, entity, project, rate limit).
    EveryRun,
}

/// Words in a message (or an `extensions.code`) that point at what every
/// run shares. Lower-case; matched as substrings of the lower-cased text.
const SHARED: &[&str] = &[
    "permission",
    "not authorized",
    "unauthorized",
    "unauthenticated",
    "authenticat",
    "forbidden",
    "access denied",
    "api key",
    "api_key",
    "login",
    "logged in",
    "credential",
    "entity",
    "project",
    "organization",
    "team",
    "rate limit",
    "ratelimit",
    "too many requests",
    "quota",
];

/// [`Scope`] of `errors` (the `errors` array): every run when any error
/// names something every run shares.
pub fn scope(errors: &[Value]) -> Scope {
    let shared = errors.iter().any(|e| {
        let mut text = message(e).to_lowercase();
        if let Some(code) = e.pointer("/extensions/code").and_then(Value::as_str) {
            text.push(' ');
            text.push_str(&code.to_lowercase().replace('_', " "));
        }
        SHARED.iter().any(|w| text.contains(w))
    });
    if shared {
        Scope::EveryRun
    } else {
        Scope::Run
    }
}

fn message(e: &Value) -> &str {
    match e {
        Value::String(s) => s,
        _ => e.get("message").and_then(Value::as_str).unwrap_or(""),
    }
}

/// The messages as W&B core shows them, made safe and short.
pub fn messages(errors: &[Value]) -> String {
    let joined: Vec<&str> = errors
        .iter()
        .map(message)
        .filter(|m| !m.is_empty())
        .collect();
    if joined.is_empty() {
        return "(no message)".into();
    }
    redact::excerpt(joined.join("; ").as_bytes())
}

/// Fails when the answer `v` carries GraphQL errors: [`WandbError::GraphQlRun`]
/// or [`WandbError::GraphQlShared`] by their [`scope`]. `run` is the run the
/// request is about ("-" for none: then every error concerns every run).
pub fn check(v: &Value, what: &'static str, run: &str, url: &str) -> Result<(), WandbError> {
    let Some(errors) = v
        .get("errors")
        .and_then(Value::as_array)
        .filter(|e| !e.is_empty())
    else {
        return Ok(());
    };
    let messages = messages(errors);
    let url = redact::url(url);
    let run = run.to_string();
    Err(match (scope(errors), run.as_str()) {
        (Scope::Run, r) if r != "-" => WandbError::GraphQlRun {
            what,
            run,
            url,
            messages,
        },
        _ => WandbError::GraphQlShared {
            what,
            run,
            url,
            messages,
        },
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn errs(v: Value) -> Vec<Value> {
        v.as_array().unwrap().clone()
    }

    #[test]
    fn what_every_run_shares_is_told_apart_from_one_run() {
        for shared in [
            json!([{"message": "permission denied"}]),
            json!([{"message": "Invalid project name \"a/b\": cannot contain characters \"/\""}]),
            json!([{"message": "entity my-team not found during upsertBucket"}]),
            json!([{"message": "nope", "extensions": {"code": "UNAUTHENTICATED"}}]),
            json!([{"message": "run ok"}, {"message": "You must be logged in"}]),
            json!(["rate limit exceeded"]),
        ] {
            assert_eq!(scope(&errs(shared.clone())), Scope::EveryRun, "{shared}");
        }
        for one in [
            json!([{"message": "run 01abc was previously created and deleted; try a new run name"}]),
            json!([{"message": "invalid run name: contains \"/\""}]),
            json!([{"message": "config too large"}]),
            json!([{}]),
        ] {
            assert_eq!(scope(&errs(one.clone())), Scope::Run, "{one}");
        }
    }

    #[test]
    fn check_names_the_run_and_url_and_never_the_body() {
        crate::sink::wandb::redact::register_key("gqlerrs-secret-key-0123456789abcdef");
        let v = json!({"data": {"upsertBucket": null}, "errors": [{
            "message": "invalid run name, key gqlerrs-secret-key-0123456789abcdef",
            "extensions": {"request": "Authorization: Basic c2VjcmV0c2VjcmV0"}}]});
        let e = check(&v, "UpsertBucket", "r1", "http://127.0.0.1:1/graphql").unwrap_err();
        let text = e.to_string();
        assert!(matches!(e, WandbError::GraphQlRun { .. }), "{text}");
        assert!(
            text.contains("r1") && text.contains("http://127.0.0.1:1/graphql"),
            "{text}"
        );
        assert!(text.contains("invalid run name"), "{text}");
        assert!(!text.contains("gqlerrs-secret-key"), "{text}");
        assert!(!text.contains("c2VjcmV0c2VjcmV0"), "{text}");

        let v = json!({"errors": [{"message": "permission denied"}]});
        let e = check(&v, "UpsertBucket", "r1", "http://h/graphql").unwrap_err();
        assert!(matches!(e, WandbError::GraphQlShared { .. }), "{e}");
        // A request about no run: whatever the message, it is shared.
        let v = json!({"errors": [{"message": "odd"}]});
        let e = check(&v, "Viewer", "-", "http://h/graphql").unwrap_err();
        assert!(matches!(e, WandbError::GraphQlShared { .. }), "{e}");
        assert!(check(&json!({"data": {}, "errors": []}), "Viewer", "-", "u").is_ok());
        assert!(check(&json!({"data": {}, "errors": null}), "Viewer", "-", "u").is_ok());
    }
}
