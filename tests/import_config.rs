//! The import keys of a provider section (SPEC section 11, issue 10): `role`, `create`,
//! `create_filter`, `max_creates`. Bad values are refused by `check-config` with exit 2 and a
//! message naming the file, the key and its line; and `create_filter` written in a config file
//! decides end to end, over HTTP against the simulators, who is created.

mod common;

use std::path::Path;

use common::*;
use contact_sync::config::Config;
use contact_sync::model::{Field, FieldValue};
use contact_sync::sim::SeedPerson;

/// A config with one Privy section whose import keys are `keys` (starting on line 4), and
/// a Callbell section after it. Returns its path.
fn config_with(dir: &Path, keys: &str) -> String {
    let token = dir.join("token");
    std::fs::write(&token, "t0k3n-not-shown").expect("token file");
    let body = format!(
        "[providers.privy]\nbase_url = \"https://api.privy.com\"\ntoken_file = \"{t}\"\n{keys}\n\
         [providers.callbell]\nbase_url = \"https://api.callbell.eu\"\ntoken_file = \"{t}\"\n",
        t = token.display()
    );
    let path = dir.join("import.toml");
    std::fs::write(&path, body).expect("config file");
    path.display().to_string()
}

#[test]
fn bad_import_keys_are_refused_naming_file_key_and_line() {
    let dir = tempfile::tempdir().expect("tempdir");
    // (the keys from line 4 on, the key named, its line, a word the message must hold)
    let cases = [
        (
            "role = \"source\"\ncreate = true\n",
            "providers.privy.create",
            5,
            "source",
        ),
        ("role = \"sink\"\n", "providers.privy.role", 4, "\"sink\""),
        (
            "create = true\ncreate_filter = { from = [\"mailchimp\"] }\n",
            "providers.privy.create_filter.from",
            5,
            "mailchimp",
        ),
        (
            // A provider that exists but has no section here.
            "create = true\ncreate_filter = { from = [\"chatwoot\"] }\n",
            "providers.privy.create_filter.from",
            5,
            "not configured",
        ),
        (
            "create = true\ncreate_filter = { require = [\"phone\", \"shoe_size\"] }\n",
            "providers.privy.create_filter.require",
            5,
            "shoe_size",
        ),
        (
            "create_filter = { require = [\"phone\"] }\n",
            "providers.privy.create_filter",
            4,
            "create = true",
        ),
        (
            "create = true\ncreate_filter = { tags_any = [\"vip\"], tags_none = [\"vip\"] }\n",
            "providers.privy.create_filter.tags_none",
            5,
            "vip",
        ),
    ];
    for (keys, key, line, word) in cases {
        let path = config_with(dir.path(), keys);
        let o = run_bin(&["check-config", "--config", &path]);
        let out = output_text(&o);
        assert_eq!(o.status.code(), Some(2), "{keys}: {out}");
        let expected = format!("{path}:{line}: `{key}`");
        let msg = out
            .lines()
            .find(|l| l.contains(&expected))
            .unwrap_or_else(|| panic!("{keys}: no line with {expected:?} in:\n{out}"));
        assert!(msg.contains(word), "{keys}: {msg:?} lacks {word:?}");
        assert!(!out.contains("t0k3n"), "a secret was printed: {out}");
    }

    // The same keys, valid, pass.
    let path = config_with(
        dir.path(),
        "role = \"target\"\ncreate = true\nmax_creates = 20\n\
         create_filter = { require = [\"phone\"], tags_any = [\"vip\"], tags_none = [\"lead\"], from = [\"callbell\"] }\n",
    );
    let o = run_bin(&["check-config", "--config", &path]);
    assert_eq!(o.status.code(), Some(0), "{}", output_text(&o));
}

fn tagged(name: &str, phone: Option<&str>, email: &str, tags: &[&str]) -> SeedPerson {
    SeedPerson {
        phone: phone.map(str::to_owned),
        tags: tags.iter().map(|t| t.to_string()).collect(),
        ..person(name, "", email)
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn create_filter_from_the_config_file_decides_who_is_created() {
    let mut w = World::start().await;
    let dir = tempfile::tempdir().expect("tempdir");
    // Known to Chatwoot only unless said otherwise.
    let people = [
        (
            1,
            tagged(
                "Ada Lovelace",
                Some("+14155550101"),
                "ada@example.com",
                &["vip"],
            ),
            Chatwoot,
            true,
        ),
        // `require = ["phone"]`: no phone.
        (
            2,
            tagged("Bea Nophone", None, "bea@example.com", &["vip"]),
            Chatwoot,
            false,
        ),
        // `tags_any = ["vip"]`: no vip tag.
        (
            3,
            tagged(
                "Cat Untagged",
                Some("+14155550103"),
                "cat@example.com",
                &["wholesale"],
            ),
            Chatwoot,
            false,
        ),
        // `tags_none = ["lead"]`: a lead.
        (
            4,
            tagged(
                "Dan Lead",
                Some("+14155550104"),
                "dan@example.com",
                &["vip", "lead"],
            ),
            Chatwoot,
            false,
        ),
        // `from = ["chatwoot"]`: known to Callbell only.
        (
            5,
            tagged(
                "Eve Elsewhere",
                Some("+14155550105"),
                "eve@example.com",
                &["vip"],
            ),
            Callbell,
            false,
        ),
    ];
    for (seq, p, kind, _) in &people {
        w.seed(*seq, p, &[*kind]);
    }
    let path = config_toml(&w, dir.path(), "", "");
    let text = std::fs::read_to_string(&path).expect("config");
    std::fs::write(
        &path,
        text.replacen(
            "[providers.privy]\n",
            "[providers.privy]\ncreate = true\ncreate_filter = { require = [\"phone\"], tags_any = [\"vip\"], tags_none = [\"lead\"], from = [\"chatwoot\"] }\n",
            1,
        ),
    )
    .expect("config written");
    w.config = Config::load(Path::new(&path)).expect("config loads");

    let r = w.sync().await;
    assert_eq!(r.failure_count(), 0, "{}", r.to_text(false));
    let phones: Vec<String> = w
        .fleet
        .sim(Privy)
        .contacts()
        .iter()
        .filter_map(|c| c["phone_number"].as_str().map(str::to_owned))
        .collect();
    let emails: Vec<String> = w
        .fleet
        .sim(Privy)
        .contacts()
        .iter()
        .filter_map(|c| c["email"].as_str().map(str::to_owned))
        .collect();
    assert_eq!(emails, ["ada@example.com"], "only Ada passes: {phones:?}");
    assert_eq!(r.created(), 1, "{:#?}", r.create_outcomes);
    for (_, p, _, created) in &people {
        let email = p.email.as_deref().unwrap_or_default();
        assert_eq!(
            r.plan.creates.iter().any(|c| matches!(
                c.new.get(Field::Email),
                Some(FieldValue::Scalar(Some(v))) if v.key() == email
            )),
            *created,
            "{email}"
        );
    }
    // No other provider creates (create is off there).
    assert_eq!(w.fleet.sim(Protocol).contacts().len(), 0);
    assert_eq!(w.fleet.sim(Callbell).contacts().len(), 1, "Eve alone");
}

#[test]
fn the_example_config_documents_and_uses_every_import_key() {
    let c = Config::parse(
        contact_sync::config::EXAMPLE,
        "config/contact-sync.example.toml",
    )
    .expect("the example validates");
    let privy = c.provider(Privy).expect("privy section");
    let filter = privy.create.as_ref().expect("create = true in Privy");
    assert!(filter.require.contains(&Field::Phone));
    assert!(filter.tags_any.contains("vip") && filter.tags_none.contains("wholesale"));
    assert!(filter.from.contains(&Chatwoot) && filter.from.contains(&Callbell));
    assert_eq!(privy.max_creates, 100);
    assert_eq!(
        c.provider(Protocol).map(|p| p.create.is_some()),
        Some(false),
        "create = false in Protocol"
    );
    // Every import key is written in a section with a comment line right above it.
    let lines: Vec<&str> = contact_sync::config::EXAMPLE.lines().collect();
    for key in [
        "role",
        "create",
        "create_filter",
        "max_creates",
        "create_source",
    ] {
        let at = lines
            .iter()
            .position(|l| l.starts_with(&format!("{key} =")))
            .unwrap_or_else(|| panic!("`{key}` is not set in the example"));
        assert!(
            at > 0 && lines[at - 1].starts_with('#'),
            "`{key}` has no comment above it"
        );
    }
}
