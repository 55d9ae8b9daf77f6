//! Metrics in text lines: `key=value` and `Name: value` pairs.
//!
//! CleanRL logs `global_step=44, episodic_return=11.000, length=11` behind
//! a logging prefix, or prints `global_step=19, episodic_return=[20.]` (a
//! one-element numpy array) and `SPS: 2224`. Only the keys a rule names
//! are read: ordinary log text is full of `a=b` and `Name: value` that are
//! not metrics, so there is an allow-list, not a general pair parser.

use std::collections::BTreeMap;

/// Characters a key is made of. A key is found only after the start of
/// the line, a blank or `,;|([{`: so not `length` inside `episodic_length`,
/// nor `SPS` in a URL's `?SPS=5`.
fn is_key_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '/' | '-')
}

/// What ends a value: `11.000,` `[20.]` `2224\n`.
fn is_value_end(c: char) -> bool {
    c.is_whitespace() || matches!(c, ',' | ';' | '|' | ')' | ']' | '}')
}

/// The keys of one text rule, found in one pass over the line.
///
/// A hand-written scan rather than a regex: the alternation of every key
/// took a millisecond and a half to compile, twice at each start (the
/// configuration's check and the pipeline), which was most of what
/// `run -- true` spent on extraction rules; and text lines go through
/// faster (docs/performance.md, "Text lines: keys by a scan").
#[derive(Debug)]
pub(crate) struct KeyFinder {
    keys: std::collections::HashSet<Box<str>>,
}

/// One configured key found in a line, with its value's text.
pub(crate) struct Pair<'a> {
    pub key: &'a str,
    /// The text after the separator (and blanks), to the end of the line.
    pub rest: &'a str,
}

impl KeyFinder {
    pub fn new<'k>(keys: impl IntoIterator<Item = &'k str>) -> Result<KeyFinder, String> {
        let mut set = std::collections::HashSet::new();
        for k in keys {
            let ok = k
                .chars()
                .next()
                .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
                && k.chars().all(is_key_char);
            if !ok {
                return Err(format!(
                    "text key {k:?}: a key starts with a letter or `_` and holds letters, digits, `_`, `.`, `/`, `-`"
                ));
            }
            set.insert(Box::from(k));
        }
        Ok(KeyFinder { keys: set })
    }

    /// The configured keys followed by `=` or `:`, left to right. A key is
    /// the whole run of key characters before its separator, and that run
    /// starts the line or follows a blank or one of `,;|([{`: so neither
    /// `length` in `episodic_length=` nor `SPS` in `?SPS=5` is one.
    pub fn pairs<'a>(&'a self, line: &'a str) -> impl Iterator<Item = Pair<'a>> + 'a {
        let bytes = line.as_bytes();
        memchr::memchr2_iter(b'=', b':', bytes).filter_map(move |sep| {
            // Key characters are ASCII, so the run ends on a char boundary
            // and starts on one.
            let start = bytes[..sep]
                .iter()
                .rposition(|&b| !is_key_char(b as char))
                .map_or(0, |i| i + 1);
            let key = &line[start..sep];
            if key.is_empty() || !self.keys.contains(key) {
                return None;
            }
            let before = line[..start].chars().next_back();
            if before.is_some_and(|c| !c.is_whitespace() && !",;|([{".contains(c)) {
                return None;
            }
            let rest = line[sep + 1..].trim_start_matches([' ', '\t']);
            Some(Pair { key, rest })
        })
    }
}

/// The number at the start of `s`, as Python and numpy print one: `11.000`,
/// `-3.0e+00`, `nan`, `inf`, `[20.]`, `array([20.], dtype=float32)`,
/// `tensor(0.5)`. Anything else (`[1. 2.]`, `11.0abc`, `fast`) is none.
pub fn parse_value(s: &str) -> Option<f64> {
    let (v, used) = value_prefix(s)?;
    match s[used..].chars().next() {
        None => Some(v),
        Some(c) if is_value_end(c) => Some(v),
        Some(_) => None,
    }
}

/// A value and the bytes it takes.
fn value_prefix(s: &str) -> Option<(f64, usize)> {
    if let Some(inner) = s.strip_prefix('[') {
        // A one-element array: `[20.]`, `[ 20.5]`.
        let lead = inner.len() - inner.trim_start().len();
        let (v, used) = scalar_prefix(&inner[lead..])?;
        let after = &inner[lead + used..];
        let trail = after.len() - after.trim_start().len();
        return after[trail..]
            .starts_with(']')
            .then_some((v, 1 + lead + used + trail + 1));
    }
    for wrapper in [
        "array(",
        "tensor(",
        "np.float64(",
        "np.float32(",
        "np.float16(",
    ] {
        if let Some(inner) = s.strip_prefix(wrapper) {
            let (v, used) = value_prefix(inner)?;
            // `, dtype=float32)` or `, device='cuda:0')`: no nested parens.
            let after = &inner[used..];
            let close = after.find(')')?;
            let extra = &after[..close];
            if !(extra.is_empty() || extra.starts_with(',')) || extra.contains('(') {
                return None;
            }
            return Some((v, wrapper.len() + used + close + 1));
        }
    }
    scalar_prefix(s)
}

/// A decimal number or a non-finite word at the start of `s`.
fn scalar_prefix(s: &str) -> Option<(f64, usize)> {
    let b = s.as_bytes();
    let mut i = 0;
    if matches!(b.first(), Some(b'+' | b'-')) {
        i = 1;
    }
    let word_end = b[i..]
        .iter()
        .position(|c| !c.is_ascii_alphabetic())
        .map_or(b.len(), |p| i + p);
    let word = s[i..word_end].to_ascii_lowercase();
    if matches!(word.as_str(), "nan" | "inf" | "infinity") {
        let v: f64 = if word == "nan" {
            f64::NAN
        } else {
            f64::INFINITY
        };
        let v = if b.first() == Some(&b'-') { -v } else { v };
        return Some((v, word_end));
    }
    let int_start = i;
    while b.get(i).is_some_and(u8::is_ascii_digit) {
        i += 1;
    }
    let mut digits = i - int_start;
    if b.get(i) == Some(&b'.') {
        i += 1;
        let frac_start = i;
        while b.get(i).is_some_and(u8::is_ascii_digit) {
            i += 1;
        }
        digits += i - frac_start;
    }
    if digits == 0 {
        return None;
    }
    if matches!(b.get(i), Some(b'e' | b'E')) {
        let mut j = i + 1;
        if matches!(b.get(j), Some(b'+' | b'-')) {
            j += 1;
        }
        let exp_start = j;
        while b.get(j).is_some_and(u8::is_ascii_digit) {
            j += 1;
        }
        if j > exp_start {
            i = j;
        }
    }
    // Rust's parser takes `20.` and `.5` as Python prints them.
    s[..i].parse().ok().map(|v| (v, i))
}

/// What a text rule found in one line.
#[derive(Debug, Default)]
pub(crate) struct Scan {
    pub step: Option<i64>,
    pub run_id: Option<String>,
    pub values: BTreeMap<String, f64>,
    /// Metric keys whose value is not one number, for explanations.
    pub unreadable: Vec<String>,
}

/// The keys a text rule reads, and what each is.
#[derive(Debug)]
pub(crate) struct TextKeys {
    finder: KeyFinder,
    /// Metric key to tag.
    metrics: BTreeMap<String, String>,
    step: Vec<String>,
    run_id: Vec<String>,
}

impl TextKeys {
    pub fn new(
        metrics: BTreeMap<String, String>,
        step: Vec<String>,
        run_id: Vec<String>,
    ) -> Result<TextKeys, String> {
        let all = metrics
            .keys()
            .chain(&step)
            .chain(&run_id)
            .map(String::as_str);
        Ok(TextKeys {
            finder: KeyFinder::new(all)?,
            metrics,
            step,
            run_id,
        })
    }

    pub fn metric_keys(&self) -> impl Iterator<Item = &str> {
        self.metrics.keys().map(String::as_str)
    }

    pub fn scan(&self, line: &str) -> Scan {
        let mut scan = Scan::default();
        // Step keys in the rule's order of preference.
        let mut step_rank = usize::MAX;
        for pair in self.finder.pairs(line) {
            if let Some(tag) = self.metrics.get(pair.key) {
                match parse_value(pair.rest) {
                    Some(v) => {
                        scan.values.entry(tag.clone()).or_insert(v);
                    }
                    None => scan.unreadable.push(format!(
                        "{}={}",
                        pair.key,
                        pair.rest.chars().take(24).collect::<String>()
                    )),
                }
            }
            if let Some(rank) = self.step.iter().position(|k| k == pair.key) {
                let step = parse_value(pair.rest)
                    .filter(|v| v.fract() == 0.0 && v.abs() < 9.0e15)
                    .map(|v| v as i64);
                if let Some(step) = step.filter(|_| rank < step_rank) {
                    scan.step = Some(step);
                    step_rank = rank;
                }
            }
            if scan.run_id.is_none() && self.run_id.iter().any(|k| k == pair.key) {
                let id: String = pair.rest.chars().take_while(|c| is_key_char(*c)).collect();
                if !id.is_empty() {
                    scan.run_id = Some(id);
                }
            }
        }
        scan
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn v(s: &str) -> Option<f64> {
        parse_value(s)
    }

    #[test]
    fn numbers_as_python_and_numpy_print_them() {
        assert_eq!(v("11.000, length=11"), Some(11.0));
        assert_eq!(v("2224"), Some(2224.0));
        assert_eq!(v("[20.]"), Some(20.0));
        assert_eq!(v("[20.5]"), Some(20.5));
        assert_eq!(v("[-3.0e+00]"), Some(-3.0));
        assert_eq!(v("[ 7.]"), Some(7.0));
        assert_eq!(v(".5"), Some(0.5));
        assert_eq!(v("1e-3 rest"), Some(0.001));
        assert_eq!(v("array([20.], dtype=float32)"), Some(20.0));
        assert_eq!(v("array([0.25])"), Some(0.25));
        assert_eq!(v("tensor(0.5000, device='cuda:0')"), Some(0.5));
        assert_eq!(v("np.float64(1.5)"), Some(1.5));
        assert!(v("nan").unwrap().is_nan());
        assert!(v("[nan]").unwrap().is_nan());
        assert!(v("NaN,").unwrap().is_nan());
        assert_eq!(v("inf"), Some(f64::INFINITY));
        assert_eq!(v("-inf"), Some(f64::NEG_INFINITY));
        assert_eq!(v("[-inf]"), Some(f64::NEG_INFINITY));
        assert_eq!(v("Infinity"), Some(f64::INFINITY));
    }

    #[test]
    fn things_that_are_not_one_number() {
        for s in [
            "",
            "[1. 2.]",
            "[]",
            "11.0abc",
            "fast",
            "info",
            "nanx",
            "-",
            ".",
            "e5",
            "[20.",
            "array([1., 2.], dtype=float32)",
            "50%",
            "01:54:05",
            "3.5.1",
            "0x10",
            "array(foo(1))",
            "True",
        ] {
            assert_eq!(v(s), None, "{s:?}");
        }
    }

    fn keys() -> TextKeys {
        let metrics = [
            ("episodic_return", "charts/episodic_return"),
            ("episodic_length", "charts/episodic_length"),
            ("length", "charts/episodic_length"),
            ("SPS", "charts/SPS"),
        ]
        .into_iter()
        .map(|(a, b)| (a.to_string(), b.to_string()))
        .collect();
        TextKeys::new(metrics, vec!["global_step".into()], vec![]).unwrap()
    }

    #[test]
    fn pairs_behind_a_logging_prefix() {
        let s = keys().scan(
            "2026-03-10 01:54:05 | INFO     | __main__ | global_step=44, episodic_return=11.000, length=11",
        );
        assert_eq!(s.step, Some(44));
        assert_eq!(s.values["charts/episodic_return"], 11.0);
        assert_eq!(s.values["charts/episodic_length"], 11.0);
        assert_eq!(s.values.len(), 2);
        let s = keys().scan("SPS: 2224");
        assert_eq!((s.step, s.values["charts/SPS"]), (None, 2224.0));
    }

    #[test]
    fn keys_inside_words_and_unlisted_keys_are_not_read() {
        let k = keys();
        for line in [
            "my_length=5 xepisodic_return=3 SPS_max=4 a.SPS=1",
            "Loaded 3 envs",
            "step 5 of 10",
            "2026-03-10 01:54:05 | INFO | x | steps: 10 reward=4 return: 2",
            "[worker stderr] 2026-03-10 01:54:27,458 [INFO] xuance_worker.runtime: LOG1021 XuanCe training started",
            "length: unknown, SPS=fast",
        ] {
            let s = k.scan(line);
            assert!(s.values.is_empty() && s.step.is_none(), "{line}: {s:?}");
        }
        // A blank is a boundary whatever the script; a letter is not.
        let s = k.scan("\u{3000}SPS=7 éSPS=8 (length:9)");
        assert_eq!(
            (s.values["charts/SPS"], s.values["charts/episodic_length"]),
            (7.0, 9.0)
        );
        // A key with no value does not hide the next one.
        let s = k.scan("SPS= episodic_return=3");
        assert_eq!(s.values.len(), 1, "{s:?}");
        assert_eq!(s.values["charts/episodic_return"], 3.0);
        let s = k.scan("episodic_return=[1. 2.] SPS:3");
        assert_eq!(s.values.len(), 1);
        assert_eq!(s.unreadable, ["episodic_return=[1. 2.] SPS:3"]);
    }
}
