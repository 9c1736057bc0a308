//! Pure conversions between Protocol's wire DTOs and the common model: a contact object to a
//! [`Contact`], and a [`Patch`] to the update body.

use chrono::DateTime;

use super::api::{ContactDto, CreateBody, UpdateBody};
use crate::model::{Contact, Field, FieldValue, Name, NewContact, Normalizer, Patch, ProviderKind};

/// Which update endpoint the adapter speaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum UpdateMode {
    /// `PATCH /v1/contacts/{id}` (current API): display_name, username, phone_number,
    /// avatar_url.
    Patch,
    /// `PUT /v1/contacts/{id}` (older page): display_name only.
    LegacyPut,
}

/// Maps one contact object to the common model, normalising each value once.
///
/// `display_name: null` means "shown as the username" on Protocol; the model's name is then
/// absent (the username stays in [`Contact::username`]), so a name from another provider can
/// be written here without fighting a username echoed back as a name.
pub fn to_contact(dto: &ContactDto, normalizer: &Normalizer) -> Contact {
    let mut c = Contact::new(ProviderKind::Protocol, dto.id.clone());
    c.name = dto
        .display_name
        .as_deref()
        .map(Name::from_display)
        .filter(|n| !n.display().is_empty());
    c.username = dto.username.as_deref().and_then(|u| normalizer.text(u));
    c.avatar_url = dto.avatar_url.as_deref().and_then(|u| normalizer.text(u));
    if let Some(raw) = dto.phone_number.as_deref() {
        let (phone, warning) = normalizer.phone(raw);
        c.phone = phone;
        c.warnings.extend(warning);
    }
    if let Some(secs) = dto.updated_at {
        match DateTime::from_timestamp(secs, 0) {
            Some(t) => c.updated_at = Some(t),
            None => c.warnings.push(format!(
                "updated_at {secs} is not a valid timestamp; ignored"
            )),
        }
    }
    c
}

/// Builds the update body for `patch`: only the fields it changes.
///
/// # Errors
/// A change the field rules forbid (a clear, a field Protocol does not have, a non-name field in
/// legacy mode) is refused with a message, and nothing is sent: the reconciler should never
/// have planned it, and sending part of a patch would leave the record half-written.
pub fn update_body(patch: &Patch, mode: UpdateMode) -> Result<UpdateBody, String> {
    let mut body = UpdateBody::default();
    for change in &patch.changes {
        let field = change.field;
        let value = match &change.new {
            FieldValue::Scalar(Some(v)) => v.raw().to_owned(),
            FieldValue::Scalar(None) => {
                return Err(format!(
                    "cannot clear {field}: Protocol documents no way to clear a field"
                ))
            }
            _ => return Err(format!("Protocol has no {field} field")),
        };
        if mode == UpdateMode::LegacyPut && field != Field::Name {
            return Err(format!(
                "cannot write {field}: legacy PUT mode writes display_name only"
            ));
        }
        let slot = match field {
            Field::Name => &mut body.display_name,
            Field::Username => &mut body.username,
            Field::Phone => &mut body.phone_number,
            Field::AvatarUrl => &mut body.avatar_url,
            Field::Email | Field::ExternalId | Field::Tags | Field::CustomFields => {
                return Err(format!("Protocol has no {field} field"))
            }
        };
        *slot = Some(value);
    }
    Ok(body)
}

/// The fields `POST /v1/contacts` takes (`protocol-contacts-overview.md`, "Create a contact").
pub const CREATE_FIELDS: [Field; 4] =
    [Field::Name, Field::Phone, Field::AvatarUrl, Field::Username];

/// What a create requires: each group needs one of its fields (username and phone number).
pub const CREATE_REQUIRES: &[&[Field]] = &[&[Field::Username], &[Field::Phone]];

/// Builds the `POST /v1/contacts` body for `new`: username and phone (E.164) required, the
/// display name and avatar when planned. Fields the endpoint has no parameter for (e-mail,
/// tags, custom fields, external id) are left out, as an update leaves out a field the
/// provider does not support.
///
/// # Errors
/// A missing username or phone (the planner skips such a person with `missing-required`) or a
/// phone that is not a valid number: nothing is sent.
pub fn create_body(new: &NewContact) -> Result<CreateBody, String> {
    let mut body = CreateBody {
        username: String::new(),
        phone_number: String::new(),
        display_name: None,
        avatar_url: None,
    };
    for (field, value) in &new.fields {
        let FieldValue::Scalar(Some(v)) = value else {
            continue;
        };
        if v.raw().trim().is_empty() {
            continue;
        }
        match field {
            Field::Username => body.username = v.raw().trim().to_owned(),
            Field::Phone if !v.valid() => {
                return Err(format!(
                    "the phone {:?} is not a valid number; Protocol requires one",
                    v.raw()
                ))
            }
            // The comparison key of a valid phone is E.164: unambiguous whatever the format
            // the person's other records hold.
            Field::Phone => body.phone_number = v.key().to_owned(),
            Field::Name => body.display_name = Some(v.raw().to_owned()),
            Field::AvatarUrl => body.avatar_url = Some(v.raw().to_owned()),
            Field::Email | Field::ExternalId | Field::Tags | Field::CustomFields => {}
        }
    }
    // `protocol-contacts-overview.md`: "you must provide their Protocol username and phone
    // number".
    if body.username.is_empty() {
        return Err("a Protocol contact requires a username".into());
    }
    if body.phone_number.is_empty() {
        return Err("a Protocol contact requires a phone_number".into());
    }
    Ok(body)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{Change, RecordId, Value};

    fn dto() -> ContactDto {
        ContactDto {
            id: "WAz8eIbvDR60rouK".into(),
            username: Some("FrankMcCallister".into()),
            phone_number: Some("1-800-759-3000".into()),
            avatar_url: Some("https://assets.protocol.chat/avatars/frank.jpg".into()),
            display_name: None,
            conversation_id: Some("xgQQXg3hrtjh7AvZ".into()),
            last_active_at: Some(705_103_200),
            created_at: Some(692_233_200),
            updated_at: None,
        }
    }

    fn n() -> Normalizer {
        Normalizer::new("US").expect("valid region")
    }

    #[test]
    fn documented_contact_maps_with_null_display_name_as_no_name() {
        let c = to_contact(&dto(), &n());
        assert_eq!(c.id.native, "WAz8eIbvDR60rouK");
        assert_eq!(c.update_ref.as_deref(), Some("WAz8eIbvDR60rouK"));
        assert_eq!(c.name, None);
        assert_eq!(
            c.username.as_ref().map(|v| v.raw()),
            Some("FrankMcCallister")
        );
        let phone = c.phone.expect("phone kept");
        assert_eq!(phone.key(), "+18007593000");
        assert!(phone.valid());
        assert_eq!(c.updated_at, None);
        assert!(c.warnings.is_empty());
        assert!(c.email.is_none() && c.tags.is_empty() && c.custom_fields.is_empty());
    }

    #[test]
    fn display_name_and_updated_at_map_when_present() {
        let mut d = dto();
        d.display_name = Some("  Uncle   Frank ".into());
        d.updated_at = Some(692_233_200);
        let c = to_contact(&d, &n());
        assert_eq!(c.name.as_ref().map(|n| n.display()), Some("Uncle Frank"));
        assert_eq!(c.updated_at.map(|t| t.timestamp()), Some(692_233_200));
        d.display_name = Some("   ".into());
        assert_eq!(to_contact(&d, &n()).name, None);
    }

    #[test]
    fn bad_phone_is_kept_with_a_warning() {
        let mut d = dto();
        d.phone_number = Some("ask reception".into());
        d.updated_at = Some(i64::MAX);
        let c = to_contact(&d, &n());
        let phone = c.phone.expect("kept");
        assert!(!phone.valid());
        assert_eq!(phone.raw(), "ask reception");
        assert_eq!(c.warnings.len(), 2, "{:?}", c.warnings);
    }

    fn patch(changes: Vec<(Field, FieldValue)>) -> Patch {
        Patch {
            record: RecordId::new(ProviderKind::Protocol, "x"),
            update_ref: "x".into(),
            changes: changes
                .into_iter()
                .map(|(field, new)| Change {
                    field,
                    old: FieldValue::Scalar(None),
                    new,
                })
                .collect(),
        }
    }

    fn s(v: &str) -> FieldValue {
        FieldValue::Scalar(Some(Value::plain(v)))
    }

    #[test]
    fn patch_carries_only_changed_fields() {
        let p = patch(vec![
            (Field::Name, s("John Smith")),
            (Field::Phone, s("+15559876543")),
        ]);
        let body = update_body(&p, UpdateMode::Patch).expect("allowed");
        assert_eq!(
            body,
            UpdateBody {
                display_name: Some("John Smith".into()),
                phone_number: Some("+15559876543".into()),
                ..UpdateBody::default()
            }
        );
    }

    fn phone(e164: &str) -> FieldValue {
        FieldValue::Scalar(Some(Value::new("+1 (415) 555-0101", e164, true)))
    }

    fn new_contact(fields: Vec<(Field, FieldValue)>) -> NewContact {
        NewContact {
            provider: ProviderKind::Protocol,
            fields,
        }
    }

    #[test]
    fn create_body_carries_username_e164_phone_and_optional_fields() {
        let body = create_body(&new_contact(vec![
            (Field::Name, s("Frank McCallister")),
            (Field::Phone, phone("+14155550101")),
            (Field::Username, s("frank")),
        ]))
        .expect("complete");
        assert_eq!(
            body,
            CreateBody {
                username: "frank".into(),
                phone_number: "+14155550101".into(),
                display_name: Some("Frank McCallister".into()),
                avatar_url: None,
            }
        );
    }

    #[test]
    fn create_body_refuses_missing_required_fields_and_leaves_out_foreign_ones() {
        let no_user = create_body(&new_contact(vec![(Field::Phone, phone("+14155550101"))]));
        assert!(no_user.expect_err("no username").contains("username"));
        let no_phone = create_body(&new_contact(vec![(Field::Username, s("frank"))]));
        assert!(no_phone.expect_err("no phone").contains("phone_number"));
        let email = create_body(&new_contact(vec![
            (Field::Username, s("frank")),
            (Field::Phone, phone("+14155550101")),
            (Field::Email, s("f@example.com")),
        ]));
        assert_eq!(
            email.expect("an e-mail is left out").username,
            "frank",
            "Protocol has no e-mail: it is not sent"
        );
        let bad_phone = create_body(&new_contact(vec![
            (Field::Username, s("frank")),
            (
                Field::Phone,
                FieldValue::Scalar(Some(Value::new("ask reception", "ask reception", false))),
            ),
        ]));
        assert!(bad_phone.expect_err("invalid").contains("ask reception"));
    }

    #[test]
    fn forbidden_changes_are_refused_whole() {
        let clear = patch(vec![
            (Field::Name, s("A")),
            (Field::Username, FieldValue::Scalar(None)),
        ]);
        assert!(update_body(&clear, UpdateMode::Patch).is_err());
        let email = patch(vec![(Field::Email, s("a@b.co"))]);
        assert!(update_body(&email, UpdateMode::Patch).is_err());
        let tags = patch(vec![(
            Field::Tags,
            FieldValue::Set(["vip".to_string()].into()),
        )]);
        assert!(update_body(&tags, UpdateMode::Patch).is_err());
        let legacy = patch(vec![(Field::Name, s("A")), (Field::Username, s("a"))]);
        assert!(update_body(&legacy, UpdateMode::LegacyPut).is_err());
        let name_only = patch(vec![(Field::Name, s("A"))]);
        assert_eq!(
            update_body(&name_only, UpdateMode::LegacyPut)
                .expect("allowed")
                .display_name
                .as_deref(),
            Some("A")
        );
    }
}
