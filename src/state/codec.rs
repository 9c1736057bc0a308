//! How field values are stored: compact JSON, decoded by the field's shape.

use std::collections::BTreeMap;

use serde_json::{json, Map, Value as Json};

use crate::model::{Field, FieldMap, FieldValue, TagSet, Value};
use crate::reconcile::Baseline;

/// Encodes one field value.
pub fn encode_value(v: &FieldValue) -> Json {
    match v {
        FieldValue::Scalar(None) => Json::Null,
        FieldValue::Scalar(Some(v)) if v.valid() && v.raw() == v.key() => {
            Json::String(v.raw().to_owned())
        }
        FieldValue::Scalar(Some(v)) => json!({"raw": v.raw(), "key": v.key(), "valid": v.valid()}),
        FieldValue::Set(s) => Json::Array(s.iter().map(|t| Json::String(t.to_string())).collect()),
        FieldValue::Map(m) => Json::Object(
            m.iter()
                .map(|(k, v)| (k.to_string(), Json::String(v.to_string())))
                .collect(),
        ),
    }
}

/// Decodes one field value; `None` when the stored JSON does not fit the field's shape.
pub fn decode_value(field: Field, j: &Json) -> Option<FieldValue> {
    Some(match (field.is_scalar(), field, j) {
        (true, _, Json::Null) => FieldValue::Scalar(None),
        (true, _, Json::String(s)) => FieldValue::Scalar(Some(Value::plain(s.clone()))),
        (true, _, Json::Object(o)) => FieldValue::Scalar(Some(Value::new(
            o.get("raw")?.as_str()?,
            o.get("key")?.as_str()?,
            o.get("valid")?.as_bool()?,
        ))),
        (false, Field::Tags, Json::Array(a)) => {
            FieldValue::Set(a.iter().filter_map(Json::as_str).collect::<TagSet>())
        }
        (false, Field::CustomFields, Json::Object(o)) => FieldValue::Map(
            o.iter()
                .filter_map(|(k, v)| Some((k.as_str(), v.as_str()?)))
                .collect::<FieldMap>(),
        ),
        _ => return None,
    })
}

/// Encodes a field map (agreed values, or any map of fields).
pub fn encode_fields<'a>(fields: impl IntoIterator<Item = (&'a Field, &'a FieldValue)>) -> String {
    let obj: Map<String, Json> = fields
        .into_iter()
        .map(|(f, v)| (f.as_str().to_owned(), encode_value(v)))
        .collect();
    Json::Object(obj).to_string()
}

/// Encodes a baseline: the same format, with each scalar's comparison key (all a baseline
/// keeps).
pub fn encode_baseline(baseline: &Baseline) -> String {
    let obj: Map<String, Json> = baseline
        .iter()
        .map(|(f, v)| (f.as_str().to_owned(), encode_value(&v)))
        .collect();
    Json::Object(obj).to_string()
}

/// Decodes a baseline (rows written with full values keep their keys).
pub fn decode_baseline(text: &str) -> Baseline {
    decode_fields(text).into_iter().collect()
}

/// Decodes a field map; unknown fields and values of the wrong shape are left out (so a
/// damaged row reads as "no baseline" for that field, never as a wrong one).
pub fn decode_fields(text: &str) -> BTreeMap<Field, FieldValue> {
    let Ok(Json::Object(obj)) = serde_json::from_str::<Json>(text) else {
        return BTreeMap::new();
    };
    obj.iter()
        .filter_map(|(k, v)| {
            let field = k.parse::<Field>().ok()?;
            Some((field, decode_value(field, v)?))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip() {
        let mut b = BTreeMap::new();
        b.insert(Field::Name, FieldValue::Scalar(Some(Value::plain("Ada"))));
        b.insert(
            Field::Email,
            FieldValue::Scalar(Some(Value::new("A@x.io", "a@x.io", true))),
        );
        b.insert(Field::Phone, FieldValue::Scalar(None));
        b.insert(Field::Tags, FieldValue::Set(["vip".to_string()].into()));
        b.insert(
            Field::CustomFields,
            FieldValue::Map([("k".to_string(), "v".to_string())].into()),
        );
        assert_eq!(decode_fields(&encode_fields(&b)), b);
        // A baseline keeps comparison keys, and reads rows written with full values.
        let baseline: Baseline = b.clone().into_iter().collect();
        assert_eq!(decode_baseline(&encode_baseline(&baseline)), baseline);
        assert_eq!(decode_baseline(&encode_fields(&b)), baseline);
        assert_eq!(
            baseline.get(Field::Email),
            Some(FieldValue::Scalar(Some(Value::plain("a@x.io"))))
        );
        assert!(decode_baseline("not json").is_empty());
        assert!(decode_fields("not json").is_empty());
        assert!(decode_fields(r#"{"tags": "oops", "nope": 1}"#).is_empty());
    }
}
