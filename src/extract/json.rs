//! A JSON record parsed for the rules, borrowing from the line.
//!
//! `serde_json::Value` owns every key and string and keeps objects in a
//! `BTreeMap`: parsing a 400-byte record into it costs a dozen
//! allocations, freed again as soon as the rules have read the few
//! fields they need. That was most of the agent's CPU. [`Json`] borrows
//! keys and strings from the line (an escaped one, rare, is owned) and
//! keeps an object's entries in one sorted `Vec`, so a record costs one
//! allocation per object and array. It reads like a `Value`: the same
//! numbers (`serde_json::Number`, exact with `float_roundtrip`), keys
//! sorted by bytes, the last of duplicate keys kept, the parser's
//! recursion limit; [`Json::to_value`] gives the `Value` where one is
//! needed (a configuration's text, explanations).

use std::borrow::Cow;
use std::fmt;

use serde::de::{Deserialize, Deserializer, MapAccess, SeqAccess, Visitor};
use serde_json::{Map, Number, Value};

/// One JSON value of a record, borrowing from the parsed text.
#[derive(Debug, Clone, PartialEq)]
pub enum Json<'a> {
    Null,
    Bool(bool),
    Number(Number),
    Str(Cow<'a, str>),
    Array(Vec<Json<'a>>),
    Object(Object<'a>),
}

/// A JSON object: keys unique (the last wins, as in `serde_json::Map`),
/// entries sorted by key length, then bytes, so that most comparisons of
/// a lookup are of lengths, not bytes. Iteration is in that order; where
/// order shows (a `Map`), [`to_map`](Self::to_map) gives the usual one.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Object<'a> {
    entries: Vec<(Cow<'a, str>, Json<'a>)>,
    /// Bit `n` is set when a key is `n` bytes long (bit 63: 63 or more).
    /// A rule tries a dozen field names per record, most of them absent;
    /// most absent names are answered by this mask, without a search.
    lengths: u64,
}

/// The bit of [`Object::lengths`] for a key of `len` bytes.
fn length_bit(len: usize) -> u64 {
    1 << len.min(63)
}

impl<'a> Object<'a> {
    fn from_entries(mut entries: Vec<(Cow<'a, str>, Json<'a>)>) -> Object<'a> {
        if !entries
            .windows(2)
            .all(|w| key_order(&w[0].0, &w[1].0).is_lt())
        {
            // Stable, so that of equal keys the last written is last.
            entries.sort_by(|a, b| key_order(&a.0, &b.0));
            // `dedup_by` keeps the first of a run; swapping each later
            // duplicate into its place keeps the last value instead.
            entries.dedup_by(|later, kept| {
                if later.0 == kept.0 {
                    std::mem::swap(later, kept);
                    true
                } else {
                    false
                }
            });
        }
        let lengths = entries.iter().fold(0, |m, (k, _)| m | length_bit(k.len()));
        Object { entries, lengths }
    }

    pub fn get(&self, key: &str) -> Option<&Json<'a>> {
        if self.lengths & length_bit(key.len()) == 0 {
            return None;
        }
        self.entries
            .binary_search_by(|(k, _)| key_order(k, key))
            .ok()
            .map(|i| &self.entries[i].1)
    }

    /// The entries, shorter keys first.
    pub fn iter(&self) -> impl Iterator<Item = (&str, &Json<'a>)> {
        self.entries.iter().map(|(k, v)| (k.as_ref(), v))
    }

    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// The object as a `serde_json::Map` (owned).
    pub fn to_map(&self) -> Map<String, Value> {
        self.entries
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_value()))
            .collect()
    }
}

impl<'a> Json<'a> {
    pub fn as_object(&self) -> Option<&Object<'a>> {
        match self {
            Json::Object(o) => Some(o),
            _ => None,
        }
    }

    pub fn is_object(&self) -> bool {
        matches!(self, Json::Object(_))
    }

    pub fn as_i64(&self) -> Option<i64> {
        match self {
            Json::Number(n) => n.as_i64(),
            _ => None,
        }
    }

    /// The value as a `serde_json::Value` (owned).
    pub fn to_value(&self) -> Value {
        match self {
            Json::Null => Value::Null,
            Json::Bool(b) => Value::Bool(*b),
            Json::Number(n) => Value::Number(n.clone()),
            Json::Str(s) => Value::String(s.to_string()),
            Json::Array(items) => Value::Array(items.iter().map(Json::to_value).collect()),
            Json::Object(o) => Value::Object(o.to_map()),
        }
    }

    /// Whether this equals `want` as `Value`s compare.
    pub fn equals(&self, want: &Value) -> bool {
        match (self, want) {
            (Json::Null, Value::Null) => true,
            (Json::Bool(a), Value::Bool(b)) => a == b,
            (Json::Number(a), Value::Number(b)) => a == b,
            (Json::Str(a), Value::String(b)) => a == b,
            (Json::Array(a), Value::Array(b)) => {
                a.len() == b.len() && a.iter().zip(b).all(|(x, y)| x.equals(y))
            }
            (Json::Object(a), Value::Object(b)) => {
                a.len() == b.len()
                    && b.iter()
                        .all(|(k, vb)| a.get(k).is_some_and(|va| va.equals(vb)))
            }
            _ => false,
        }
    }
}

/// The order of an object's keys: by length, then bytes.
fn key_order(a: &str, b: &str) -> std::cmp::Ordering {
    a.len()
        .cmp(&b.len())
        .then_with(|| a.as_bytes().cmp(b.as_bytes()))
}

/// Parses one JSON text (strict JSON: Python's tokens are rewritten
/// before, by the caller).
pub fn parse(text: &str) -> Result<Json<'_>, serde_json::Error> {
    serde_json::from_str(text)
}

/// A string that borrows from the input when it holds no escape.
struct Str<'a>(Cow<'a, str>);

impl<'de> Deserialize<'de> for Str<'de> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = Str<'de>;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a string")
            }
            fn visit_borrowed_str<E>(self, s: &'de str) -> Result<Str<'de>, E> {
                Ok(Str(Cow::Borrowed(s)))
            }
            fn visit_str<E>(self, s: &str) -> Result<Str<'de>, E> {
                Ok(Str(Cow::Owned(s.to_string())))
            }
            fn visit_string<E>(self, s: String) -> Result<Str<'de>, E> {
                Ok(Str(Cow::Owned(s)))
            }
        }
        d.deserialize_str(V)
    }
}

impl<'de> Deserialize<'de> for Json<'de> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_any(JsonVisitor)
    }
}

struct JsonVisitor;

impl<'de> Visitor<'de> for JsonVisitor {
    type Value = Json<'de>;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("any JSON value")
    }
    fn visit_unit<E>(self) -> Result<Json<'de>, E> {
        Ok(Json::Null)
    }
    fn visit_none<E>(self) -> Result<Json<'de>, E> {
        Ok(Json::Null)
    }
    fn visit_bool<E>(self, b: bool) -> Result<Json<'de>, E> {
        Ok(Json::Bool(b))
    }
    fn visit_i64<E>(self, n: i64) -> Result<Json<'de>, E> {
        Ok(Json::Number(n.into()))
    }
    fn visit_u64<E>(self, n: u64) -> Result<Json<'de>, E> {
        Ok(Json::Number(n.into()))
    }
    fn visit_f64<E>(self, f: f64) -> Result<Json<'de>, E> {
        // As `Value` does: a non-finite float (never from the parser)
        // is null.
        Ok(Number::from_f64(f).map_or(Json::Null, Json::Number))
    }
    fn visit_borrowed_str<E>(self, s: &'de str) -> Result<Json<'de>, E> {
        Ok(Json::Str(Cow::Borrowed(s)))
    }
    fn visit_str<E>(self, s: &str) -> Result<Json<'de>, E> {
        Ok(Json::Str(Cow::Owned(s.to_string())))
    }
    fn visit_string<E>(self, s: String) -> Result<Json<'de>, E> {
        Ok(Json::Str(Cow::Owned(s)))
    }
    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Json<'de>, A::Error> {
        let mut items = Vec::with_capacity(seq.size_hint().unwrap_or(0));
        while let Some(item) = seq.next_element()? {
            items.push(item);
        }
        Ok(Json::Array(items))
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Json<'de>, A::Error> {
        let mut entries = Vec::with_capacity(map.size_hint().unwrap_or(0).max(4));
        while let Some((Str(k), v)) = map.next_entry::<Str<'de>, Json<'de>>()? {
            entries.push((k, v));
        }
        Ok(Json::Object(Object::from_entries(entries)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every line here must read as `serde_json::Value` reads it.
    #[test]
    fn reads_as_value_does() {
        for text in [
            r#"{"b": 1, "a": {"y": [1, 2.5, "x", null, true], "x": -3}, "c": "\u00e9\n"}"#,
            r#"{"k": 1, "k": {"inner": 2}, "j": 0, "k": 3.25}"#,
            r#"{"z": 1, "a": 2, "m": 3, "a": 4}"#,
            r#"{"big": 18446744073709551615, "neg": -9223372036854775808, "f": 1e300}"#,
            r#"{}"#,
            r#"{"nested": {"a": {"b": {"c": {}}}}, "arr": [[], [{}]]}"#,
        ] {
            let want: Value = serde_json::from_str(text).unwrap();
            let got = parse(text).unwrap();
            assert_eq!(got.to_value(), want, "{text}");
            assert!(got.equals(&want), "{text}");
        }
    }

    #[test]
    fn plain_strings_are_borrowed_and_escaped_ones_owned() {
        let text = r#"{"plain": "abc", "esc\"aped": "a\tb"}"#;
        let Json::Object(o) = parse(text).unwrap() else {
            panic!()
        };
        let keys: Vec<&Cow<str>> = o.entries.iter().map(|(k, _)| k).collect();
        assert!(matches!(keys[0], Cow::Borrowed(_)), "{keys:?}");
        assert!(matches!(keys[1], Cow::Owned(_)), "{keys:?}");
        assert!(matches!(
            o.get("plain"),
            Some(Json::Str(Cow::Borrowed("abc")))
        ));
        assert!(matches!(o.get("esc\"aped"), Some(Json::Str(Cow::Owned(s))) if s == "a\tb"));
        assert_eq!(o.get("absent"), None);
    }

    #[test]
    fn keys_of_every_length_are_found_and_only_they() {
        // Every third length present, up to past the mask's last bit.
        let present: Vec<String> = (0..90).step_by(3).map(|n| "k".repeat(n)).collect();
        let text = format!(
            "{{{}}}",
            present
                .iter()
                .enumerate()
                .map(|(i, k)| format!("\"{k}\": {i}"))
                .collect::<Vec<_>>()
                .join(", ")
        );
        let Json::Object(o) = parse(&text).unwrap() else {
            panic!()
        };
        for (i, k) in present.iter().enumerate() {
            assert_eq!(
                o.get(k).and_then(Json::as_i64),
                Some(i as i64),
                "{}",
                k.len()
            );
        }
        for n in 0..90 {
            let other = "j".repeat(n.max(1));
            assert_eq!(o.get(&other), None, "{n}");
            if n % 3 != 0 {
                assert_eq!(o.get(&"k".repeat(n)), None, "{n}");
            }
        }
    }

    #[test]
    fn garbage_and_deep_nesting_fail_as_value_does() {
        for text in [r#"{"x": 1"#, r#"{"x": NaN}"#, "{\"x\": \"\\ud800\"}"] {
            assert_eq!(
                parse(text).is_err(),
                serde_json::from_str::<Value>(text).is_err(),
                "{text}"
            );
        }
        let deep = format!("{}{}", "[".repeat(200), "]".repeat(200));
        assert!(parse(&deep).is_err());
        assert!(serde_json::from_str::<Value>(&deep).is_err());
    }
}
