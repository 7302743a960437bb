//! The console's form, generated from a kernel's `params_schema` (JSON Schema):
//! integers and numbers with minimum and maximum, enums, comma-separated arrays. Pure
//! logic, tested natively.

use serde_json::{json, Value};

/// One form field from the schema.
#[derive(Clone, Debug, PartialEq)]
pub struct Field {
    /// Property name.
    pub name: String,
    /// Its schema.
    pub schema: Value,
    /// Listed in `required`.
    pub required: bool,
}

/// The form's fields from a kernel's `params_schema`, required ones first.
pub fn fields(schema: &Value) -> Vec<Field> {
    let required: Vec<&str> = schema["required"]
        .as_array()
        .map(|r| r.iter().filter_map(Value::as_str).collect())
        .unwrap_or_default();
    let mut out: Vec<Field> = schema["properties"]
        .as_object()
        .map(|p| {
            p.iter()
                .map(|(name, s)| Field {
                    name: name.clone(),
                    schema: s.clone(),
                    required: required.contains(&name.as_str()),
                })
                .collect()
        })
        .unwrap_or_default();
    // Required fields first, in the schema's `required` order.
    out.sort_by_key(|f| {
        required
            .iter()
            .position(|r| *r == f.name)
            .unwrap_or(usize::MAX)
    });
    out
}

fn check_number(text: &str, schema: &Value, integer: bool) -> Result<Value, String> {
    let (value, as_f64) = if integer {
        if let Ok(v) = text.parse::<i64>() {
            (json!(v), v as f64)
        } else if let Ok(v) = text.parse::<u64>() {
            (json!(v), v as f64)
        } else {
            return Err("must be a whole number".to_owned());
        }
    } else {
        let v = text
            .parse::<f64>()
            .ok()
            .filter(|v| v.is_finite())
            .ok_or("must be a number")?;
        (json!(v), v)
    };
    if let Some(min) = schema["minimum"].as_f64() {
        if as_f64 < min {
            return Err(format!("must be at least {}", schema["minimum"]));
        }
    }
    if let Some(max) = schema["maximum"].as_f64() {
        if as_f64 > max {
            return Err(format!("must be at most {}", schema["maximum"]));
        }
    }
    Ok(value)
}

/// The field's JSON value from its text, or what is wrong with it; `Ok(None)` when left
/// empty and optional.
pub fn parse_field(field: &Field, text: &str) -> Result<Option<Value>, String> {
    let text = text.trim();
    if text.is_empty() {
        return if field.required {
            Err("is required".to_owned())
        } else {
            Ok(None)
        };
    }
    let s = &field.schema;
    if let Some(options) = s["enum"].as_array() {
        return options
            .iter()
            .find(|o| {
                o.as_str() == Some(text)
                    || serde_json::from_str::<Value>(text).ok().as_ref() == Some(*o)
            })
            .cloned()
            .map(Some)
            .ok_or_else(|| "pick one of the listed values".to_owned());
    }
    match s["type"].as_str() {
        Some("integer") => check_number(text, s, true).map(Some),
        Some("number") => check_number(text, s, false).map(Some),
        Some("boolean") => match text {
            "true" => Ok(Some(json!(true))),
            "false" => Ok(Some(json!(false))),
            _ => Err("must be true or false".to_owned()),
        },
        Some("array") => {
            let items = &s["items"];
            let integer = items["type"].as_str() == Some("integer");
            let numeric = integer || items["type"].as_str() == Some("number");
            let mut out = Vec::new();
            for (i, part) in text.split(',').map(str::trim).enumerate() {
                if numeric {
                    out.push(
                        check_number(part, items, integer)
                            .map_err(|e| format!("item {} {e}", i + 1))?,
                    );
                } else {
                    out.push(json!(part));
                }
            }
            if let Some(min) = s["minItems"].as_u64() {
                if (out.len() as u64) < min {
                    return Err(format!("needs at least {min} items"));
                }
            }
            if let Some(max) = s["maxItems"].as_u64() {
                if out.len() as u64 > max {
                    return Err(format!("takes at most {max} items"));
                }
            }
            Ok(Some(Value::Array(out)))
        }
        _ => Ok(Some(json!(text))),
    }
}

pub fn default_text(field: &Field) -> String {
    match &field.schema["default"] {
        Value::Null => String::new(),
        Value::String(s) => s.clone(),
        Value::Array(a) => a
            .iter()
            .map(|v| v.to_string())
            .collect::<Vec<_>>()
            .join(", "),
        v => v.to_string(),
    }
}

pub fn hint(field: &Field) -> String {
    let s = &field.schema;
    let mut parts = Vec::new();
    if let Some(d) = s["description"].as_str() {
        parts.push(d.to_owned());
    }
    if s["type"].as_str() == Some("array") {
        parts.push("comma-separated".to_owned());
        let items = &s["items"];
        if !items["minimum"].is_null() || !items["maximum"].is_null() {
            parts.push(format!("each {} to {}", items["minimum"], items["maximum"]));
        }
    } else if !s["minimum"].is_null() || !s["maximum"].is_null() {
        parts.push(format!("{} to {}", s["minimum"], s["maximum"]));
    }
    parts.join("; ")
}

/// A property name as a label: `samples_per_pixel` is "Samples per pixel".
pub fn label(name: &str) -> String {
    let words = name.replace('_', " ");
    let mut chars = words.chars();
    match chars.next() {
        Some(first) => first.to_uppercase().chain(chars).collect(),
        None => words,
    }
}

/// Where a relay's refusal belongs in the console's form, and what to say there: the
/// problem's `field` (`params.width`, `input.a`, `verification.quorum`, `kernel`) as the
/// form's own key (`width`, `input-a`, `quorum`, `kernel`), and its detail without the
/// relay's "invalid parameter `width`: " preamble, which the field's place already says.
/// None for a problem naming no field of the form.
pub fn field_of_problem(field: &str, detail: &str) -> Option<(String, String)> {
    let key = if let Some(name) = field.strip_prefix("params.") {
        name.to_owned()
    } else if let Some(name) = field.strip_prefix("input.") {
        format!("input-{name}")
    } else {
        match field {
            "verification.quorum" => "quorum".to_owned(),
            "kernel" => "kernel".to_owned(),
            _ => return None,
        }
    };
    let plain = ["invalid parameter `", "invalid input `"]
        .iter()
        .find_map(|prefix| detail.strip_prefix(prefix))
        .and_then(|rest| rest.split_once("`: "))
        .map_or(detail, |(_, reason)| reason);
    Some((key, plain.to_owned()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn render() -> Value {
        json!({"type": "object", "required": ["width", "height"],
        "properties": {
            "height": {"type": "integer", "minimum": 1, "maximum": 4096},
            "width": {"type": "integer", "minimum": 1, "maximum": 4096},
            "bounces": {"type": "integer", "minimum": 1, "maximum": 15, "default": 5},
            "output": {"enum": ["softmax", "linear"]},
            "layers": {"type": "array", "minItems": 2, "maxItems": 3,
                "items": {"type": "integer", "minimum": 1, "maximum": 1024}}
        }})
    }

    fn field(name: &str) -> Field {
        fields(&render())
            .into_iter()
            .find(|f| f.name == name)
            .expect("the test schema has this field")
    }

    #[test]
    fn required_fields_come_first_in_schema_order() {
        let names: Vec<String> = fields(&render()).into_iter().map(|f| f.name).collect();
        assert_eq!(&names[..2], ["width", "height"]);
    }

    #[test]
    fn integers_are_checked_against_their_bounds() {
        assert_eq!(parse_field(&field("width"), "64"), Ok(Some(json!(64))));
        assert_eq!(
            parse_field(&field("width"), "0"),
            Err("must be at least 1".into())
        );
        assert_eq!(
            parse_field(&field("width"), "5000"),
            Err("must be at most 4096".into())
        );
        assert!(parse_field(&field("width"), "6.5").is_err());
        assert_eq!(parse_field(&field("width"), " "), Err("is required".into()));
        assert_eq!(parse_field(&field("bounces"), ""), Ok(None));
        assert_eq!(default_text(&field("bounces")), "5");
        assert_eq!(hint(&field("width")), "1 to 4096");
        assert_eq!(label("samples_per_pixel"), "Samples per pixel");
        assert_eq!(label(""), "");
    }

    #[test]
    fn enums_and_arrays_parse() {
        assert_eq!(
            parse_field(&field("output"), "linear"),
            Ok(Some(json!("linear")))
        );
        assert!(parse_field(&field("output"), "relu").is_err());
        assert_eq!(
            parse_field(&field("layers"), "48, 64,10"),
            Ok(Some(json!([48, 64, 10])))
        );
        assert_eq!(
            parse_field(&field("layers"), "48"),
            Err("needs at least 2 items".into())
        );
        assert_eq!(
            parse_field(&field("layers"), "48, 0"),
            Err("item 2 must be at least 1".into())
        );
    }

    #[test]
    fn a_relay_refusal_lands_on_its_field_in_plain_words() {
        assert_eq!(
            field_of_problem(
                "params.width",
                "invalid parameter `width`: must be at most 4096"
            ),
            Some(("width".into(), "must be at most 4096".into()))
        );
        assert_eq!(
            field_of_problem("input.a", "invalid input `a`: 12 bytes, expected 16"),
            Some(("input-a".into(), "12 bytes, expected 16".into()))
        );
        assert_eq!(
            field_of_problem(
                "verification.quorum",
                "quorum must be between 1 and 5, got 9"
            ),
            Some((
                "quorum".into(),
                "quorum must be between 1 and 5, got 9".into()
            ))
        );
        assert_eq!(
            field_of_problem("kernel", "unknown kernel `x`"),
            Some(("kernel".into(), "unknown kernel `x`".into()))
        );
        assert_eq!(field_of_problem("params", "too many units"), None);
        assert_eq!(field_of_problem("Idempotency-Key", "reused"), None);
    }
}
