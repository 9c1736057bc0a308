//! Pure conversions: Callbell DTOs to the common model, and a [`Patch`] to the update body.
//!
//! Also the field-rules table, which says what [`to_update`] can carry.

use std::collections::{BTreeMap, BTreeSet};

use serde_json::Value as Json;

use super::api::{ContactDto, CreateBody, UpdateBody};
use crate::model::{Contact, Field, FieldValue, Name, NewContact, Normalizer, Patch, ProviderKind};
use crate::provider::rules::{FieldRule, FieldRules};

/// Why Callbell's phone cannot be written (shown in reports).
pub const PHONE_READ_ONLY: &str =
    "the contact uuid is the WhatsApp number; Callbell cannot change it";

/// Why Callbell's avatar cannot be written (shown in reports).
pub const AVATAR_READ_ONLY: &str = "not writable through PATCH /contacts";

/// What `PATCH /contacts/{uuid}` may write.
///
/// - name: writable, but a contact must keep a name, so it cannot be cleared;
/// - phone: read-only (the WhatsApp number identifies the conversation);
/// - avatar: read-only (not a PATCH parameter);
/// - tags: the write replaces the list, so it carries the full set; only tags that exist in the
///   account (`known_tags`) can be added;
/// - custom fields: the write sets the given keys and leaves the others, so a key can never be
///   removed; only keys that exist in the account (`known_custom_fields`) can be added;
/// - everything else (email, username, external id): Callbell has no such field.
pub fn rules(known_tags: BTreeSet<String>, known_custom_fields: BTreeSet<String>) -> FieldRules {
    FieldRules::new(
        ProviderKind::Callbell,
        [
            (Field::Name, FieldRule::writable().not_clearable()),
            (Field::Phone, FieldRule::read_only(PHONE_READ_ONLY)),
            (Field::AvatarUrl, FieldRule::read_only(AVATAR_READ_ONLY)),
            (Field::Tags, FieldRule::writable().pre_existing(known_tags)),
            (
                Field::CustomFields,
                FieldRule::writable()
                    .merge_keys()
                    .pre_existing(known_custom_fields),
            ),
        ],
    )
    .with_create(&CREATE_FIELDS, CREATE_REQUIRES)
}

/// Maps one Callbell contact to the common model. Never fails: data that does not parse is kept
/// and flagged in `warnings`.
pub fn to_contact(dto: ContactDto, normalizer: &Normalizer) -> Contact {
    let mut c = Contact::new(ProviderKind::Callbell, dto.uuid);
    if let Some(raw) = dto.name.as_deref() {
        let name = Name::from_display(raw);
        if !name.display().is_empty() {
            c.name = Some(name);
        }
    }
    if let Some(raw) = dto.phone_number.as_deref() {
        // Callbell stores WhatsApp numbers as international digits: never a national number.
        let (phone, warning) = normalizer.international_digits(raw);
        c.phone = phone;
        c.warnings.extend(warning);
    }
    c.avatar_url = dto.avatar_url.as_deref().and_then(|u| normalizer.text(u));
    for tag in dto.tags.unwrap_or_default() {
        match tag {
            Json::String(s) if !s.is_empty() => {
                c.tags.insert(s);
            }
            Json::String(_) | Json::Null => {}
            other => {
                let text = other.to_string();
                c.warnings
                    .push(format!("tag {text} is not a string; kept as its JSON text"));
                c.tags.insert(text);
            }
        }
    }
    for (key, value) in dto.custom_fields.unwrap_or_default() {
        match value {
            // A null value is an unset field, not data.
            Json::Null => {}
            Json::String(s) => {
                c.custom_fields.insert(key, s);
            }
            // Checkbox fields hold arrays; numbers and booleans may appear too.
            other => {
                c.custom_fields.insert(key, other.to_string());
            }
        }
    }
    c
}

/// The update body for `patch`: only the fields it changes. Custom fields carry only the keys
/// whose value changes (or that are added); tags carry the full new list.
///
/// # Errors
/// A change the rules forbid (clearing the name, removing a custom field, any field Callbell
/// cannot write) means the planner broke its contract; it is refused here rather than sent.
pub fn to_update(patch: &Patch) -> Result<UpdateBody, String> {
    let mut body = UpdateBody::default();
    for change in &patch.changes {
        match (change.field, &change.new) {
            (Field::Name, FieldValue::Scalar(Some(v))) if !v.raw().trim().is_empty() => {
                body.name = Some(v.raw().to_owned());
            }
            (Field::Name, FieldValue::Scalar(_)) => {
                return Err("callbell cannot clear a contact's name".into());
            }
            (Field::Tags, FieldValue::Set(tags)) => {
                body.tags = Some(tags.to_strings());
            }
            (Field::CustomFields, FieldValue::Map(new)) => {
                let old = match &change.old {
                    FieldValue::Map(m) => Some(m),
                    _ => None,
                };
                if let Some(old) = old {
                    if let Some(gone) = old.keys().find(|k| !new.contains_key(k)) {
                        return Err(format!(
                            "callbell cannot remove custom field {gone:?} (PATCH only sets keys)"
                        ));
                    }
                }
                let changed: BTreeMap<String, String> = new
                    .iter()
                    .filter(|(k, v)| old.and_then(|o| o.get(k)) != Some(*v))
                    .map(|(k, v)| (k.to_string(), v.to_string()))
                    .collect();
                body.custom_fields = (!changed.is_empty()).then_some(changed);
            }
            (field, _) => {
                return Err(format!(
                    "callbell cannot write {field} through PATCH /contacts"
                ));
            }
        }
    }
    Ok(body)
}

/// The fields `POST /contacts` takes (`post_contacts.md`): the phone is the identifier.
pub const CREATE_FIELDS: [Field; 4] = [Field::Name, Field::Phone, Field::Tags, Field::CustomFields];

/// What a create requires: each group needs one of its fields (identifier and name; the
/// source comes from config).
pub const CREATE_REQUIRES: &[&[Field]] = &[&[Field::Phone], &[Field::Name]];

/// What the account holds that a create may name: its source and its known tags and keys.
#[derive(Debug, Clone, Copy)]
pub struct CreateContext<'a> {
    /// The `source` to send (config `create_source`).
    pub source: &'a str,
    pub known_tags: &'a BTreeSet<String>,
    pub known_custom_fields: &'a BTreeSet<String>,
}

/// The phone as Callbell's identifier: the E.164 key without its `+` (`14155550101`).
///
/// # Errors
/// A phone that did not parse as a number cannot name a WhatsApp contact.
pub fn phone_identifier(e164: &str) -> Result<String, String> {
    let digits = e164.strip_prefix('+').unwrap_or(e164);
    if digits.len() >= 7 && digits.len() <= 15 && digits.bytes().all(|b| b.is_ascii_digit()) {
        Ok(digits.to_owned())
    } else {
        Err(format!(
            "the phone {e164:?} is not an international number; Callbell's identifier is one"
        ))
    }
}

/// Builds the `POST /contacts` body for `new`: the phone as identifier, the configured source,
/// the name, and the tags and custom fields when planned.
///
/// # Errors
/// A missing name or phone (the planner skips such a person with `missing-required`), a phone
/// that is not a valid number, or a tag or custom-field key the account does not know
/// (Callbell would reject the whole create with a 422): nothing is sent. Fields the endpoint
/// has no parameter for (e-mail, avatar, username, external id) are left out.
pub fn create_body(new: &NewContact, ctx: CreateContext<'_>) -> Result<CreateBody, String> {
    let mut identifier = None;
    let mut name = None;
    let mut tags = None;
    let mut custom_fields = None;
    for (field, value) in &new.fields {
        match (field, value) {
            (Field::Name, FieldValue::Scalar(Some(v))) if !v.raw().trim().is_empty() => {
                name = Some(v.raw().trim().to_owned());
            }
            (Field::Phone, FieldValue::Scalar(Some(v))) if v.valid() => {
                identifier = Some(phone_identifier(v.key())?);
            }
            (Field::Phone, FieldValue::Scalar(Some(v))) => {
                return Err(format!(
                    "the phone {:?} is not a valid number; Callbell's identifier is one",
                    v.raw()
                ));
            }
            (Field::Name | Field::Phone, FieldValue::Scalar(None)) => {}
            (Field::Tags, FieldValue::Set(set)) => {
                if let Some(unknown) = set.iter().find(|t| !ctx.known_tags.contains(t.as_str())) {
                    return Err(format!(
                        "tag {unknown:?} is not among the account's known_tags; Callbell rejects unknown tags"
                    ));
                }
                tags = (!set.is_empty()).then(|| set.to_strings());
            }
            (Field::CustomFields, FieldValue::Map(map)) => {
                if let Some(unknown) = map
                    .keys()
                    .find(|k| !ctx.known_custom_fields.contains(k.as_str()))
                {
                    return Err(format!(
                        "custom field {unknown:?} is not among the account's known_custom_fields; Callbell rejects unknown fields"
                    ));
                }
                custom_fields = (!map.is_empty()).then(|| map.to_btree());
            }
            // Fields `POST /contacts` has no parameter for (e-mail, avatar, username, external
            // id) are left out, as an update leaves out what Callbell cannot write.
            _ => {}
        }
    }
    // `post_contacts.md`: identifier, source and name are required parameters.
    let identifier = identifier.ok_or("a Callbell contact requires a phone (its identifier)")?;
    let name = name.ok_or("a Callbell contact requires a name")?;
    Ok(CreateBody {
        identifier,
        source: ctx.source.to_owned(),
        name,
        tags,
        custom_fields,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{Change, RecordId, TagSet, Value};
    use crate::provider::rules::{NoHolders, RuleId};

    fn dto(json: serde_json::Value) -> ContactDto {
        serde_json::from_value(json).expect("a valid contact DTO")
    }

    fn n() -> Normalizer {
        Normalizer::new("GB").expect("valid region")
    }

    #[test]
    fn maps_the_documented_contact() {
        let c = to_contact(
            dto(serde_json::json!({
                "uuid": "414a6d692bd645ed803f2e7ce360d4c8",
                "name": "  John   Doe ",
                "phoneNumber": "14155550101",
                "avatarUrl": "https://cdn.example/a.png",
                "createdAt": "2020-11-13T21:08:53Z",
                "source": "whatsapp",
                "href": "https://dash.callbell.eu/contacts/414a6d692bd645ed803f2e7ce360d4c8",
                "tags": ["sales", "lead", "sales"],
                "customFields": {
                    "Address": "Oxford Street 123",
                    "Features": ["Dark Mode", "Notifications"],
                    "Seats": 3,
                    "Gone": null
                }
            })),
            &n(),
        );
        assert_eq!(c.id.native, "414a6d692bd645ed803f2e7ce360d4c8");
        assert_eq!(c.update_ref.as_deref(), Some(c.id.native.as_str()));
        assert_eq!(c.name.as_ref().map(|n| n.display()), Some("John Doe"));
        // Read as international even though the default region is GB.
        assert_eq!(c.phone.as_ref().map(|p| p.key()), Some("+14155550101"));
        assert_eq!(
            c.avatar_url.as_ref().map(|a| a.raw()),
            Some("https://cdn.example/a.png")
        );
        assert_eq!(
            c.tags,
            ["lead", "sales"].map(String::from).into_iter().collect()
        );
        let expected: BTreeMap<String, String> = [
            ("Address", "Oxford Street 123"),
            ("Features", r#"["Dark Mode","Notifications"]"#),
            ("Seats", "3"),
        ]
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .into();
        assert_eq!(c.custom_fields, expected.into());
        assert!(c.warnings.is_empty(), "{:?}", c.warnings);
        assert_eq!(c.email, None);
    }

    #[test]
    fn bad_phone_is_kept_with_a_warning_and_nulls_are_absent() {
        let c = to_contact(
            dto(serde_json::json!({
                "uuid": "u1", "name": null, "phoneNumber": "+123 456 789",
                "avatarUrl": null, "tags": null, "customFields": null
            })),
            &n(),
        );
        let phone = c.phone.expect("kept");
        assert!(!phone.valid());
        assert_eq!(c.warnings.len(), 1);
        // The normaliser keeps the international-digits form (`+123456789`).
        assert_eq!(phone.raw(), "+123456789");
        assert!(c.warnings[0].contains("+123456789"), "{:?}", c.warnings);
        assert_eq!(c.name, None);
        assert_eq!(c.avatar_url, None);
        assert!(c.tags.is_empty() && c.custom_fields.is_empty());
    }

    #[test]
    fn response_object_form_maps_like_the_array_form() {
        use super::super::api::ContactEnvelope;
        let obj: ContactEnvelope = serde_json::from_str(
            r#"{"contact":{"uuid":"u2","name":"Ann","phoneNumber":"447946000111","tags":["vip"],"customFields":{}}}"#,
        )
        .expect("object form");
        let arr: ContactEnvelope = serde_json::from_str(
            r#"{"contact":[{"uuid":"u2","name":"Ann","phoneNumber":"447946000111","tags":["vip"],"customFields":{}}]}"#,
        )
        .expect("array form");
        let a = to_contact(obj.into_contact().expect("one"), &n());
        let b = to_contact(arr.into_contact().expect("one"), &n());
        assert_eq!(a, b);
        assert_eq!(a.tags.len(), 1);
    }

    fn change(field: Field, old: FieldValue, new: FieldValue) -> Change {
        Change { field, old, new }
    }

    fn patch(changes: Vec<Change>) -> Patch {
        Patch {
            record: RecordId::new(ProviderKind::Callbell, "u"),
            update_ref: "u".into(),
            changes,
        }
    }

    fn map(pairs: &[(&str, &str)]) -> FieldValue {
        FieldValue::Map(
            pairs
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
        )
    }

    #[test]
    fn update_carries_only_changed_fields_and_keys() {
        let p = patch(vec![
            change(
                Field::Name,
                FieldValue::Scalar(None),
                FieldValue::Scalar(Some(Value::plain("Ada Lovelace"))),
            ),
            change(
                Field::Tags,
                FieldValue::Set(["lead".to_string()].into()),
                FieldValue::Set(["lead".to_string(), "vip".into()].into()),
            ),
            change(
                Field::CustomFields,
                map(&[("city", "Oslo"), ("loyalty_tier", "gold")]),
                map(&[("city", "Oslo"), ("loyalty_tier", "platinum"), ("new", "x")]),
            ),
        ]);
        let body = to_update(&p).expect("allowed");
        assert_eq!(
            serde_json::to_value(&body).expect("serialises"),
            serde_json::json!({
                "name": "Ada Lovelace",
                "tags": ["lead", "vip"],
                "custom_fields": {"loyalty_tier": "platinum", "new": "x"}
            })
        );
        let only_tags = to_update(&patch(vec![change(
            Field::Tags,
            FieldValue::Set(["vip".to_string()].into()),
            FieldValue::Set(TagSet::new()),
        )]))
        .expect("clearing tags is allowed");
        assert_eq!(
            serde_json::to_value(&only_tags).expect("serialises"),
            serde_json::json!({"tags": []})
        );
    }

    #[test]
    fn update_refuses_what_the_rules_forbid() {
        let clear_name = patch(vec![change(
            Field::Name,
            FieldValue::Scalar(Some(Value::plain("Ann"))),
            FieldValue::Scalar(None),
        )]);
        assert!(to_update(&clear_name).is_err());
        let phone = patch(vec![change(
            Field::Phone,
            FieldValue::Scalar(None),
            FieldValue::Scalar(Some(Value::plain("+14155550101"))),
        )]);
        assert!(to_update(&phone).is_err());
        let drop_key = patch(vec![change(
            Field::CustomFields,
            map(&[("city", "Oslo")]),
            map(&[]),
        )]);
        assert!(to_update(&drop_key).is_err());
    }

    fn ctx<'a>(tags: &'a BTreeSet<String>, keys: &'a BTreeSet<String>) -> CreateContext<'a> {
        CreateContext {
            source: "whatsapp",
            known_tags: tags,
            known_custom_fields: keys,
        }
    }

    fn e164(key: &str) -> FieldValue {
        FieldValue::Scalar(Some(Value::new("+1 415-555-0101", key, true)))
    }

    #[test]
    fn create_body_uses_international_digits_and_the_source() {
        let tags: BTreeSet<String> = ["vip".to_string()].into();
        let keys: BTreeSet<String> = ["city".to_string()].into();
        let new = NewContact {
            provider: ProviderKind::Callbell,
            fields: vec![
                (Field::Name, FieldValue::Scalar(Some(Value::plain("Ada")))),
                (Field::Phone, e164("+14155550101")),
                (Field::Tags, FieldValue::Set(tags.clone().into())),
                (Field::CustomFields, map(&[("city", "Oslo")])),
            ],
        };
        let body = create_body(&new, ctx(&tags, &keys)).expect("valid");
        assert_eq!(body.identifier, "14155550101");
        assert_eq!(body.source, "whatsapp");
        assert_eq!(body.name, "Ada");
        assert_eq!(body.tags, Some(vec!["vip".to_string()]));
        assert_eq!(
            body.custom_fields,
            Some([("city".to_string(), "Oslo".to_string())].into())
        );
    }

    #[test]
    fn create_body_refuses_unknown_tags_and_missing_fields_and_leaves_out_foreign_ones() {
        let tags: BTreeSet<String> = ["vip".to_string()].into();
        let keys = BTreeSet::new();
        let base = [
            (Field::Name, FieldValue::Scalar(Some(Value::plain("Ada")))),
            (Field::Phone, e164("+14155550101")),
        ];
        let with = |extra: Vec<(Field, FieldValue)>| NewContact {
            provider: ProviderKind::Callbell,
            fields: base.iter().cloned().chain(extra).collect(),
        };
        let err = |n: NewContact| create_body(&n, ctx(&tags, &keys)).expect_err("refused");
        assert!(err(with(vec![(
            Field::Tags,
            FieldValue::Set(["nope".to_string()].into())
        )]))
        .contains("nope"));
        assert!(err(with(vec![(Field::CustomFields, map(&[("tier", "1")]))])).contains("tier"));
        let email = create_body(
            &with(vec![(
                Field::Email,
                FieldValue::Scalar(Some(Value::plain("a@b.co"))),
            )]),
            ctx(&tags, &keys),
        );
        assert_eq!(email.expect("an e-mail is left out").name, "Ada");
        let no_name = NewContact {
            provider: ProviderKind::Callbell,
            fields: vec![(Field::Phone, e164("+14155550101"))],
        };
        assert!(err(no_name).contains("name"));
        let no_phone = NewContact {
            provider: ProviderKind::Callbell,
            fields: vec![(Field::Name, FieldValue::Scalar(Some(Value::plain("Ada"))))],
        };
        assert!(err(no_phone).contains("phone"));
        assert!(phone_identifier("+1415").is_err());
        assert_eq!(
            phone_identifier("+442079460001").as_deref(),
            Ok("442079460001")
        );
    }

    #[test]
    fn rules_match_the_update_endpoint() {
        let r = rules(["vip".to_string()].into(), ["city".to_string()].into());
        let id = RecordId::new(ProviderKind::Callbell, "u");
        let none = FieldValue::Scalar(None);
        let some = |s: &str| FieldValue::Scalar(Some(Value::plain(s)));
        let blocked = |field, cur: &FieldValue, want: &FieldValue| {
            r.admit(&id, field, cur, want, &NoHolders)
                .blocked
                .first()
                .map(|b| b.rule)
        };
        assert_eq!(
            blocked(Field::Name, &some("Ann"), &none),
            Some(RuleId::NotClearable)
        );
        assert_eq!(blocked(Field::Name, &some("Ann"), &some("Bo")), None);
        assert_eq!(
            blocked(Field::Phone, &none, &some("+14155550101")),
            Some(RuleId::ReadOnly)
        );
        assert_eq!(
            blocked(Field::AvatarUrl, &none, &some("https://x.io/a.png")),
            Some(RuleId::ReadOnly)
        );
        assert!(!r.supports(Field::Email));
        assert!(!r.supports(Field::Username));
        assert!(!r.supports(Field::ExternalId));
        let tags = |t: &[&str]| FieldValue::Set(t.iter().map(|s| s.to_string()).collect());
        assert_eq!(
            blocked(Field::Tags, &tags(&[]), &tags(&["nope"])),
            Some(RuleId::UnknownTag)
        );
        assert_eq!(blocked(Field::Tags, &tags(&["vip"]), &tags(&[])), None);
        assert_eq!(
            blocked(Field::CustomFields, &map(&[]), &map(&[("nope", "1")])),
            Some(RuleId::UnknownCustomField)
        );
        assert_eq!(
            blocked(Field::CustomFields, &map(&[("city", "a")]), &map(&[])),
            Some(RuleId::NotClearable)
        );
    }
}
