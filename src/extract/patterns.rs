//! Compiled regular expressions of the configuration, kept per pattern.
//!
//! The same patterns are compiled several times at each start: the
//! configuration's check builds every rule and reader, then the pipeline
//! builds them again, and several rules and the event-file readers share
//! `run_id_from_path`. With Unicode classes (`\d`, `\w`) one compile takes
//! a few hundred microseconds, which added up to a noticeable share of a
//! `run -- true`. A `Regex` clone shares the compiled program, so one
//! compile per distinct pattern serves them all.

use std::collections::HashMap;
use std::sync::{Mutex, OnceLock};

use regex::Regex;

/// At most this many patterns are kept: a configuration names a handful;
/// a caller compiling patterns without end (none does) would only stop
/// being helped by the cache, not grow it.
const KEEP: usize = 256;

/// `Regex::new(pattern)`, compiled once per distinct pattern in this
/// process. Patterns that fail to compile are not kept.
pub fn compile(pattern: &str) -> Result<Regex, regex::Error> {
    static CACHE: OnceLock<Mutex<HashMap<String, Regex>>> = OnceLock::new();
    let cache = CACHE.get_or_init(Default::default);
    if let Some(re) = cache.lock().unwrap_or_else(|p| p.into_inner()).get(pattern) {
        return Ok(re.clone());
    }
    // Compiled outside the lock: two threads may both compile one pattern
    // once, which costs time, never a wrong answer.
    let re = Regex::new(pattern)?;
    let mut cache = cache.lock().unwrap_or_else(|p| p.into_inner());
    if cache.len() < KEEP {
        cache.insert(pattern.to_string(), re.clone());
    }
    Ok(re)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_pattern_is_one_program_and_errors_are_not_kept() {
        let a = compile(r"runs/(?P<run_id>[^/]+)/x").unwrap();
        let b = compile(r"runs/(?P<run_id>[^/]+)/x").unwrap();
        assert_eq!(a.as_str(), b.as_str());
        assert_eq!(&b.captures("a/runs/r1/x").unwrap()["run_id"], "r1");
        assert!(compile("(").is_err());
        assert!(compile("(").is_err());
        assert!(compile(r"\d+").unwrap().is_match("12"));
    }
}
