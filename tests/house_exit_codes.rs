//! One test per exit code (SPEC section 4): 2 is usage or configuration only; runtime failures
//! (a locked or unreadable state, a listener that cannot bind) exit 1 with a message that says
//! what to do; `--help` carries the table.

mod common;

use std::process::Output;

use common::*;
use contact_sync::state::StateStore;

async fn bin(args: Vec<String>) -> Output {
    tokio::task::spawn_blocking(move || {
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        run_bin(&args)
    })
    .await
    .expect("join")
}

fn args(list: &[&str]) -> Vec<String> {
    list.iter().map(|s| (*s).to_owned()).collect()
}

async fn world() -> (World, tempfile::TempDir) {
    let w = World::start().await;
    w.seed(
        1,
        &person("Ada Lovelace", "+14155550101", "ada@example.com"),
        &[Protocol, Callbell, Chatwoot, Privy],
    );
    (w, tempfile::tempdir().expect("tempdir"))
}

#[tokio::test(flavor = "multi_thread")]
async fn exit_0_when_the_sync_applies_everything() {
    let (w, dir) = world().await;
    let config = config_toml(&w, dir.path(), "", "");
    let o = bin(args(&["sync", "--config", &config])).await;
    assert_eq!(o.status.code(), Some(0), "{}", output_text(&o));
    let store = StateStore::open_read_only(&w.state_path())
        .expect("state")
        .expect("exists");
    assert_eq!(
        store.recent_runs(1).expect("runs")[0].outcome.as_deref(),
        Some("ok")
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn exit_1_when_the_state_is_locked_naming_the_process_that_holds_it() {
    let (w, dir) = world().await;
    let config = config_toml(&w, dir.path(), "", "");
    let _held = StateStore::open(&w.state_path()).expect("the test holds the state");
    w.clear_requests();
    let o = bin(args(&["sync", "--config", &config])).await;
    let out = output_text(&o);
    assert_eq!(o.status.code(), Some(1), "{out}");
    let pid = std::process::id();
    assert!(
        out.contains(&format!("in use by contact-sync process {pid}")),
        "names the holder: {out}"
    );
    assert!(
        out.contains("hint: only one sync runs per state file"),
        "{out}"
    );
    for sim in &w.fleet.sims {
        assert!(
            sim.requests().iter().all(|r| r.method == "GET"),
            "{}: nothing was written while locked",
            sim.kind
        );
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn exit_1_when_the_state_file_is_not_a_database() {
    let (w, dir) = world().await;
    let config = config_toml(&w, dir.path(), "", "");
    std::fs::write(w.state_path(), vec![b'x'; 4096]).expect("garbage state");
    let o = bin(args(&["sync", "--config", &config])).await;
    let out = output_text(&o);
    assert_eq!(o.status.code(), Some(1), "{out}");
    assert!(
        out.contains(&w.state_path().display().to_string()),
        "names the file: {out}"
    );
    assert!(out.contains("hint: the state file cannot be read"), "{out}");
}

#[tokio::test(flavor = "multi_thread")]
async fn exit_1_when_the_daemon_cannot_bind_its_listener() {
    let (w, dir) = world().await;
    let taken = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let addr = taken.local_addr().expect("addr");
    let config = config_toml(
        &w,
        dir.path(),
        &format!("[daemon]\nlisten = \"{addr}\""),
        "",
    );
    let o = bin(args(&["daemon", "--config", &config])).await;
    let out = output_text(&o);
    assert_eq!(o.status.code(), Some(1), "{out}");
    assert!(
        out.contains(&format!("cannot listen on {addr}")),
        "names the address: {out}"
    );
    assert!(out.contains("daemon.listen"), "says what to change: {out}");
}

#[tokio::test(flavor = "multi_thread")]
async fn exit_2_for_usage_and_configuration_only() {
    let (w, dir) = world().await;
    let o = bin(args(&["sync", "--no-such-flag"])).await;
    assert_eq!(o.status.code(), Some(2), "{}", output_text(&o));

    let config = config_toml(&w, dir.path(), "[schedule]\ncron = \"nope\"", "");
    let o = bin(args(&["sync", "--config", &config])).await;
    let out = output_text(&o);
    assert_eq!(o.status.code(), Some(2), "{out}");
    assert!(out.contains(&format!("{config}:")), "names the file: {out}");
    assert!(out.contains("schedule.cron"), "names the key: {out}");
    assert_eq!(w.writes(), 0, "a bad config sends nothing");

    // One check-config lists every problem: an unknown key, a wrong type and a bad value.
    let path = dir.path().join("many.toml");
    std::fs::write(
        &path,
        "[state]\npth = \"x.db\"\n[daemon]\nshutdown_grace = 5\n[schedule]\ncron = \"nope\"\n",
    )
    .expect("write");
    let path = path.display().to_string();
    let o = bin(args(&["check-config", "--config", &path])).await;
    let out = output_text(&o);
    assert_eq!(o.status.code(), Some(2), "{out}");
    for (key, line) in [
        ("state.pth", 2),
        ("daemon.shutdown_grace", 4),
        ("schedule.cron", 6),
    ] {
        assert!(
            out.contains(&format!("{path}:{line}: `{key}`")),
            "`{key}` on line {line}: {out}"
        );
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn exit_3_when_diff_exit_code_finds_pending_changes() {
    let (w, dir) = world().await;
    w.edit(
        Chatwoot,
        1,
        &person("Ada King", "+14155550101", "ada@example.com"),
    );
    let config = config_toml(&w, dir.path(), "", "");
    let o = bin(args(&["diff", "--config", &config, "--exit-code"])).await;
    assert_eq!(o.status.code(), Some(3), "{}", output_text(&o));
    assert_eq!(w.writes(), 0, "diff sends nothing");
}

#[test]
fn help_ends_with_the_exit_code_table() {
    let o = run_bin(&["--help"]);
    let out = output_text(&o);
    assert_eq!(o.status.code(), Some(0), "{out}");
    for line in [
        "Exit codes:",
        "  0  done",
        "  1  some records or providers failed",
        "  2  usage or configuration error",
        "  3  `diff --exit-code` only",
    ] {
        assert!(out.contains(line), "`{line}` in --help: {out}");
    }
}
