//! The demo maps one custom field across three providers under different names (SPEC section
//! 12): Callbell's "Loyalty Tier" edit reaches Privy's `loyalty_tier` and Chatwoot's `tier`,
//! and the second dry run plans nothing.

use contact_sync::model::ProviderKind;

#[tokio::test]
async fn the_demo_syncs_one_custom_field_under_three_names() {
    let mapping = contact_sync::demo::demo_mapping();
    let names: Vec<&str> = ProviderKind::ALL
        .iter()
        .filter_map(|k| mapping.custom_fields["loyalty_tier"].get(k))
        .map(String::as_str)
        .collect();
    assert_eq!(names, ["Loyalty Tier", "tier", "loyalty_tier"]);

    let out = contact_sync::demo::run(12).await.expect("the demo runs");
    let diff = out
        .split("$ contact-sync diff\n")
        .nth(1)
        .and_then(|rest| rest.split("$ contact-sync sync").next())
        .expect("the demo prints its diff");
    let tier_rows: Vec<&str> = diff
        .lines()
        .filter(|l| l.contains("custom_fields") && l.contains("platinum"))
        .collect();
    assert_eq!(tier_rows.len(), 2, "{diff}");
    assert!(tier_rows.iter().any(|l| l.contains("chatwoot:")), "{diff}");
    assert!(tier_rows.iter().any(|l| l.contains("privy:")), "{diff}");
    assert!(
        !diff.contains("unknown-custom-field"),
        "Callbell's own key is known: {diff}"
    );
    assert!(
        out.contains("\n0 writes and 0 creates planned (0 write requests"),
        "{out}"
    );
}
