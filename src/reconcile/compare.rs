//! Comparing one expected document with the indexed one, field by field.

use serde::Serialize;
use serde_json::Value;

/// One field whose values differ (a dotted path, e.g. `order.order_value`).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct FieldDiff {
    pub field: String,
    pub expected: Value,
    pub indexed: Value,
}

/// The fields where `indexed` differs from `expected` (absent reads as null).
/// `data_quality` is compared as a set: its order carries no meaning.
pub fn field_diffs(expected: &Value, indexed: &Value) -> Vec<FieldDiff> {
    let mut out = Vec::new();
    walk("", expected, indexed, &mut out);
    out
}

fn walk(path: &str, e: &Value, i: &Value, out: &mut Vec<FieldDiff>) {
    match (e, i) {
        (Value::Object(em), Value::Object(im)) => {
            let mut keys: Vec<&String> = em.keys().chain(im.keys()).collect();
            keys.sort();
            keys.dedup();
            for k in keys {
                let sub = if path.is_empty() {
                    k.clone()
                } else {
                    format!("{path}.{k}")
                };
                walk(
                    &sub,
                    em.get(k).unwrap_or(&Value::Null),
                    im.get(k).unwrap_or(&Value::Null),
                    out,
                );
            }
        }
        (Value::Array(ea), Value::Array(ia)) if path == "data_quality" => {
            let key = |v: &Value| v.to_string();
            let (mut es, mut is): (Vec<String>, Vec<String>) =
                (ea.iter().map(key).collect(), ia.iter().map(key).collect());
            es.sort();
            is.sort();
            if es != is {
                out.push(FieldDiff {
                    field: path.to_owned(),
                    expected: e.clone(),
                    indexed: i.clone(),
                });
            }
        }
        _ if e == i => {}
        _ => out.push(FieldDiff {
            field: path.to_owned(),
            expected: e.clone(),
            indexed: i.clone(),
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn nested_fields_are_named_by_path() {
        let e = json!({"a": 1, "order": {"order_value": "10", "currency": "INR"}, "x": null});
        let i = json!({"a": 1, "order": {"order_value": "11", "currency": "INR"}, "y": 2});
        assert_eq!(
            field_diffs(&e, &i),
            vec![
                FieldDiff {
                    field: "order.order_value".into(),
                    expected: json!("10"),
                    indexed: json!("11")
                },
                FieldDiff {
                    field: "y".into(),
                    expected: json!(null),
                    indexed: json!(2)
                },
            ]
        );
    }

    #[test]
    fn data_quality_order_does_not_matter_but_content_does() {
        let a = json!({"data_quality": [{"field": "a"}, {"field": "b"}]});
        let b = json!({"data_quality": [{"field": "b"}, {"field": "a"}]});
        assert!(field_diffs(&a, &b).is_empty());
        let c = json!({"data_quality": [{"field": "b"}]});
        assert_eq!(field_diffs(&a, &c).len(), 1);
    }

    #[test]
    fn an_order_that_became_null_is_one_difference() {
        let e = json!({"order": {"id": "1"}});
        let i = json!({"order": null});
        assert_eq!(field_diffs(&e, &i).len(), 1);
        assert_eq!(field_diffs(&e, &i)[0].field, "order");
    }
}
