//! Plan files with creates (SPEC section 11, issue 10), through the binary: `diff --plan-out`
//! plans a create, and `sync --plan` checks again that the key is still free before sending it.
//! A key taken in the meantime means the create is not sent and is reported as a skip; a plan
//! whose world did not change applies its create exactly once, even when applied twice.

mod common;

use axum::http::Method;
use common::*;
use contact_sync::model::ProviderKind;
use serde_json::Value;

async fn blocking(args: Vec<String>) -> std::process::Output {
    tokio::task::spawn_blocking(move || {
        run_bin(&args.iter().map(String::as_str).collect::<Vec<_>>())
    })
    .await
    .expect("join")
}

/// Runs `contact-sync <cmd> --config <config> <more…> --format json`; returns the exit code
/// and the JSON report.
async fn run(cmd: &str, config: &str, more: &[&str]) -> (Option<i32>, Value) {
    let mut args = vec![cmd.to_string(), "--config".into(), config.to_string()];
    args.extend(more.iter().map(|s| s.to_string()));
    args.extend(["--format".into(), "json".into()]);
    let o = blocking(args).await;
    let report = serde_json::from_slice(&o.stdout)
        .unwrap_or_else(|e| panic!("{cmd}: JSON report ({e}): {}", output_text(&o)));
    (o.status.code(), report)
}

fn posts(w: &World, kind: ProviderKind) -> usize {
    w.fleet
        .sim(kind)
        .requests()
        .iter()
        .filter(|r| r.method == Method::POST)
        .count()
}

fn privy_with_email(w: &World, email: &str) -> usize {
    w.fleet
        .sim(Privy)
        .contacts()
        .iter()
        .filter(|c| c["email"].as_str() == Some(email))
        .count()
}

fn creates(report: &Value) -> Vec<Value> {
    report["creates"].as_array().cloned().unwrap_or_default()
}

#[tokio::test(flavor = "multi_thread")]
async fn a_planned_create_whose_key_was_taken_is_skipped_and_an_unchanged_one_applies_once() {
    let w = World::start().await;
    let dir = tempfile::tempdir().expect("tempdir");
    w.seed(
        1,
        &person("Ada Lovelace", "+14155550101", "ada@example.com"),
        &[Chatwoot],
    );
    let config = config_toml(&w, dir.path(), "", "");
    let text = std::fs::read_to_string(&config).expect("config");
    std::fs::write(
        &config,
        text.replacen(
            "[providers.privy]\n",
            "[providers.privy]\ncreate = true\n",
            1,
        ),
    )
    .expect("config written");

    // The plan holds Ada's create in Privy.
    let plan = dir.path().join("plan.json").display().to_string();
    let (code, _) = run("diff", &config, &["--plan-out", &plan]).await;
    assert_eq!(code, Some(0));
    let file: Value = serde_json::from_str(&std::fs::read_to_string(&plan).expect("plan written"))
        .expect("plan json");
    let planned = file["creates"]
        .as_array()
        .expect("creates in the plan file");
    assert_eq!(planned.len(), 1, "{file}");
    assert_eq!(w.writes(), 0, "a diff sends nothing");

    // Before the plan is applied, someone adds a contact with Ada's email to Privy by hand.
    w.seed(
        9,
        &person("A. Lovelace", "+14155550199", "ada@example.com"),
        &[Privy],
    );
    w.clear_requests();
    let (_, report) = run("sync", &config, &["--plan", &plan]).await;
    assert_eq!(posts(&w, Privy), 0, "the create was not sent: {report}");
    assert_eq!(privy_with_email(&w, "ada@example.com"), 1, "no duplicate");
    let rows = creates(&report);
    assert_eq!(rows.len(), 1, "{report}");
    assert_eq!(rows[0]["provider"], "privy");
    assert_eq!(rows[0]["status"], "skipped", "{report}");
    assert!(
        rows[0]["rule"].is_string(),
        "a skip names its rule: {report}"
    );
    assert_eq!(report["summary"]["planned_creates"], 0, "{report}");

    // A second person, planned and applied with nothing changed in between: created once.
    w.seed(
        2,
        &person("Grace Hopper", "+14155550102", "grace@example.com"),
        &[Chatwoot],
    );
    let plan2 = dir.path().join("plan2.json").display().to_string();
    let (code, diff) = run("diff", &config, &["--plan-out", &plan2]).await;
    assert_eq!(code, Some(0), "{diff}");
    let planned: Vec<Value> = creates(&diff)
        .into_iter()
        .filter(|c| c["status"] == "planned")
        .collect();
    assert_eq!(planned.len(), 1, "only Grace is planned: {diff}");
    w.clear_requests();
    let (code, report) = run("sync", &config, &["--plan", &plan2]).await;
    assert_eq!(code, Some(0), "{report}");
    assert_eq!(posts(&w, Privy), 1, "the create was sent once: {report}");
    assert_eq!(privy_with_email(&w, "grace@example.com"), 1);
    let done: Vec<Value> = creates(&report)
        .into_iter()
        .filter(|c| c["status"] == "created")
        .collect();
    assert_eq!(done.len(), 1, "{report}");
    assert!(done[0]["record"]
        .as_str()
        .is_some_and(|r| r.starts_with("privy:")));

    // Applying the same plan again sends nothing: Grace has a record in Privy now.
    w.clear_requests();
    let (_, again) = run("sync", &config, &["--plan", &plan2]).await;
    assert_eq!(posts(&w, Privy), 0, "{again}");
    assert_eq!(privy_with_email(&w, "grace@example.com"), 1, "still one");
    assert_eq!(privy_with_email(&w, "ada@example.com"), 1, "still one");
}
