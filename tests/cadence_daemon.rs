//! Issue 13 in the daemon: scans spread over the day to fit Privy's daily quota, the other
//! providers every tick, and the cadence in `/healthz`, `/metrics` and `status`.

mod common;

use std::net::TcpListener;
use std::time::Duration;

use common::*;
use contact_sync::config::ProviderSpecific;
use contact_sync::daemon::{self, Control, DaemonOptions};
use contact_sync::sim::SimQuota;

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .expect("bind")
        .local_addr()
        .expect("addr")
        .port()
}

async fn get(url: &str) -> String {
    reqwest::get(url)
        .await
        .expect("answers")
        .text()
        .await
        .expect("body")
}

/// The value of the sample of `name` labelled `provider="{provider}"`.
fn gauge(text: &str, name: &str, provider: &str) -> Option<f64> {
    let label = format!("provider=\"{provider}\"");
    text.lines()
        .find(|l| l.starts_with(&format!("{name}{{")) && l.contains(&label))
        .and_then(|l| l.rsplit(' ').next()?.parse().ok())
}

fn gets(w: &World, kind: contact_sync::model::ProviderKind) -> usize {
    w.fleet
        .sim(kind)
        .requests()
        .iter()
        .filter(|r| r.method == "GET")
        .count()
}

/// Privy: 30 contacts at 10 a page (3 requests a scan) and 40 requests a day. Over four
/// one-second ticks the daemon lists Privy once (its next scan is hours away: 40 a day pays for
/// 13 scans, one every 1h 51m) and the others at every tick; the cadence is exported.
#[tokio::test(flavor = "multi_thread")]
async fn the_daemon_spreads_privys_scans_and_exports_the_cadence() {
    let w = World::start().await;
    w.fleet.sim(Privy).set_quotas(vec![SimQuota {
        name: "Day",
        limit: 40,
        period: Duration::from_secs(86_400),
    }]);
    for i in 1..=30u64 {
        w.seed(
            i,
            &person(
                &format!("Person {i} Example"),
                &format!("+1415555{:04}", 100 + i),
                &format!("person{i}@example.com"),
            ),
            &[Protocol, Callbell, Chatwoot, Privy],
        );
    }
    let port = free_port();
    let mut config = w.config.clone();
    config.schedule =
        contact_sync::config::Schedule::new("* * * * * *", chrono_tz::UTC).expect("a schedule");
    config.daemon.listen = Some(format!("127.0.0.1:{port}").parse().expect("addr"));
    for p in &mut config.providers {
        if let ProviderSpecific::Privy {
            daily_limit,
            page_size,
            ..
        } = &mut p.specific
        {
            *daily_limit = Some(40);
            *page_size = 10;
        }
    }
    let (tx, rx) = tokio::sync::mpsc::channel(16);
    let stopper = tx.clone();
    let handle = tokio::spawn(daemon::run(
        config.clone(),
        DaemonOptions {
            config_path: None,
            run_now: true,
        },
        tx,
        rx,
    ));
    tokio::time::sleep(Duration::from_millis(4_500)).await;
    let metrics = get(&format!("http://127.0.0.1:{port}/metrics")).await;
    let health = get(&format!("http://127.0.0.1:{port}/healthz")).await;
    stopper.send(Control::Shutdown).await.expect("send");
    handle.await.expect("join").expect("daemon ok");

    // Three pages of one listing, and the one health check the daemon makes at start.
    assert_eq!(gets(&w, Privy), 4, "Privy listed once (three pages)");
    let protocol_scans = gets(&w, Protocol);
    assert!(
        protocol_scans >= 3,
        "Protocol listed at every tick ({protocol_scans} listings)"
    );
    assert!(
        w.fleet
            .sim(Privy)
            .requests()
            .iter()
            .all(|r| r.status != 429),
        "Privy's quota never refused a request"
    );

    let now = chrono::Utc::now().timestamp() as f64;
    let requests = gauge(&metrics, "contact_sync_provider_requests_today", "privy");
    // The listing's three pages and the start-up health check: what Privy counted too.
    assert_eq!(requests, Some(4.0), "{metrics}");
    assert_eq!(
        gauge(&metrics, "contact_sync_provider_deferred", "privy"),
        Some(1.0),
        "{metrics}"
    );
    assert_eq!(
        gauge(&metrics, "contact_sync_provider_deferred", "protocol"),
        Some(0.0),
        "{metrics}"
    );
    let next = gauge(
        &metrics,
        "contact_sync_provider_next_scan_timestamp_seconds",
        "privy",
    )
    .expect("next scan exported");
    assert!(
        next > now + 3_600.0,
        "Privy's next scan is hours away: {next} vs {now}"
    );
    let freshness = gauge(&metrics, "contact_sync_provider_freshness_seconds", "privy");
    assert!(
        freshness.is_some_and(|f| (f - 86_400.0 / 13.0).abs() < 0.01),
        "40 a day at 3 a scan: 13 scans a day ({freshness:?})"
    );
    assert_eq!(
        gauge(&metrics, "contact_sync_provider_contacts", "privy"),
        Some(30.0)
    );
    assert!(
        gauge(
            &metrics,
            "contact_sync_provider_requests_projected_today",
            "privy"
        )
        .is_some_and(|p| p <= 40.0),
        "{metrics}"
    );
    assert!(
        gauge(
            &metrics,
            "contact_sync_provider_last_scan_timestamp_seconds",
            "privy"
        )
        .is_some_and(|t| t <= now && t > now - 60.0),
        "{metrics}"
    );
    let health: serde_json::Value = serde_json::from_str(&health).expect("health JSON");
    let privy = health["health"]["providers"]
        .as_array()
        .expect("providers in /healthz")
        .iter()
        .find(|p| p["provider"] == "privy")
        .expect("privy")
        .clone();
    assert_eq!(privy["deferred"], "spread", "{privy}");
    assert_eq!(
        health["status"], "ok",
        "spreading scans is not a degradation: {health}"
    );

    // `status` prints the same, with the freshness line.
    let dir = tempfile::tempdir().expect("tempdir");
    let path = config_toml(&w, dir.path(), "[schedule]\ncron = \"0 */15 * * * *\"", "");
    let text = std::fs::read_to_string(&path).expect("config").replace(
        "[providers.privy]\n",
        "[providers.privy]\ndaily_limit = 40\npage_size = 10\n",
    );
    std::fs::write(&path, text).expect("config");
    let out = tokio::task::spawn_blocking(move || run_bin(&["status", "--config", &path]))
        .await
        .expect("join");
    let text = output_text(&out);
    println!("{text}");
    assert_eq!(out.status.code(), Some(0), "{text}");
    assert!(
        text.contains("freshness: the quota allows a scan every 1h 51m (13 a day)"),
        "{text}"
    );
    assert!(
        text.contains("freshness: the quota allows a scan every 15m (96 a day)"),
        "providers without a daily quota: every tick of the schedule: {text}"
    );
    assert!(
        text.contains("4 / 40"),
        "requests today of the budget: {text}"
    );
}
