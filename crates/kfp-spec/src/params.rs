//! Parameter values: from the user's `-p name=value` text, and to/from the IR's
//! declared types. Values travel as native JSON (integers as JSON integers) so the
//! executor protocol sees what a KFP backend would send.

use std::collections::BTreeMap;

use serde_json::{Map, Value};

use crate::{ComponentSpec, ParameterType, SpecError};

/// Parses a command-line value by the parameter's declared type: integers, floats
/// and booleans by their text, lists and structs as JSON, strings as they are.
pub fn parse_cli_value(ty: ParameterType, raw: &str) -> Result<Value, String> {
    match ty {
        ParameterType::String => Ok(Value::String(raw.to_string())),
        ParameterType::NumberInteger => {
            let t = raw.trim();
            t.parse::<i64>()
                .ok()
                .or_else(|| {
                    t.parse::<f64>()
                        .ok()
                        .filter(|f| f.fract() == 0.0 && f.abs() < 9.0e15)
                        .map(|f| f as i64)
                })
                .map(Value::from)
                .ok_or_else(|| format!("expected an integer, got '{raw}'"))
        }
        ParameterType::NumberDouble => raw
            .trim()
            .parse::<f64>()
            .ok()
            .filter(|f| f.is_finite())
            .map(Value::from)
            .ok_or_else(|| format!("expected a number, got '{raw}'")),
        ParameterType::Boolean => match raw.trim().to_ascii_lowercase().as_str() {
            "true" | "1" | "yes" => Ok(Value::Bool(true)),
            "false" | "0" | "no" => Ok(Value::Bool(false)),
            _ => Err(format!("expected true or false, got '{raw}'")),
        },
        ParameterType::List => match serde_json::from_str::<Value>(raw) {
            Ok(v @ Value::Array(_)) => Ok(v),
            _ => Err(format!("expected a JSON array such as [1, 2], got '{raw}'")),
        },
        ParameterType::Struct => match serde_json::from_str::<Value>(raw) {
            Ok(v @ Value::Object(_)) => Ok(v),
            _ => Err(format!(
                "expected a JSON object such as {{\"a\": 1}}, got '{raw}'"
            )),
        },
        other => Err(format!(
            "a {} parameter cannot be set from the command line",
            other.user_name()
        )),
    }
}

/// Brings a JSON value to the declared type, accepting the IR's habit of storing
/// integers as doubles (`2.0`). Errors say what was expected.
pub fn normalize(ty: ParameterType, value: Value) -> Result<Value, String> {
    match (ty, value) {
        (ParameterType::NumberInteger, Value::Number(n)) => {
            if let Some(i) = n.as_i64() {
                Ok(Value::from(i))
            } else if let Some(f) = n.as_f64().filter(|f| f.fract() == 0.0 && f.abs() < 9.0e15) {
                Ok(Value::from(f as i64))
            } else {
                Err(format!("expected an integer, got {n}"))
            }
        }
        (ParameterType::NumberInteger, Value::String(s)) => parse_cli_value(ty, &s),
        (ParameterType::NumberDouble, Value::Number(n)) => n
            .as_f64()
            .map(Value::from)
            .ok_or_else(|| format!("expected a number, got {n}")),
        (ParameterType::NumberDouble, Value::String(s)) => parse_cli_value(ty, &s),
        (ParameterType::Boolean, v @ Value::Bool(_)) => Ok(v),
        (ParameterType::Boolean, Value::String(s)) => parse_cli_value(ty, &s),
        (ParameterType::String, v @ Value::String(_)) => Ok(v),
        (ParameterType::String, v) => Ok(Value::String(value_to_text(&v))),
        (ParameterType::List, Value::Array(a)) => Ok(Value::Array(a)),
        (ParameterType::List, Value::String(s)) => parse_cli_value(ty, &s),
        (ParameterType::Struct, Value::Object(o)) => Ok(Value::Object(o)),
        (ParameterType::Struct, Value::String(s)) => parse_cli_value(ty, &s),
        (ParameterType::TaskFinalStatus | ParameterType::TaskConfig, v) => Ok(v),
        (ParameterType::ParameterTypeEnumUnspecified, v) => Ok(v),
        (ty, v) => Err(format!("expected a {} value, got {}", ty.user_name(), v)),
    }
}

/// Converts text written by a component to its output file into a typed value,
/// as KFP's launcher does for container components.
pub fn from_output_file(ty: ParameterType, text: &str) -> Result<Value, String> {
    match ty {
        ParameterType::String => Ok(Value::String(text.to_string())),
        ParameterType::Boolean => parse_cli_value(ty, text.trim()),
        ParameterType::List | ParameterType::Struct => parse_cli_value(ty, text.trim()),
        _ => parse_cli_value(ty, text.trim()),
    }
}

/// A parameter value as text, exactly as KFP's backend writes it (its
/// `PbValueToText`, used by the driver for a non-string value given to a
/// string input and by the launcher for command-line placeholders): strings
/// bare, numbers as Go's shortest decimal form (`1`, `1.5`, never `1.0`: every
/// protobuf number is a double), booleans `true`/`false`, lists and structs as
/// Go's `encoding/json` writes them (compact, keys sorted, `<>&` escaped).
pub fn value_to_text(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        Value::Null => String::new(),
        Value::Bool(b) => b.to_string(),
        // Rust's Display of a double is the shortest round-trip decimal without
        // an exponent, as Go's `FormatFloat(v, 'f', -1, 64)`.
        Value::Number(n) => n.as_f64().map_or_else(|| n.to_string(), |f| f.to_string()),
        other => {
            let mut out = String::new();
            crate::json_text::write_sorted(other, &GO_JSON, &mut out);
            out
        }
    }
}

/// Go's `json.Marshal` of a protobuf value.
const GO_JSON: crate::json_text::Dialect = crate::json_text::Dialect {
    number: |n| n.as_f64().map_or_else(|| n.to_string(), go_json_float),
    string: go_json_string,
};

/// `encoding/json`'s float: plain decimal, or exponent form (`1e+21`,
/// `1e-7`) below 1e-6 and from 1e21.
fn go_json_float(f: f64) -> String {
    let abs = f.abs();
    if abs != 0.0 && !(1e-6..1e21).contains(&abs) {
        let e = format!("{f:e}");
        match e.split_once('e') {
            Some((mant, exp)) if !exp.starts_with('-') => format!("{mant}e+{exp}"),
            _ => e,
        }
    } else {
        f.to_string()
    }
}

/// `encoding/json`'s string escaping (HTML-safe, as `json.Marshal` is).
fn go_json_string(s: &str, out: &mut String) {
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
            '<' | '>' | '&' | '\u{2028}' | '\u{2029}' => {
                out.push_str(&format!("\\u{:04x}", c as u32))
            }
            c if (c as u32) < 0x20 => out.push_str(&format!("\\u{:04x}", c as u32)),
            c => out.push(c),
        }
    }
    out.push('"');
}

/// Resolves the pipeline's input parameters: defaults from the spec, overridden by
/// the user's values (already typed JSON or raw text), each checked by type. Unknown
/// names and missing required values are errors.
pub fn resolve_pipeline_parameters(
    root: &ComponentSpec,
    given: &BTreeMap<String, Value>,
) -> Result<Map<String, Value>, SpecError> {
    let defs = &root.input_definitions.parameters;
    for name in given.keys() {
        if !defs.contains_key(name) {
            let known = if defs.is_empty() {
                "(none)".to_string()
            } else {
                defs.keys().cloned().collect::<Vec<_>>().join(", ")
            };
            return Err(SpecError::UnknownParameter {
                name: name.clone(),
                known,
            });
        }
    }
    let mut out = Map::new();
    for (name, def) in defs {
        let value = match given.get(name) {
            Some(Value::String(raw)) if def.parameter_type != ParameterType::String => {
                parse_cli_value(def.parameter_type, raw).map_err(|message| SpecError::BadValue {
                    name: name.clone(),
                    message,
                })?
            }
            Some(v) => {
                normalize(def.parameter_type, v.clone()).map_err(|message| SpecError::BadValue {
                    name: name.clone(),
                    message,
                })?
            }
            None => match &def.default_value {
                Some(d) => normalize(def.parameter_type, d.clone()).map_err(|message| {
                    SpecError::BadValue {
                        name: name.clone(),
                        message,
                    }
                })?,
                None if def.is_optional => continue,
                None => {
                    return Err(SpecError::MissingParameter {
                        name: name.clone(),
                        ty: def.parameter_type.user_name(),
                    })
                }
            },
        };
        out.insert(name.clone(), value);
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    /// Expected texts measured with Go's protobuf `structpb` + `encoding/json`
    /// (what KFP's `PbValueToText` returns).
    #[test]
    fn values_as_text_like_kfps_backend() {
        assert_eq!(value_to_text(&json!(1.0)), "1");
        assert_eq!(value_to_text(&json!(10)), "10");
        assert_eq!(value_to_text(&json!(1.5)), "1.5");
        assert_eq!(value_to_text(&json!(1e21)), "1000000000000000000000");
        assert_eq!(value_to_text(&json!(1e-7)), "0.0000001");
        assert_eq!(value_to_text(&json!(-2.25)), "-2.25");
        assert_eq!(value_to_text(&json!(true)), "true");
        assert_eq!(value_to_text(&Value::Null), "");
        assert_eq!(
            value_to_text(&json!({"z": 1.0, "a": [1.5, "x<y&", 1e21, null], "m": {"k": false}})),
            r#"{"a":[1.5,"x\u003cy\u0026",1e+21,null],"m":{"k":false},"z":1}"#
        );
        assert_eq!(
            value_to_text(&json!([1e-7, 2.5e-10, "a\"b\n"])),
            r#"[1e-7,2.5e-10,"a\"b\n"]"#
        );
    }

    #[test]
    fn cli_values_by_type() {
        assert_eq!(
            parse_cli_value(ParameterType::NumberInteger, "3").unwrap(),
            json!(3)
        );
        assert!(parse_cli_value(ParameterType::NumberInteger, "abc").is_err());
        assert!(parse_cli_value(ParameterType::NumberInteger, "2.5").is_err());
        assert_eq!(
            parse_cli_value(ParameterType::NumberDouble, "2.5").unwrap(),
            json!(2.5)
        );
        assert_eq!(
            parse_cli_value(ParameterType::Boolean, "True").unwrap(),
            json!(true)
        );
        assert!(parse_cli_value(ParameterType::Boolean, "maybe").is_err());
        assert_eq!(
            parse_cli_value(ParameterType::List, "[1,2]").unwrap(),
            json!([1, 2])
        );
        assert!(parse_cli_value(ParameterType::List, "{}").is_err());
        assert_eq!(
            parse_cli_value(ParameterType::Struct, "{\"a\":1}").unwrap(),
            json!({"a":1})
        );
        assert_eq!(
            parse_cli_value(ParameterType::String, " x ").unwrap(),
            json!(" x ")
        );
    }

    #[test]
    fn normalize_integers_stored_as_doubles() {
        assert_eq!(
            normalize(ParameterType::NumberInteger, json!(2.0)).unwrap(),
            json!(2)
        );
        assert!(normalize(ParameterType::NumberInteger, json!(2.5)).is_err());
        assert_eq!(
            normalize(ParameterType::NumberDouble, json!(2)).unwrap(),
            json!(2.0)
        );
        assert!(normalize(ParameterType::Boolean, json!(1)).is_err());
    }

    #[test]
    fn text_forms() {
        assert_eq!(value_to_text(&json!(3)), "3");
        assert_eq!(
            value_to_text(&json!(3.0)),
            "3",
            "as KFP's backend writes a double"
        );
        assert_eq!(value_to_text(&json!(true)), "true");
        assert_eq!(value_to_text(&json!([1, "a"])), "[1,\"a\"]");
    }
}
