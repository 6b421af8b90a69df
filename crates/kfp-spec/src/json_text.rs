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
    write(v, d, &Layout::SORTED_COMPACT, out)
}

/// Key order and separators.
pub struct Layout {
    /// Object keys in byte order, else in the map's own order.
    pub sorted: bool,
    /// Between items (`","`, or Python's default `", "`).
    pub item: &'static str,
    /// Between a key and its value (`":"`, or Python's default `": "`).
    pub key: &'static str,
}

impl Layout {
    /// Compact, keys sorted.
    pub const SORTED_COMPACT: Layout = Layout {
        sorted: true,
        item: ",",
        key: ":",
    };
    /// Python's `json.dumps(v)` with no options: keys in the mapping's order,
    /// `", "` and `": "`.
    pub const PYTHON_DEFAULT: Layout = Layout {
        sorted: false,
        item: ", ",
        key: ": ",
    };
}

/// Writes `v` in `layout`.
pub fn write(v: &Value, d: &Dialect, layout: &Layout, out: &mut String) {
    match v {
        Value::Null => out.push_str("null"),
        Value::Bool(b) => out.push_str(if *b { "true" } else { "false" }),
        Value::Number(n) => out.push_str(&(d.number)(n)),
        Value::String(s) => (d.string)(s, out),
        Value::Array(items) => {
            out.push('[');
            for (i, item) in items.iter().enumerate() {
                if i > 0 {
                    out.push_str(layout.item);
                }
                write(item, d, layout, out);
            }
            out.push(']');
        }
        Value::Object(map) => {
            let mut keys: Vec<&String> = map.keys().collect();
            if layout.sorted {
                keys.sort();
            }
            out.push('{');
            for (i, k) in keys.into_iter().enumerate() {
                if i > 0 {
                    out.push_str(layout.item);
                }
                (d.string)(k, out);
                out.push_str(layout.key);
                write(&map[k], d, layout, out);
            }
            out.push('}');
        }
    }
}
