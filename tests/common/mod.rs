//! Shared test setup: the four simulators on loopback, seeded with people, and a config that
//! points contact-sync at them.
#![allow(dead_code)]

use std::path::PathBuf;

use contact_sync::config::Config;
use contact_sync::model::ProviderKind;
use contact_sync::report::RunReport;
use contact_sync::sim::{Fleet, SeedPerson, SimOptions};
use contact_sync::sync::{Engine, Quiet, RunOptions};
use serde_json::Value;
use tokio_util::sync::CancellationToken;

// Re-exported for the test files; not every one uses all four.
#[allow(unused_imports)]
pub use ProviderKind::{Callbell, Chatwoot, Privy, Protocol};

/// A running fleet with a temporary state directory.
pub struct World {
    pub fleet: Fleet,
    pub dir: tempfile::TempDir,
    pub config: Config,
}

/// A person seeded into some providers.
pub fn person(name: &str, phone: &str, email: &str) -> SeedPerson {
    SeedPerson {
        name: Some(name.into()),
        phone: Some(phone.into()),
        email: Some(email.into()),
        username: Some(name.split(' ').next().unwrap_or("user").to_lowercase()),
        ..SeedPerson::default()
    }
}

impl World {
    /// Starts the fleet with `opts` per provider.
    pub async fn start_with(opts: impl Fn(ProviderKind) -> SimOptions) -> World {
        let fleet = Fleet::start(opts).await.expect("simulators start");
        let dir = tempfile::tempdir().expect("tempdir");
        let config = fleet.config(&dir.path().join("state.db"));
        World { fleet, dir, config }
    }

    /// Starts the fleet without quotas.
    pub async fn start() -> World {
        Self::start_with(|k| SimOptions::for_provider(k).unlimited()).await
    }

    /// Seeds person `seq` (1-based) into `kinds`, as each provider stores it.
    pub fn seed(&self, seq: u64, p: &SeedPerson, kinds: &[ProviderKind]) -> Vec<String> {
        kinds
            .iter()
            .map(|k| self.fleet.sim(*k).seed_person_at(seq, &p.stored_by(*k)))
            .collect()
    }

    /// Replaces person `seq` in one provider (an edit made by a user there).
    pub fn edit(&self, kind: ProviderKind, seq: u64, p: &SeedPerson) -> String {
        self.fleet.sim(kind).seed_person_at(seq, &p.stored_by(kind))
    }

    pub fn engine(&self) -> Engine {
        Engine::new(self.config.clone()).expect("engine builds")
    }

    pub async fn sync(&self) -> RunReport {
        self.engine()
            .run(RunOptions::default(), &CancellationToken::new(), &Quiet)
            .await
            .expect("sync runs")
    }

    pub async fn diff(&self) -> RunReport {
        self.engine()
            .run(
                RunOptions {
                    diff: true,
                    ..RunOptions::default()
                },
                &CancellationToken::new(),
                &Quiet,
            )
            .await
            .expect("diff runs")
    }

    /// Total write requests (anything but GET) the simulators received.
    pub fn writes(&self) -> usize {
        self.fleet.sims.iter().map(|s| s.writes().len()).sum()
    }

    pub fn clear_requests(&self) {
        self.fleet.sims.iter().for_each(|s| s.clear_requests());
    }

    /// The stored JSON of the contact with `id` in `kind`.
    pub fn contact(&self, kind: ProviderKind, id: &str) -> Value {
        self.fleet
            .sim(kind)
            .contact(id)
            .unwrap_or_else(|| panic!("{kind} contact {id} exists"))
    }

    pub fn state_path(&self) -> PathBuf {
        self.config.state_path.clone()
    }
}

/// A string field of a JSON object.
pub fn s<'a>(v: &'a Value, key: &str) -> Option<&'a str> {
    v.get(key).and_then(Value::as_str)
}

/// The report as parsed JSON.
pub fn json(report: &RunReport) -> Value {
    serde_json::from_str(&report.to_json()).expect("report JSON parses")
}

/// Writes a TOML config file for the world's simulators (secrets in files, as users would),
/// with `extra` appended to every provider section and `top` at the top. Returns its path.
pub fn config_toml(w: &World, dir: &std::path::Path, top: &str, extra: &str) -> String {
    let mut body = format!("[state]\npath = \"{}\"\n{top}\n", w.state_path().display());
    if !top.contains("[daemon]") {
        body.push_str("[daemon]\nlisten = \"\"\n");
    }
    // The simulators run without quotas unless a test sets one: do not wait on real ones.
    let rate = if extra.contains("rate_limit") {
        ""
    } else {
        "rate_limit = { requests = 1000, per = \"1s\" }\n"
    };
    for sim in &w.fleet.sims {
        let token_file = dir.join(format!("{}.token", sim.kind));
        std::fs::write(&token_file, sim.token()).expect("token file");
        body.push_str(&format!(
            "[providers.{}]\nbase_url = \"{}\"\ntoken_file = \"{}\"\n{rate}{extra}\n",
            sim.kind,
            sim.base_url(),
            token_file.display()
        ));
        match sim.kind {
            Chatwoot => {
                let o = sim.shared().options();
                let f = dir.join("inbox");
                std::fs::write(&f, &o.chatwoot.inbox_identifier).expect("inbox file");
                body.push_str(&format!(
                    "account_id = {}\ninbox_id = {}\ninbox_identifier_file = \"{}\"\nknown_labels = {:?}\n",
                    o.chatwoot.account_id,
                    o.chatwoot.inbox_id,
                    f.display(),
                    o.chatwoot.labels
                ));
            }
            Callbell => body.push_str("known_tags = [\"vip\", \"wholesale\", \"lead\"]\nknown_custom_fields = [\"loyalty_tier\", \"city\"]\n"),
            _ => {}
        }
    }
    let path = dir.join("contact-sync.toml");
    std::fs::write(&path, body).expect("config file");
    path.display().to_string()
}

/// Runs the binary with `args` (blocking; call from `spawn_blocking` in async tests).
pub fn run_bin(args: &[&str]) -> std::process::Output {
    std::process::Command::new(env!("CARGO_BIN_EXE_contact-sync"))
        .env_remove("CONTACT_SYNC_CONFIG")
        .args(args)
        .output()
        .expect("binary runs")
}

/// Both output streams as text.
pub fn output_text(o: &std::process::Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}
