//! How Python spells JSON values, where the SageMaker training toolkit hands
//! them to scripts: `str()` and `repr()` of decoded values (entry-point
//! arguments) and `json.dumps(sort_keys=True, separators=(",", ":"))`
//! (`SM_*` variables). A script must see the same text on every backend, so
//! these follow CPython exactly, floats included.

use serde_json::{Number, Value};
use switchyard_kfp_spec::json_text;

/// `str(v)` of the value `json.loads` gives: strings as they are, `None`,
/// `True`/`False`, containers as their `repr`.
pub fn str_of(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        other => repr_of(other),
    }
}

/// `repr(v)` of the value `json.loads` gives.
pub fn repr_of(v: &Value) -> String {
    match v {
        Value::Null => "None".into(),
        Value::Bool(true) => "True".into(),
        Value::Bool(false) => "False".into(),
        Value::Number(n) => number(n),
        Value::String(s) => string_repr(s),
        Value::Array(items) => format!(
            "[{}]",
            items.iter().map(repr_of).collect::<Vec<_>>().join(", ")
        ),
        Value::Object(map) => format!(
            "{{{}}}",
            map.iter()
                .map(|(k, v)| format!("{}: {}", string_repr(k), repr_of(v)))
                .collect::<Vec<_>>()
                .join(", ")
        ),
    }
}

fn number(n: &Number) -> String {
    if n.is_f64() {
        n.as_f64().map(float_repr).unwrap_or_else(|| n.to_string())
    } else {
        n.to_string()
    }
}

/// `repr(float)`: the shortest text that reads back as the same float, in
/// positional notation when its decimal exponent is in -4..16 (with `.0` when
/// integral), else scientific with a signed two-digit exponent (`1e-05`).
pub fn float_repr(f: f64) -> String {
    if f.is_nan() {
        return "nan".into();
    }
    if f.is_infinite() {
        return if f > 0.0 { "inf" } else { "-inf" }.into();
    }
    // Rust's `{:e}` gives the shortest round-trip digits: "-1.2345e-7".
    let sci = format!("{f:e}");
    let (mantissa, exp) = sci.split_once('e').unwrap_or((&sci, "0"));
    let exp: i32 = exp.parse().unwrap_or(0);
    let (sign, mantissa) = match mantissa.strip_prefix('-') {
        Some(m) => ("-", m),
        None => ("", mantissa),
    };
    let digits: String = mantissa.chars().filter(|c| *c != '.').collect();
    // Decimal point position relative to the first digit.
    let point = exp + 1;
    if (-3..=16).contains(&point) {
        let n = digits.len() as i32;
        let body = if point <= 0 {
            format!("0.{}{digits}", "0".repeat((-point) as usize))
        } else if point >= n {
            format!("{digits}{}.0", "0".repeat((point - n) as usize))
        } else {
            let (a, b) = digits.split_at(point as usize);
            format!("{a}.{b}")
        };
        format!("{sign}{body}")
    } else {
        let (first, rest) = digits.split_at(1);
        let frac = if rest.is_empty() {
            String::new()
        } else {
            format!(".{rest}")
        };
        let e = exp;
        format!(
            "{sign}{first}{frac}e{}{:02}",
            if e < 0 { '-' } else { '+' },
            e.abs()
        )
    }
}

/// `repr(str)`: single quotes unless the text holds `'` and no `"`; `\\`,
/// the quote, `\n`, `\r`, `\t` escaped, other control characters as `\xNN`.
fn string_repr(s: &str) -> String {
    let quote = if s.contains('\'') && !s.contains('"') {
        '"'
    } else {
        '\''
    };
    let mut out = String::with_capacity(s.len() + 2);
    out.push(quote);
    for c in s.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if c == quote => {
                out.push('\\');
                out.push(c);
            }
            c if (c as u32) < 0x20 || c as u32 == 0x7f => {
                out.push_str(&format!("\\x{:02x}", c as u32))
            }
            c if ('\u{80}'..='\u{a0}').contains(&c) => {
                out.push_str(&format!("\\x{:02x}", c as u32))
            }
            c => out.push(c),
        }
    }
    out.push(quote);
    out
}

const PYTHON: json_text::Dialect = json_text::Dialect {
    number,
    string: dump_str,
};

/// `json.dumps(v, sort_keys=True, separators=(",", ":"), ensure_ascii=True)`.
pub fn json_dumps(v: &Value) -> String {
    let mut out = String::new();
    json_text::write_sorted(v, &PYTHON, &mut out);
    out
}

/// `json.dumps(v)` with Python's defaults: keys in the mapping's order,
/// `", "` and `": "`, non-ASCII escaped.
pub fn json_dumps_default(v: &Value) -> String {
    let mut out = String::new();
    json_text::write(v, &PYTHON, &json_text::Layout::PYTHON_DEFAULT, &mut out);
    out
}

fn dump_str(s: &str, out: &mut String) {
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            '\u{8}' => out.push_str("\\b"),
            '\u{c}' => out.push_str("\\f"),
            c if (c as u32) < 0x20 || (c as u32) > 0x7e => {
                let mut buf = [0u16; 2];
                for unit in c.encode_utf16(&mut buf) {
                    out.push_str(&format!("\\u{unit:04x}"));
                }
            }
            c => out.push(c),
        }
    }
    out.push('"');
}

/// The toolkit's `mapping.to_cmd_args`: names sorted, `--name` (`-n` for a
/// one-character name), values as `str()` gives them, a mapping as
/// `k=v,k2=v2` sorted by key, `None` as an empty argument.
pub fn to_cmd_args<'a>(mapping: impl IntoIterator<Item = (&'a String, &'a Value)>) -> Vec<String> {
    let mut items: Vec<(&String, &Value)> = mapping.into_iter().collect();
    items.sort_by(|a, b| a.0.cmp(b.0));
    let mut out = Vec::with_capacity(items.len() * 2);
    for (name, value) in items {
        out.push(match name.chars().count() {
            0 => String::new(),
            1 => format!("-{name}"),
            _ => format!("--{name}"),
        });
        out.push(match value {
            Value::Null => String::new(),
            Value::Object(map) => {
                let mut pairs: Vec<(&String, &Value)> = map.iter().collect();
                pairs.sort_by(|a, b| a.0.cmp(b.0));
                pairs
                    .into_iter()
                    .map(|(k, v)| format!("{k}={}", str_of(v)))
                    .collect::<Vec<_>>()
                    .join(",")
            }
            other => str_of(other),
        });
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    // Expected values are what CPython 3.11 prints for the same JSON text.
    #[test]
    fn floats_as_python_prints_them() {
        for (f, want) in [
            (1.0, "1.0"),
            (0.05, "0.05"),
            (1e-05, "1e-05"),
            (0.0001, "0.0001"),
            (1e16, "1e+16"),
            (1234567890123456.0, "1234567890123456.0"),
            (-2.5e-7, "-2.5e-07"),
            (1.5e300, "1.5e+300"),
            (123.456, "123.456"),
            (0.1 + 0.2, "0.30000000000000004"),
            (-0.0, "-0.0"),
            (100.0, "100.0"),
        ] {
            assert_eq!(float_repr(f), want, "{f}");
        }
    }

    #[test]
    fn cmd_args_as_the_toolkit_builds_them() {
        let hps = json!({
            "epochs": 5, "lr": 0.05, "optimizer": "adam", "layers": [64, 32], "e": 3,
            "flag": true, "off": false, "opts": {"b": 2, "a": "x"}, "none": null, "big": 1e-05,
            "mixed": [1, "a", true, null, 1.5, "it's"], "nested": {"k": [1, "v"], "j": {"z": null}}
        });
        let args = to_cmd_args(hps.as_object().unwrap());
        let want: Vec<&str> = vec![
            "--big",
            "1e-05",
            "-e",
            "3",
            "--epochs",
            "5",
            "--flag",
            "True",
            "--layers",
            "[64, 32]",
            "--lr",
            "0.05",
            "--mixed",
            "[1, 'a', True, None, 1.5, \"it's\"]",
            "--nested",
            "j={'z': None},k=[1, 'v']",
            "--none",
            "",
            "--off",
            "False",
            "--optimizer",
            "adam",
            "--opts",
            "a=x,b=2",
        ];
        assert_eq!(args, want);
    }

    #[test]
    fn json_as_python_dumps_it() {
        let v = json!({"b": [1, 1.0, 1e-05, "é\n\"x\""], "a": {"d": null, "c": true}});
        assert_eq!(
            json_dumps(&v),
            r#"{"a":{"c":true,"d":null},"b":[1,1.0,1e-05,"\u00e9\n\"x\""]}"#
        );
        assert_eq!(json_dumps(&json!("😀")), r#""\ud83d\ude00""#);
    }
}
