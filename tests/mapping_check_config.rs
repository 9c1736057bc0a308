//! `contact-sync check-config` on mapping and scope mistakes (SPEC section 12): exit 2, and every
//! problem named with file, key and line, all in one run.

mod common;

use common::{output_text, run_bin};

#[test]
fn check_config_rejects_bad_mappings_with_file_key_and_line() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("c.toml");
    let text = "\
[providers.privy]
base_url = \"http://127.0.0.1:1\"
token_env = \"PRIVY_TOKEN\"
[providers.callbell]
base_url = \"http://127.0.0.1:1/v1\"
token_env = \"CALLBELL_TOKEN\"
known_tags = [\"vip\"]
known_custom_fields = [\"Loyalty Tier\"]
[mapping.custom_fields]
loyalty_tier = { privy = \"loyalty_tier\", callbell = \"Loyalty Tier\", chatwoot = \"tier\" }
points = { privy = \"loyalty_tier\" }
[mapping.tags]
vip = { callbell = \"VIP\" }
[policy.fields.email]
targets = [\"privy\", \"privy\"]
";
    std::fs::write(&path, text).expect("config");
    let path = path.display().to_string();
    let out = run_bin(&["check-config", "--config", &path]);
    let msg = output_text(&out);
    assert_eq!(out.status.code(), Some(2), "{msg}");
    for want in [
        format!("{path}:10: `mapping.custom_fields.loyalty_tier.chatwoot`: chatwoot is not configured"),
        format!("{path}:11: `mapping.custom_fields.points.privy`: privy custom field \"loyalty_tier\" is mapped twice"),
        format!("{path}:13: `mapping.tags.vip.callbell`: \"VIP\" is not in `providers.callbell.known_tags`"),
        format!("{path}:15: `policy.fields.email.targets`: `privy` is listed twice"),
    ] {
        assert!(msg.contains(&want), "{want:?} missing from:\n{msg}");
    }
}
