//! Bad input gets a clear, bounded outcome and changes nothing: hostile config files, provider
//! data with invalid phones and e-mails, huge tag lists, unicode and control characters in names,
//! ids with path characters.

mod common;

use common::*;
use contact_sync::config::Config;
use contact_sync::model::ProviderKind;
use serde_json::json;

#[test]
fn hostile_configs_are_rejected_with_a_named_problem() {
    let cases: &[(&str, &str)] = &[
        ("\u{0}\u{1}\u{2}binary", "(syntax)"),
        ("[providers.privy\nbase_url = 1", "(syntax)"),
        ("[providers.privy]\nbase_url = 7\ntoken_env = \"X\"\n", "base_url"),
        ("[providers.privy]\nbase_url = \"https://x\"\ntoken_env = \"X\"\ntoken_file = \"/etc/passwd\"\n", "providers.privy.token_env"),
        ("[providers.privy]\nbase_url = \"file:///etc/passwd\"\ntoken_env = \"X\"\n", "providers.privy.base_url"),
        ("[providers.privy]\nbase_url = \"https://x\"\ntoken_env = \"X\"\nrate_limit = { requests = 10, per = \"-1s\" }\n", "providers.privy.rate_limit.per"),
        ("[providers.privy]\nbase_url = \"https://x\"\ntoken_env = \"X\"\nheadroom = 7\n", "providers.privy.headroom"),
        ("[daemon]\nlisten = \"0.0.0.0:9187\"\n", "daemon.listen"),
        ("[policy]\nprecedence = [\"privy\", \"privy\"]\n", "policy.precedence"),
        ("[policy.fields.nickname]\nprecedence = [\"privy\"]\n", "policy.fields.nickname"),
        ("[schedule]\ntimezone = \"Mars/Olympus\"\n", "schedule.timezone"),
        ("[providers.chatwoot]\nbase_url = \"https://x\"\ntoken_env = \"X\"\naccount_id = -1\ninbox_id = 3\n", "account_id"),
        (&"[a]\n".repeat(10_000), "a"),
        (&format!("x = \"{}\"", "y".repeat(1_000_000)), "x"),
    ];
    for (text, key) in cases {
        let err = Config::parse(text, "hostile.toml").expect_err("rejected");
        let shown = err.to_string();
        assert!(
            shown.contains(key),
            "`{key}` named in: {}",
            &shown[..shown.len().min(400)]
        );
        assert!(shown.contains("hostile.toml"), "{shown}");
        assert!(
            shown.len() < 4000,
            "bounded message ({} bytes)",
            shown.len()
        );
    }
}

#[tokio::test]
async fn hostile_provider_data_is_kept_flagged_and_bounded() {
    let w = World::start().await;
    let control_name = "Ada\u{7}\u{1b}[31m  Lovelace\u{202e}";
    let mut p = person(control_name, "+14155550101", "ada@example.com");
    p.tags = (0..5000).map(|i| format!("tag-{i}")).collect();
    w.seed(1, &p, &[ProviderKind::Privy]);
    let mut q = person("Ünïcödé 名前 ✓", "+14155550101", "ada@example.com");
    q.tags.clear();
    w.seed(1, &q, &[ProviderKind::Chatwoot, ProviderKind::Protocol]);
    // A contact with unparseable data in every field that has a format.
    w.fleet.sim(ProviderKind::Privy).upsert(json!({
        "id": "cus_bad/../../admin", "first_name": "Bad", "last_name": "Data", "email": "not an email",
        "phone_number": "call me maybe", "tags": [], "custom_fields": {}, "created_at": "2026-01-01T00:00:00Z",
        "updated_at": "2026-01-01T00:00:00Z"
    }));
    let first = w.sync().await;
    assert!(first.problems.is_empty(), "{:?}", first.problems);
    let warnings = first.warnings.join("\n");
    assert!(
        warnings.contains("call me maybe") && warnings.contains("not an email"),
        "{warnings}"
    );
    // The bad record is kept (listed, flagged) and nothing invalid is spread.
    for sim in &w.fleet.sims {
        for r in sim.writes() {
            let body = r.body.map(|b| b.to_string()).unwrap_or_default();
            assert!(
                !body.contains("call me maybe") && !body.contains("not an email"),
                "{body}"
            );
        }
    }
    // 5000 tags were merged without error; Privy kept them (no write removed any).
    let privy = w.fleet.sim(ProviderKind::Privy).contacts();
    assert!(privy
        .iter()
        .any(|c| c["tags"].as_array().is_some_and(|t| t.len() == 5000)));
    // Names with control characters were normalised, not passed through.
    for r in w.fleet.sims.iter().flat_map(|s| s.writes()) {
        let body = r.body.map(|b| b.to_string()).unwrap_or_default();
        assert!(
            !body.contains('\u{7}') && !body.contains('\u{1b}'),
            "control characters sent: {body}"
        );
    }
    let again = w.sync().await;
    assert!(again.plan.updates.is_empty(), "{}", again.to_text(false));
}
