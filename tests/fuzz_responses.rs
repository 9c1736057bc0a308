//! Fuzzing each adapter's response parsing through the real HTTP path: the simulator answers
//! with random bytes, or with a valid response cut or altered at a random point. Whatever comes
//! back, the adapter answers with contacts or an error: never a panic, never a hang. Bounded
//! (a fixed number of cases per provider), so it runs in CI in seconds.

use std::sync::OnceLock;
use std::time::Duration;

use axum::body::Bytes;
use contact_sync::model::{Normalizer, ProviderKind};
use contact_sync::provider::AnyProvider;
use contact_sync::sim::{provider_config, Fault, FaultRule, SeedPerson, Sim, SimOptions};
use proptest::prelude::*;

struct Target {
    sim: Sim,
    adapter: AnyProvider,
    valid: Vec<u8>,
}

fn runtime() -> &'static tokio::runtime::Runtime {
    static RT: OnceLock<tokio::runtime::Runtime> = OnceLock::new();
    RT.get_or_init(|| {
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .expect("runtime")
    })
}

fn target(kind: ProviderKind) -> &'static Target {
    static TARGETS: OnceLock<Vec<Target>> = OnceLock::new();
    let all = TARGETS.get_or_init(|| {
        runtime().block_on(async {
            let mut out = Vec::new();
            for kind in ProviderKind::ALL {
                let sim = Sim::start(kind, SimOptions::for_provider(kind).unlimited())
                    .await
                    .expect("sim");
                sim.seed_people(&[
                    SeedPerson {
                        name: Some("Ada Lovelace".into()),
                        email: Some("ada@example.com".into()),
                        phone: Some("+14155550101".into()),
                        tags: vec!["vip".into()],
                        ..SeedPerson::default()
                    },
                    SeedPerson {
                        name: Some("Grace Hopper".into()),
                        email: Some("grace@example.com".into()),
                        phone: Some("+14155550102".into()),
                        ..SeedPerson::default()
                    },
                ]);
                let mut cfg = provider_config(&sim);
                cfg.http.max_retries = 0;
                cfg.http.timeout = Duration::from_secs(2);
                cfg.http.max_body_bytes = 64 * 1024;
                let adapter = AnyProvider::build(&cfg, Normalizer::default()).expect("adapter");
                let url = format!(
                    "{}{}",
                    sim.base_url().as_str().trim_end_matches('/'),
                    list_path(kind, &sim)
                );
                let valid = reqwest::Client::new()
                    .get(url)
                    .header("authorization", format!("Bearer {}", sim.token()))
                    .header("api_access_token", sim.token())
                    .send()
                    .await
                    .expect("get")
                    .bytes()
                    .await
                    .expect("body")
                    .to_vec();
                out.push(Target {
                    sim,
                    adapter,
                    valid,
                });
            }
            out
        })
    });
    all.iter().find(|t| t.sim.kind == kind).expect("target")
}

fn list_path(kind: ProviderKind, sim: &Sim) -> String {
    match kind {
        ProviderKind::Protocol => "/v1/contacts?limit=100".into(),
        ProviderKind::Callbell => "/contacts?page=1".into(),
        ProviderKind::Chatwoot => format!(
            "/api/v1/accounts/{}/contacts?page=1&sort=name",
            sim.shared().options().chatwoot.account_id
        ),
        ProviderKind::Privy => "/v1/contacts?page=1&per_page=100".into(),
    }
}

fn mutated(valid: Vec<u8>) -> impl Strategy<Value = Vec<u8>> {
    let n = valid.len().max(1);
    prop_oneof![
        prop::collection::vec(any::<u8>(), 0..512),
        (0..n).prop_map({
            let v = valid.clone();
            move |cut| v[..cut].to_vec()
        }),
        (
            0..n,
            prop::sample::select(vec![
                "null",
                "1e999",
                "\"\"",
                "[]",
                "{}",
                "-1",
                "true",
                "\"\\u0000\"",
                "\"😀\"",
                "[[[[[[]]]]]]"
            ])
        )
            .prop_map({
                let v = valid.clone();
                move |(at, junk)| {
                    // Replace the value after the `at`-th colon with junk.
                    let text = String::from_utf8_lossy(&v).to_string();
                    let colon = text
                        .match_indices(':')
                        .map(|(i, _)| i)
                        .nth(at % text.matches(':').count().max(1))
                        .unwrap_or(0);
                    let rest = &text[colon + 1..];
                    let end = rest.find([',', '}', ']']).map_or(rest.len(), |e| e);
                    format!(
                        "{}{}{}",
                        &text[..=colon.min(text.len().saturating_sub(1))],
                        junk,
                        &rest[end..]
                    )
                    .into_bytes()
                }
            }),
    ]
}

/// The tests share one simulator per provider and inject one answer at a time into it: one test
/// case at a time per simulator, or one case's answer is served to another.
fn serial(kind: ProviderKind) -> std::sync::MutexGuard<'static, ()> {
    static LOCKS: [std::sync::Mutex<()>; 4] = [const { std::sync::Mutex::new(()) }; 4];
    LOCKS[kind as usize]
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

fn fuzz_one(kind: ProviderKind, body: Vec<u8>, status: u16) -> Result<(), TestCaseError> {
    let _serial = serial(kind);
    let t = target(kind);
    t.sim.clear_faults();
    t.sim
        .inject(FaultRule::always(Fault::Body(status, Bytes::from(body))).times(1));
    let outcome = runtime().block_on(async {
        tokio::time::timeout(Duration::from_secs(10), t.adapter.list_page(None)).await
    });
    let Ok(result) = outcome else {
        return Err(TestCaseError::fail("the adapter hung"));
    };
    prop_assert!(t.valid.len() > 20, "the seed response is a real listing");
    let seen = t.sim.requests().last().map(|r| r.status);
    prop_assert_eq!(seen, Some(status), "the fuzzed answer was served");
    if std::env::var_os("FUZZ_VERBOSE").is_some() {
        eprintln!(
            "{kind} {status}: {}",
            match &result {
                Ok(p) => format!("ok, {} contacts", p.contacts.len()),
                Err(e) => format!("error: {e}"),
            }
        );
    }
    if let Ok(page) = result {
        for c in page.contacts {
            prop_assert!(
                !c.id.native.is_empty(),
                "a contact without an id was accepted"
            );
        }
    }
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 64, failure_persistence: None, ..ProptestConfig::default() })]

    #[test]
    fn protocol_listing_parser(body in mutated(target(ProviderKind::Protocol).valid.clone()), status in prop::sample::select(vec![200u16, 400, 401, 404, 422, 500])) {
        fuzz_one(ProviderKind::Protocol, body, status)?;
    }

    #[test]
    fn callbell_listing_parser(body in mutated(target(ProviderKind::Callbell).valid.clone()), status in prop::sample::select(vec![200u16, 400, 401, 404, 422, 500])) {
        fuzz_one(ProviderKind::Callbell, body, status)?;
    }

    #[test]
    fn chatwoot_listing_parser(body in mutated(target(ProviderKind::Chatwoot).valid.clone()), status in prop::sample::select(vec![200u16, 400, 401, 404, 422, 500])) {
        fuzz_one(ProviderKind::Chatwoot, body, status)?;
    }

    #[test]
    fn privy_listing_parser(body in mutated(target(ProviderKind::Privy).valid.clone()), status in prop::sample::select(vec![200u16, 400, 401, 404, 422, 500])) {
        fuzz_one(ProviderKind::Privy, body, status)?;
    }
}

/// A listing whose first contact has an empty id (found by the fuzzing above: Callbell's `uuid`
/// and Protocol's `id` as `""`) is refused as a whole, with an error that says why, rather than
/// read as a contact nobody can address.
#[test]
fn a_contact_with_an_empty_id_is_refused() {
    for (kind, field) in [
        (ProviderKind::Callbell, "\"uuid\":\""),
        (ProviderKind::Protocol, "\"id\":\""),
    ] {
        let _serial = serial(kind);
        let t = target(kind);
        let text = String::from_utf8_lossy(&t.valid).to_string();
        let at = text.find(field).expect("the listing has ids") + field.len();
        let end = at + text[at..].find('"').expect("the id ends");
        let body = format!("{}{}", &text[..at], &text[end..]);
        t.sim.clear_faults();
        t.sim
            .inject(FaultRule::always(Fault::Body(200, Bytes::from(body))).times(1));
        let result = runtime().block_on(t.adapter.list_page(None));
        let err = result.err().map(|e| e.to_string()).unwrap_or_default();
        assert!(
            err.contains("empty id"),
            "{kind}: a page with an empty id was not refused ({err:?})"
        );
    }
}
