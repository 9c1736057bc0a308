//! `min_scan_interval`: validated per provider, with the file, key and line in the message.

use std::time::Duration;

use contact_sync::config::{Config, EXAMPLE};
use contact_sync::model::ProviderKind;

fn with_privy_line(line: &str) -> String {
    EXAMPLE.replace("min_scan_interval = \"30m\"", line)
}

#[test]
fn the_example_sets_privys_min_scan_interval() {
    let config = Config::parse(EXAMPLE, "example.toml").expect("the example is valid");
    let privy = config.provider(ProviderKind::Privy).expect("privy");
    assert_eq!(privy.min_scan_interval, Some(Duration::from_secs(30 * 60)));
    let protocol = config.provider(ProviderKind::Protocol).expect("protocol");
    assert_eq!(
        protocol.min_scan_interval, None,
        "default: as often as the quota allows"
    );
}

#[test]
fn a_bad_min_scan_interval_is_named_with_its_line() {
    let text = with_privy_line("min_scan_interval = \"soon\"");
    assert_ne!(text, EXAMPLE, "the example has the line this test replaces");
    let line = text
        .lines()
        .position(|l| l.starts_with("min_scan_interval"))
        .expect("line")
        + 1;
    let err = Config::parse(&text, "c.toml")
        .expect_err("rejected")
        .to_string();
    assert!(
        err.contains(&format!(
            "c.toml:{line}: `providers.privy.min_scan_interval`"
        )),
        "{err}"
    );
    assert!(err.contains("\"soon\""), "shows the value: {err}");

    for bad in ["0s", "8d"] {
        let err = Config::parse(
            &with_privy_line(&format!("min_scan_interval = \"{bad}\"")),
            "c.toml",
        )
        .expect_err("rejected")
        .to_string();
        assert!(
            err.contains("`providers.privy.min_scan_interval`"),
            "{bad}: {err}"
        );
    }
    let err = Config::parse(&with_privy_line("min_scan_interval = 30"), "c.toml")
        .expect_err("a number is not a duration")
        .to_string();
    assert!(err.contains("min_scan_interval"), "{err}");
}
