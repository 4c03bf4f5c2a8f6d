//! Comparing a desired object with a live one field by field, as the API
//! server means them: a field the desired object does not set is not
//! compared, zero values the server leaves out are equal to absent ones,
//! and quantities compare by value. Pure.

use serde_json::Value;
use sha2::{Digest, Sha256};

/// First 16 hex digits of the SHA-256 of the object's canonical JSON (keys
/// sorted, as `serde_json` maps are).
pub fn content_hash(object: &Value) -> String {
    let digest = Sha256::digest(object.to_string().as_bytes());
    digest.iter().take(8).map(|b| format!("{b:02x}")).collect()
}

/// Whether every field set in `desired` has the same value in `live`.
pub fn contains(live: &Value, desired: &Value, key: &str) -> bool {
    first_difference_under(live, desired, key, key).is_none()
}

pub fn first_difference(live: &Value, desired: &Value, path: &str) -> Option<String> {
    first_difference_under(live, desired, "", path)
}

/// The path of the first field of `desired` that `live` lacks or holds
/// with another value. `key` is the map key `desired` sits under, which says
/// whether a string is a resource quantity.
fn first_difference_under(live: &Value, desired: &Value, key: &str, path: &str) -> Option<String> {
    let mut found = Vec::new();
    differences_under(live, desired, key, path, &mut found, 1);
    found.pop()
}

/// Collects into `found` (up to `limit`) the paths where `live` lacks a
/// field of `desired` or holds it with another value.
pub fn differences_under(live: &Value, desired: &Value, key: &str, path: &str, found: &mut Vec<String>, limit: usize) {
    if found.len() >= limit {
        return;
    }
    match desired {
        Value::Null => {}
        Value::Object(wanted) => {
            let Value::Object(have) = live else {
                found.push(path.to_owned());
                return;
            };
            let quantities = matches!(key, "requests" | "limits" | "capacity");
            for (k, v) in wanted {
                if found.len() >= limit {
                    return;
                }
                let child = if path.is_empty() {
                    k.clone()
                } else {
                    format!("{path}.{k}")
                };
                match have.get(k) {
                    // The API server leaves zero values out of what it
                    // returns (`minReadySeconds: 0`, `hostNetwork: false`).
                    None if is_zero(v) => {}
                    None => found.push(child),
                    Some(h) if quantities => {
                        if !same_quantity(h, v) {
                            found.push(child);
                        }
                    }
                    Some(h) => differences_under(h, v, k, &child, found, limit),
                }
            }
        }
        Value::Array(wanted) => {
            let Value::Array(have) = live else {
                found.push(path.to_owned());
                return;
            };
            if have.len() != wanted.len() {
                found.push(path.to_owned());
                return;
            }
            for (i, (w, h)) in wanted.iter().zip(have).enumerate() {
                differences_under(h, w, key, &format!("{path}[{i}]"), found, limit);
            }
        }
        Value::Number(w) => match live {
            Value::Number(h) if h.as_f64() == w.as_f64() => {}
            _ => found.push(path.to_owned()),
        },
        _ => {
            if live != desired {
                found.push(path.to_owned());
            }
        }
    }
}

/// Whether a desired value means the same as an absent one: null, `0`,
/// `false`, `""`, or an empty list or object (or one of only such values).
fn is_zero(value: &Value) -> bool {
    match value {
        Value::Null => true,
        Value::Bool(b) => !b,
        Value::Number(n) => n.as_f64() == Some(0.0),
        Value::String(s) => s.is_empty(),
        Value::Array(items) => items.is_empty(),
        Value::Object(fields) => fields.values().all(is_zero),
    }
}

/// Compares two quantities by value, since the API server rewrites some
/// (`0.5` is stored as `500m`).
fn same_quantity(live: &Value, desired: &Value) -> bool {
    match (quantity_value(live), quantity_value(desired)) {
        (Some(a), Some(b)) => (a - b).abs() <= f64::EPSILON * 16.0 * a.abs().max(b.abs()).max(1.0),
        _ => live == desired,
    }
}

/// The value of a Kubernetes quantity (`128Mi`, `0.5`, `100m`, `1e3`).
pub fn quantity_value(value: &Value) -> Option<f64> {
    let text = match value {
        Value::String(s) => s.trim().to_owned(),
        Value::Number(n) => return n.as_f64(),
        _ => return None,
    };
    const SUFFIXES: &[(&str, f64)] = &[
        ("Ki", 1024.0),
        ("Mi", 1_048_576.0),
        ("Gi", 1_073_741_824.0),
        ("Ti", 1_099_511_627_776.0),
        ("Pi", 1_125_899_906_842_624.0),
        ("Ei", 1_152_921_504_606_846_976.0),
        ("n", 1e-9),
        ("u", 1e-6),
        ("m", 1e-3),
        ("k", 1e3),
        ("M", 1e6),
        ("G", 1e9),
        ("T", 1e12),
        ("P", 1e15),
        ("E", 1e18),
    ];
    let (number, scale) = SUFFIXES
        .iter()
        .find_map(|(suffix, scale)| text.strip_suffix(suffix).map(|n| (n, *scale)))
        .unwrap_or((text.as_str(), 1.0));
    number.parse::<f64>().ok().map(|n| n * scale)
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn quantity_values() {
        assert_eq!(quantity_value(&json!("128Mi")), Some(134_217_728.0));
        assert_eq!(quantity_value(&json!("1e3")), Some(1000.0));
        assert_eq!(quantity_value(&json!(2)), Some(2.0));
        assert_eq!(quantity_value(&json!("lots")), None);
    }
}
