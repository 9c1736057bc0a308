//! The binary's contract: exit codes, messages that name the key and line, secrets never shown.

mod common;

use std::path::Path;
use std::process::{Command, Output};

use common::*;

fn bin() -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_contact-sync"));
    c.env_remove("CONTACT_SYNC_CONFIG").env("RUST_LOG", "info");
    c
}

fn run(args: &[&str]) -> Output {
    bin().args(args).output().expect("binary runs")
}

fn text(o: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

#[test]
fn example_config_checks_out_as_shipped_and_prints_no_secret() {
    let o = run(&[
        "check-config",
        "--config",
        "config/contact-sync.example.toml",
    ]);
    let out = text(&o);
    assert_eq!(o.status.code(), Some(0), "{out}");
    assert!(!out.contains("REPLACE_ME"), "a secret was printed: {out}");

    // The same config from another directory with real-looking secrets: still nothing printed.
    let dir = tempfile::tempdir().expect("tempdir");
    let example = std::fs::read_to_string("config/contact-sync.example.toml").expect("example");
    std::fs::write(dir.path().join("c.toml"), example).expect("copy");
    std::fs::create_dir(dir.path().join("example-secrets")).expect("dir");
    for f in [
        "protocol",
        "callbell",
        "chatwoot",
        "chatwoot-inbox",
        "chatwoot-hmac",
        "privy",
    ] {
        std::fs::write(
            dir.path().join("example-secrets").join(f),
            format!("{f}-s3cr3t-value"),
        )
        .expect("secret");
    }
    let path = dir.path().join("c.toml").display().to_string();
    let o = run(&["check-config", "--config", &path]);
    let out = text(&o);
    assert_eq!(o.status.code(), Some(0), "{out}");
    assert!(!out.contains("s3cr3t"), "a secret was printed: {out}");
}

fn write_config(dir: &Path, body: &str) -> String {
    let path = dir.join("c.toml");
    std::fs::write(&path, body).expect("write config");
    path.display().to_string()
}

#[test]
fn bad_configs_exit_2_naming_the_key_and_line() {
    let dir = tempfile::tempdir().expect("tempdir");
    let cases = [
        ("[providers.privy]\nbase_url = \"https://api.privy.com\"\ntoken_env = \"X\"\nrate_limt = { requests = 1, per = \"1s\" }\n", "rate_limt", ":4"),
        ("[providers.privy]\nbase_url = \"https://api.privy.com\"\ntoken_env = \"CONTACT_SYNC_TEST_UNSET_VAR\"\n", "providers.privy.token_env", ":3"),
        ("[providers.privy]\nbase_url = \"htps//nope\"\ntoken_env = \"X\"\n", "providers.privy.base_url", ":2"),
    ];
    for (body, key, line) in cases {
        let path = write_config(dir.path(), body);
        let o = bin()
            .args(["check-config", "--config", &path])
            .env("X", "x")
            .env_remove("CONTACT_SYNC_TEST_UNSET_VAR")
            .output()
            .expect("runs");
        let out = text(&o);
        assert_eq!(o.status.code(), Some(2), "{out}");
        assert!(out.contains(key), "message names `{key}`: {out}");
        assert!(
            out.contains(&format!("{path}{line}")),
            "message names file and line {line}: {out}"
        );
    }
    let o = run(&["check-config", "--config", "/nonexistent/contact-sync.toml"]);
    assert_eq!(o.status.code(), Some(2));
    assert!(text(&o).contains("/nonexistent/contact-sync.toml"));
}

#[tokio::test(flavor = "multi_thread")]
async fn exit_codes_follow_the_contract_and_no_secret_is_logged() {
    let mut w = World::start().await;
    let dir = tempfile::tempdir().expect("tempdir");
    w.seed(
        1,
        &person("Ada Lovelace", "+14155550101", "ada@example.com"),
        &[Protocol, Callbell, Chatwoot, Privy],
    );
    let config = config_toml(&w, dir.path(), "", "timeout = \"2s\"\nmax_retries = 1");
    let tokens: Vec<String> = w
        .fleet
        .sims
        .iter()
        .map(|s| s.token())
        .chain([w
            .fleet
            .sim(Chatwoot)
            .shared()
            .options()
            .chatwoot
            .inbox_identifier])
        .collect();

    let cfg = config.clone();
    let o = tokio::task::spawn_blocking(move || {
        run(&["sync", "--config", &cfg, "--log-format", "json", "-v"])
    })
    .await
    .expect("join");
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));

    w.edit(
        Chatwoot,
        1,
        &person("Ada King", "+14155550101", "ada@example.com"),
    );
    let cfg = config.clone();
    let o = tokio::task::spawn_blocking(move || {
        run(&["diff", "--config", &cfg, "--exit-code", "--format", "json"])
    })
    .await
    .expect("join");
    assert_eq!(o.status.code(), Some(3), "changes pending: {}", text(&o));
    let report: serde_json::Value =
        serde_json::from_slice(&o.stdout).expect("json report on stdout");
    assert_eq!(report["schema"], "contact-sync/report/v1");
    assert_eq!(report["mode"], "diff");
    assert_eq!(report["summary"]["planned_writes"], 3);

    // Protocol goes down: the others are synced, the failure is reported, exit 1.
    let idx = w
        .fleet
        .sims
        .iter()
        .position(|s| s.kind == Protocol)
        .expect("protocol");
    w.fleet.sims.remove(idx).stop().await;
    let cfg = config.clone();
    let o = tokio::task::spawn_blocking(move || {
        run(&["sync", "--config", &cfg, "--log-format", "json", "-vv"])
    })
    .await
    .expect("join");
    let out = text(&o);
    assert_eq!(o.status.code(), Some(1), "{out}");
    assert!(out.contains("protocol"), "{out}");
    for t in &tokens {
        assert!(
            !out.contains(t.as_str()),
            "a secret reached the output: {t}"
        );
    }
    let cfg = config.clone();
    let o = tokio::task::spawn_blocking(move || run(&["status", "--config", &cfg]))
        .await
        .expect("join");
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    assert!(text(&o).contains("failed"), "{}", text(&o));
}
