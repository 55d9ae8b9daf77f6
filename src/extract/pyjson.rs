//! JSON as Python's `json` module writes it.
//!
//! `json.dumps` (with its default `allow_nan=True`) writes the bare tokens
//! `NaN`, `Infinity` and `-Infinity`, which strict JSON (and serde_json)
//! refuses. A diverging loss is exactly the moment a user wants to see in
//! the charts, so those tokens are rewritten, outside string literals only,
//! into marker strings that [`non_finite`] turns back into `f64` values.

use std::borrow::Cow;

use serde_json::Value;

const MARK: char = '\u{0}';

/// Parses one line, accepting Python's non-finite number tokens.
pub fn parse(line: &str) -> Result<Value, serde_json::Error> {
    serde_json::from_str(&rewrite_non_finite(line))
}

/// If `s` is one of the marker strings written by [`rewrite_non_finite`],
/// the value it stands for.
pub fn non_finite(s: &str) -> Option<f64> {
    let rest = s.strip_prefix(MARK)?;
    match rest {
        "NaN" => Some(f64::NAN),
        "Infinity" => Some(f64::INFINITY),
        "-Infinity" => Some(f64::NEG_INFINITY),
        _ => None,
    }
}

/// `line` with Python's non-finite tokens (outside strings) replaced by
/// marker strings, borrowed when it has none.
pub(crate) fn rewrite_non_finite(line: &str) -> Cow<'_, str> {
    // Fast path: most lines carry neither token anywhere.
    if !line.contains("NaN") && !line.contains("Infinity") {
        return Cow::Borrowed(line);
    }
    let bytes = line.as_bytes();
    let mut out = String::with_capacity(line.len() + 16);
    let mut copied = 0;
    let mut in_string = false;
    let mut i = 0;
    while i < bytes.len() {
        let b = bytes[i];
        if in_string {
            match b {
                b'\\' => i += 1,
                b'"' => in_string = false,
                _ => {}
            }
            i += 1;
            continue;
        }
        if b == b'"' {
            in_string = true;
            i += 1;
            continue;
        }
        let token = ["-Infinity", "Infinity", "NaN"]
            .into_iter()
            .find(|t| bytes[i..].starts_with(t.as_bytes()));
        match token {
            Some(t) => {
                out.push_str(&line[copied..i]);
                out.push_str("\"\\u0000");
                out.push_str(t);
                out.push('"');
                i += t.len();
                copied = i;
            }
            None => i += 1,
        }
    }
    if copied == 0 {
        return Cow::Borrowed(line);
    }
    out.push_str(&line[copied..]);
    Cow::Owned(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn num(v: &Value) -> f64 {
        match v {
            Value::Number(n) => n.as_f64().unwrap(),
            Value::String(s) => non_finite(s).unwrap(),
            _ => panic!("{v:?}"),
        }
    }

    #[test]
    fn python_tokens_become_non_finite_values() {
        let v = parse(r#"{"a": NaN, "b": Infinity, "c": -Infinity, "d": [NaN, 1.5]}"#).unwrap();
        assert!(num(&v["a"]).is_nan());
        assert_eq!(num(&v["b"]), f64::INFINITY);
        assert_eq!(num(&v["c"]), f64::NEG_INFINITY);
        assert!(num(&v["d"][0]).is_nan());
        assert_eq!(num(&v["d"][1]), 1.5);
    }

    #[test]
    fn floats_are_parsed_exactly() {
        // serde_json's default float parser can be off by an ulp; the
        // `float_roundtrip` feature makes every value arrive bit-exact.
        for text in ["966.8555667001003", "186.91875626880642", "2.5e-4", "0.1"] {
            let v = parse(&format!("{{\"x\": {text}}}")).unwrap();
            assert_eq!(
                num(&v["x"]).to_bits(),
                text.parse::<f64>().unwrap().to_bits(),
                "{text}"
            );
        }
    }

    #[test]
    fn tokens_inside_strings_are_left_alone() {
        let v = parse(r#"{"msg": "loss is NaN, \"Infinity\" too", "x": 1}"#).unwrap();
        assert_eq!(v["msg"], "loss is NaN, \"Infinity\" too");
        assert_eq!(v["x"], 1);
    }

    #[test]
    fn strict_json_is_unchanged_and_garbage_still_fails() {
        assert_eq!(parse(r#"{"x": 2}"#).unwrap()["x"], 2);
        assert!(parse(r#"{"x": NaNa}"#).is_err());
        assert!(parse(r#"{"x": 1"#).is_err());
        assert!(parse("Traceback (most recent call last): NaN").is_err());
    }
}
