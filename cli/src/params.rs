//! `--param k=v` and `--input NAME=FILE` arguments.

use serde_json::{Map, Value};

/// A `--param` or `--input` argument that is not `NAME=VALUE`.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("`{0}` is not NAME=VALUE")]
pub struct NotAPair(pub String);

/// Splits `name=value` at the first `=`; the name must not be empty.
pub fn pair(arg: &str) -> Result<(String, String), NotAPair> {
    match arg.split_once('=') {
        Some((name, value)) if !name.is_empty() => Ok((name.to_owned(), value.to_owned())),
        _ => Err(NotAPair(arg.to_owned())),
    }
}

/// A parameter value: JSON when it parses as JSON (`64`, `true`, `[2,3]`), else the
/// text as a string, so `--param output=softmax` needs no quoting.
pub fn value(raw: &str) -> Value {
    serde_json::from_str(raw).unwrap_or_else(|_| Value::String(raw.to_owned()))
}

/// Applies `--param` pairs over a base object (from `--params-json`); later wins.
pub fn merge(mut base: Map<String, Value>, pairs: &[(String, String)]) -> Map<String, Value> {
    for (name, raw) in pairs {
        base.insert(name.clone(), value(raw));
    }
    base
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn values_are_json_when_they_parse_else_strings() {
        assert_eq!(value("64"), json!(64));
        assert_eq!(value("1.5"), json!(1.5));
        assert_eq!(value("true"), json!(true));
        assert_eq!(value("[784,128,10]"), json!([784, 128, 10]));
        assert_eq!(value("softmax"), json!("softmax"));
        assert_eq!(value("\"64\""), json!("64"));
        assert_eq!(value(""), json!(""));
    }

    #[test]
    fn pairs_split_at_the_first_equals_sign() {
        assert_eq!(pair("a=b=c"), Ok(("a".into(), "b=c".into())));
        assert_eq!(pair("m="), Ok(("m".into(), String::new())));
        assert_eq!(pair("=1"), Err(NotAPair("=1".into())));
        assert_eq!(pair("m"), Err(NotAPair("m".into())));
    }

    #[test]
    fn params_override_the_json_file() {
        let base = json!({"m": 1, "k": 2})
            .as_object()
            .cloned()
            .unwrap_or_default();
        let merged = merge(base, &[("m".into(), "8".into()), ("n".into(), "4".into())]);
        assert_eq!(Value::Object(merged), json!({"m": 8, "k": 2, "n": 4}));
    }
}
