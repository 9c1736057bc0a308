//! Pure conversions between Privy's wire records and the common model: a [`ContactDto`] to a
//! [`Contact`], and a [`Patch`] to the [`UpdateBody`] that sends it.

use chrono::{DateTime, Utc};
use serde_json::{Map, Value};

use super::api::{ContactDto, CreateBody, UpdateBody};
use crate::model::{Contact, Field, FieldValue, Name, NewContact, Normalizer, Patch, ProviderKind};

/// Maps one Privy record to the common model, normalising every value once. Data that does not
/// parse is kept, flagged and described in `warnings`.
pub fn to_contact(dto: &ContactDto, normalizer: &Normalizer) -> Contact {
    let mut c = Contact::new(ProviderKind::Privy, dto.id.clone());
    let name = Name::from_parts(dto.first_name.as_deref(), dto.last_name.as_deref());
    c.name = (!name.display().is_empty()).then_some(name);

    if let Some(raw) = &dto.email {
        let (value, warning) = normalizer.email(raw);
        c.email = value;
        c.warnings.extend(warning);
    }
    if let Some(raw) = &dto.phone_number {
        let (value, warning) = normalizer.phone(raw);
        c.phone = value;
        c.warnings.extend(warning);
    }

    for tag in &dto.tags {
        match tag {
            Value::String(s) => {
                c.tags.insert(s.clone());
            }
            Value::Null => {}
            other => {
                c.warnings.push(format!(
                    "tag {other} is not a string; kept as its JSON text"
                ));
                c.tags.insert(other.to_string());
            }
        }
    }

    for (key, value) in &dto.custom_fields {
        let text = match value {
            // A null value is an unset field: the same as an absent key.
            Value::Null => continue,
            Value::String(s) => s.clone(),
            Value::Bool(_) | Value::Number(_) => value.to_string(),
            Value::Array(_) | Value::Object(_) => {
                c.warnings.push(format!(
                    "custom field {key:?} is not a flat value; kept as its JSON text"
                ));
                value.to_string()
            }
        };
        c.custom_fields.insert(key.clone(), text);
    }

    if let Some(raw) = &dto.updated_at {
        match DateTime::parse_from_rfc3339(raw.trim()) {
            Ok(t) => c.updated_at = Some(t.with_timezone(&Utc)),
            Err(_) => c
                .warnings
                .push(format!("updated_at {raw:?} is not an RFC 3339 timestamp")),
        }
    }
    c
}

/// The custom fields of a record whose JSON type is not a string (numbers and booleans).
///
/// The common model holds custom fields as text. Privy replaces the whole map on every write,
/// so a write that re-sends `"42"` for a field that held the number `42` would change its type.
/// The client remembers these typed values and [`update_body`] sends them back as they were
/// when their text is unchanged.
pub fn typed_custom_fields(dto: &ContactDto) -> Map<String, Value> {
    dto.custom_fields
        .iter()
        .filter(|(_, v)| v.is_number() || v.is_boolean())
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect()
}

/// The request body carrying every change of `patch`: first and last name (from the name's
/// display form: family name = last word), email, phone, the full tag list and the full custom
/// field map. `typed` holds the record's non-string custom fields (see
/// [`typed_custom_fields`]).
///
/// # Errors
/// A change to a field Privy does not have, or a value of the wrong shape for its field, is
/// refused before anything is sent: sending part of a patch would report a write that did not
/// happen.
pub fn update_body(
    patch: &Patch,
    typed: Option<&Map<String, Value>>,
) -> Result<UpdateBody, String> {
    let mut body = UpdateBody::default();
    for change in &patch.changes {
        match (change.field, &change.new) {
            (Field::Name, FieldValue::Scalar(v)) => {
                let name = v
                    .as_ref()
                    .map(|v| Name::from_display(v.raw()))
                    .unwrap_or_default();
                body.first_name = Some(name.given().map(str::to_owned));
                body.last_name = Some(name.family().map(str::to_owned));
            }
            (Field::Email, FieldValue::Scalar(v)) => {
                body.email = Some(v.as_ref().map(|v| v.raw().to_owned()));
            }
            (Field::Phone, FieldValue::Scalar(v)) => {
                body.phone_number = Some(v.as_ref().map(|v| v.raw().to_owned()));
            }
            (Field::Tags, FieldValue::Set(tags)) => {
                body.tags = Some(tags.to_strings());
            }
            (Field::CustomFields, FieldValue::Map(fields)) => {
                let map = fields
                    .iter()
                    .map(|(k, text)| {
                        let value = typed
                            .and_then(|t| t.get(k.as_str()))
                            .filter(|original| original.to_string() == *text)
                            .cloned()
                            .unwrap_or_else(|| Value::String(text.to_string()));
                        (k.to_string(), value)
                    })
                    .collect();
                body.custom_fields = Some(map);
            }
            (
                field @ (Field::Name
                | Field::Email
                | Field::Phone
                | Field::Tags
                | Field::CustomFields),
                _,
            ) => {
                return Err(format!(
                    "the change to {field} has a value of the wrong shape ({})",
                    change.new
                ));
            }
            (field, _) => {
                return Err(format!("privy has no {field} field to write"));
            }
        }
    }
    Ok(body)
}

/// The fields `POST /v1/contacts` takes (those of the update page; SPEC section 11).
pub const CREATE_FIELDS: [Field; 5] = [
    Field::Name,
    Field::Email,
    Field::Phone,
    Field::Tags,
    Field::CustomFields,
];

/// What a create requires: each group needs one of its fields (an e-mail or a phone).
pub const CREATE_REQUIRES: &[&[Field]] = &[&[Field::Email, Field::Phone]];

/// The `POST /v1/contacts` body for `new`: first and last name from the display name (family
/// name = last word), the e-mail as written, the phone in E.164, the tags and the flat custom
/// fields. Consent is never part of it (see [`CreateBody`]).
///
/// # Errors
/// Neither an e-mail nor a phone (Privy requires one) or a value that is not a valid e-mail or
/// phone: nothing is sent. Fields Privy has no place for (avatar, username, external id) are
/// left out.
pub fn create_body(new: &NewContact) -> Result<CreateBody, String> {
    let mut body = CreateBody::default();
    for (field, value) in &new.fields {
        match (field, value) {
            (_, FieldValue::Scalar(None)) => {}
            (Field::Name, FieldValue::Scalar(Some(v))) => {
                let name = Name::from_display(v.raw());
                body.first_name = name.given().map(str::to_owned);
                body.last_name = name.family().map(str::to_owned);
            }
            (Field::Email | Field::Phone, FieldValue::Scalar(Some(v))) if !v.valid() => {
                return Err(format!(
                    "the {field} {:?} is not valid; Privy rejects it",
                    v.raw()
                ));
            }
            (Field::Email, FieldValue::Scalar(Some(v))) => body.email = Some(v.raw().trim().into()),
            // The key of a valid phone is E.164, the only form Privy takes.
            (Field::Phone, FieldValue::Scalar(Some(v))) => {
                body.phone_number = Some(v.key().to_owned())
            }
            (Field::Tags, FieldValue::Set(tags)) => {
                body.tags = (!tags.is_empty()).then(|| tags.to_strings());
            }
            (Field::CustomFields, FieldValue::Map(fields)) => {
                body.custom_fields = (!fields.is_empty()).then(|| {
                    fields
                        .iter()
                        .map(|(k, v)| (k.to_string(), Value::String(v.to_string())))
                        .collect()
                });
            }
            // Fields Privy has no place for (avatar, username, external id) are left out, as an
            // update leaves out a field the provider does not support.
            _ => {}
        }
    }
    if body.email.is_none() && body.phone_number.is_none() {
        return Err("a Privy contact requires an email or a phone_number".into());
    }
    Ok(body)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{Change, RecordId, Value as ModelValue};
    use serde_json::json;

    fn dto(v: Value) -> ContactDto {
        serde_json::from_value(v).expect("a valid Privy contact")
    }

    fn patch(changes: Vec<Change>) -> Patch {
        Patch {
            record: RecordId::new(ProviderKind::Privy, "cus_1"),
            update_ref: "cus_1".into(),
            changes,
        }
    }

    fn scalar(s: &str) -> FieldValue {
        FieldValue::Scalar(Some(ModelValue::plain(s)))
    }

    #[test]
    fn create_body_splits_the_name_and_needs_an_email_or_phone() {
        let new = |fields| NewContact {
            provider: ProviderKind::Privy,
            fields,
        };
        let phone = FieldValue::Scalar(Some(ModelValue::new(
            "(415) 555-0101",
            "+14155550101",
            true,
        )));
        let body = create_body(&new(vec![
            (Field::Name, scalar("Ada King Lovelace")),
            (Field::Phone, phone),
            (Field::Tags, FieldValue::Set(["vip".to_string()].into())),
        ]))
        .expect("valid");
        assert_eq!(body.first_name.as_deref(), Some("Ada King"));
        assert_eq!(body.last_name.as_deref(), Some("Lovelace"));
        assert_eq!(body.phone_number.as_deref(), Some("+14155550101"));
        assert_eq!(body.email, None);
        assert_eq!(body.tags, Some(vec!["vip".to_string()]));
        let none = create_body(&new(vec![(Field::Name, scalar("Ada"))]));
        assert!(none
            .expect_err("no key")
            .contains("email or a phone_number"));
        let avatar = create_body(&new(vec![
            (Field::Email, scalar("a@b.co")),
            (Field::AvatarUrl, scalar("https://x/y.png")),
        ]))
        .expect("an avatar is left out");
        assert_eq!(
            avatar,
            CreateBody {
                email: Some("a@b.co".into()),
                ..CreateBody::default()
            }
        );
    }

    #[test]
    fn documented_example_maps_to_the_model() {
        let c = to_contact(
            &dto(json!({
                "id": "cus_a1b2c3d4e5f6g7h8", "first_name": "Janet", "last_name": "Doe",
                "email": "Jane@Example.com", "email_permission": "subscribed",
                "phone_number": "+14155550101", "phone_permission": "subscribed",
                "tags": ["vip", "wholesale"], "custom_fields": {"loyalty_tier": "gold", "points": 42, "ok": true, "gone": null},
                "created_at": "2025-01-15T10:30:00Z", "updated_at": "2025-04-01T12:15:00Z"
            })),
            &Normalizer::default(),
        );
        assert_eq!(c.id.native, "cus_a1b2c3d4e5f6g7h8");
        assert_eq!(c.update_ref.as_deref(), Some("cus_a1b2c3d4e5f6g7h8"));
        let name = c.name.as_ref().expect("named");
        assert_eq!(name.display(), "Janet Doe");
        assert_eq!(name.family(), Some("Doe"));
        let email = c.email.as_ref().expect("email");
        assert_eq!(
            (email.raw(), email.key()),
            ("Jane@Example.com", "jane@example.com")
        );
        assert_eq!(c.phone.as_ref().map(|p| p.key()), Some("+14155550101"));
        assert_eq!(c.tags.len(), 2);
        assert_eq!(
            c.custom_fields.get("points").map(|s| s.as_str()),
            Some("42")
        );
        assert_eq!(c.custom_fields.get("ok").map(|s| s.as_str()), Some("true"));
        assert!(!c.custom_fields.contains_key("gone"));
        assert_eq!(
            c.updated_at.map(|t| t.to_rfc3339()),
            Some("2025-04-01T12:15:00+00:00".into())
        );
        assert!(c.warnings.is_empty(), "{:?}", c.warnings);
    }

    #[test]
    fn odd_data_is_kept_with_warnings() {
        let c = to_contact(
            &dto(json!({
                "id": "cus_2", "last_name": "Solo", "email": "nope", "phone_number": "555",
                "tags": [7], "custom_fields": {"nested": {"a": 1}}, "updated_at": "yesterday"
            })),
            &Normalizer::default(),
        );
        assert_eq!(c.name.as_ref().map(|n| n.display()), Some("Solo"));
        assert_eq!(c.email.as_ref().map(|e| e.valid()), Some(false));
        assert_eq!(
            c.phone.as_ref().map(|p| (p.raw(), p.valid())),
            Some(("555", false))
        );
        assert!(c.tags.contains("7"));
        assert_eq!(
            c.custom_fields.get("nested").map(|s| s.as_str()),
            Some(r#"{"a":1}"#)
        );
        assert_eq!(c.warnings.len(), 5, "{:?}", c.warnings);
    }

    #[test]
    fn name_changes_send_both_parts() {
        let body = update_body(
            &patch(vec![Change {
                field: Field::Name,
                old: scalar("Ada Lovelace"),
                new: scalar("Ada King Lovelace"),
            }]),
            None,
        )
        .expect("writable");
        assert_eq!(body.first_name, Some(Some("Ada King".into())));
        assert_eq!(body.last_name, Some(Some("Lovelace".into())));
        let one = update_body(
            &patch(vec![Change {
                field: Field::Name,
                old: scalar("Ada Lovelace"),
                new: scalar("Cher"),
            }]),
            None,
        )
        .expect("writable");
        assert_eq!(
            (one.first_name, one.last_name),
            (Some(Some("Cher".into())), Some(None))
        );
    }

    #[test]
    fn sets_and_maps_are_sent_whole_and_typed_values_survive() {
        let typed: Map<String, Value> = [
            ("points".to_string(), json!(42)),
            ("ok".into(), json!(true)),
        ]
        .into_iter()
        .collect();
        let body = update_body(
            &patch(vec![
                Change {
                    field: Field::Tags,
                    old: FieldValue::Set(["a".to_string()].into()),
                    new: FieldValue::Set(["a".to_string(), "b".into()].into()),
                },
                Change {
                    field: Field::CustomFields,
                    old: FieldValue::Map([("points".to_string(), "42".to_string())].into()),
                    new: FieldValue::Map(
                        [
                            ("points".to_string(), "42".to_string()),
                            ("ok".into(), "no".into()),
                            ("tier".into(), "gold".into()),
                        ]
                        .into(),
                    ),
                },
            ]),
            Some(&typed),
        )
        .expect("writable");
        assert_eq!(body.tags, Some(vec!["a".to_string(), "b".into()]));
        assert_eq!(
            body.custom_fields.map(Value::Object),
            Some(json!({"points": 42, "ok": "no", "tier": "gold"}))
        );
    }

    #[test]
    fn fields_privy_lacks_are_refused() {
        let err = update_body(
            &patch(vec![Change {
                field: Field::AvatarUrl,
                old: FieldValue::Scalar(None),
                new: scalar("https://x.io/a.png"),
            }]),
            None,
        )
        .expect_err("no avatar");
        assert!(err.contains("avatar_url"), "{err}");
        let shape = update_body(
            &patch(vec![Change {
                field: Field::Tags,
                old: FieldValue::Set(Default::default()),
                new: scalar("vip"),
            }]),
            None,
        );
        assert!(shape.is_err());
    }
}
