//! Compact JSON with sorted keys, the shape both Go's `encoding/json` (KFP's
//! backend writing a protobuf Struct) and Python's `json.dumps(...,
//! sort_keys=True, separators=(",", ":"))` (the SageMaker toolkit) produce.
//! They differ only in how a number and a string are spelled, which the
//! caller gives.

use serde_json::{Number, Value};

/// How one dialect spells the leaves.
pub struct Dialect {
    pub number: fn(&Number) -> String,
    pub string: fn(&str, &mut String),
}

/// Writes `v` compactly, object keys in byte order.
pub fn write_sorted(v: &Value, d: &Dialect, out: &mut String) {
    match v {
        Value::Null => out.push_str("null"),
        Value::Bool(b) => out.push_str(if *b { "true" } else { "false" }),
        Value::Number(n) => out.push_str(&(d.number)(n)),
        Value::String(s) => (d.string)(s, out),
        Value::Array(items) => {
            out.push('[');
            for (i, item) in items.iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                write_sorted(item, d, out);
            }
            out.push(']');
        }
        Value::Object(map) => {
            let mut keys: Vec<&String> = map.keys().collect();
            keys.sort();
            out.push('{');
            for (i, k) in keys.into_iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                (d.string)(k, out);
                out.push(':');
                write_sorted(&map[k], d, out);
            }
            out.push('}');
        }
    }
}
