//! Planning throughput and memory: match + reconcile for N people × 4 providers, generated
//! deterministically. Each size runs in a fresh child process so its peak RSS is its own: the
//! input records, the memory of a converged state, the plans and the planner's own buffers.
//!
//! Absolute rates do not carry from one machine to another (issue 13), so each child also times
//! a *reference pass* over the same records: one hash-map build and probe over their phone and
//! e-mail keys, the least any hash-join matcher must do. The ratio planning time ÷ reference
//! time, measured in the same process, is the figure to compare between machines: each
//! repetition times one reference pass and one plan back to back, and "÷ reference" is the
//! median of those pairs' ratios.
//!
//! `cargo bench --bench planning` (all sizes) or `cargo bench --bench planning -- 10000 100000`.

use std::collections::HashMap;
use std::process::Command;
use std::time::{Duration, Instant};

use contact_sync::model::{Contact, Field, Name, Normalizer, ProviderKind, RecordId, Value};
use contact_sync::reconcile::{plan, Baseline, Memory, Policy, RuleBook};

/// The providers' real rule tables (Callbell's account knows "vip" and "lead").
fn rules() -> RuleBook {
    use contact_sync::provider::{callbell, chatwoot, privy, protocol};
    let known: std::collections::BTreeSet<String> = ["vip", "lead"].map(String::from).into();
    RuleBook::new([
        protocol::field_rules(protocol::UpdateMode::Patch),
        callbell::field_rules(known, std::collections::BTreeSet::new()),
        chatwoot::field_rules(),
        privy::field_rules(),
    ])
}

/// N people in each of the four providers; one in ten disagree on the name. The records come
/// as a sync holds them: each provider's listing in turn (all of Protocol's, then Callbell's,
/// and so on), so a person's four records are far apart. With `PLANNING_LAYOUT=person` they
/// come person by person instead (a person's four records side by side), the layout of the
/// figures measured before issue 13's work.
fn generate(n: usize) -> Vec<Contact> {
    let norm = Normalizer::default();
    // Area codes 201-210 (all valid), then the next exchange: a valid, distinct number for
    // every person up to 44 million (area codes past 210 include unassigned ones, which parse
    // as invalid and would link nobody).
    let phone_of = |i: usize| {
        let block = i / 10_000;
        let phone = format!(
            "+1{}{:03}{:04}",
            201 + block % 10,
            555 + block / 10,
            i % 10_000
        );
        norm.phone(&phone).0
    };
    // Person `i`'s record in the `k`-th provider; its phone as the normaliser reads it (parsed
    // once per person: parsing is slow, and not planning).
    let record = |k: usize, i: usize, phone: Option<Value>| {
        let p = ProviderKind::ALL[k];
        let mut c = Contact::new(p, format!("{}{i}", &p.as_str()[..2]));
        let name = if i.is_multiple_of(10) && k == 3 {
            format!("Person Renamed {i}")
        } else {
            format!("Person {i}")
        };
        c.name = Some(Name::from_display(&name));
        c.phone = phone;
        if matches!(p, ProviderKind::Chatwoot | ProviderKind::Privy) {
            c.email = norm.email(&format!("person{i}@example.com")).0;
        }
        if matches!(p, ProviderKind::Callbell | ProviderKind::Privy) && i.is_multiple_of(4) {
            c.tags.insert("vip");
        }
        if p != ProviderKind::Protocol && i.is_multiple_of(3) {
            c.custom_fields.insert("tier", "gold");
        }
        c
    };
    let mut out: Vec<Contact> = Vec::with_capacity(n * 4);
    if person_major() {
        for i in 0..n {
            let phone = phone_of(i);
            for k in 0..4 {
                out.push(record(k, i, phone.clone()));
            }
        }
    } else {
        for k in 0..4 {
            for i in 0..n {
                let phone = if k == 0 {
                    phone_of(i)
                } else {
                    out[i].phone.clone()
                };
                out.push(record(k, i, phone));
            }
        }
    }
    out
}

/// Whether the records come person by person (`PLANNING_LAYOUT=person`).
fn person_major() -> bool {
    std::env::var("PLANNING_LAYOUT").is_ok_and(|v| v == "person")
}

/// Where [`generate`] put a record: person `i`'s record in the `k`-th provider is `k·n + i`
/// (`4i + k` person by person).
fn place(id: &RecordId, n: usize) -> usize {
    let i: usize = id.native[2..].parse().unwrap_or(0);
    let k = id.provider as usize;
    if person_major() {
        4 * i + k
    } else {
        k * n + i
    }
}

fn rss_kib(key: &str) -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with(key))
                .and_then(|l| l.split_whitespace().nth(1)?.parse().ok())
        })
        .unwrap_or(0)
}

/// The reference pass: builds one hash map from every record's phone and e-mail key to its
/// index, then probes it with every record's keys (the same hasher as the planner's tables).
/// Returns a checksum so the work cannot be optimised away.
fn reference(records: &[Contact]) -> usize {
    let mut map: hashbrown::HashMap<&str, u32, foldhash::fast::RandomState> =
        hashbrown::HashMap::with_capacity_and_hasher(
            records.len() * 2,
            foldhash::fast::RandomState::default(),
        );
    for (i, r) in records.iter().enumerate() {
        for v in [&r.phone, &r.email].into_iter().flatten() {
            map.entry(v.key()).or_insert(i as u32);
        }
    }
    let mut sum = 0usize;
    for r in records {
        for v in [&r.phone, &r.email].into_iter().flatten() {
            if let Some(j) = map.get(v.key()) {
                sum = sum.wrapping_add(*j as usize);
            }
        }
    }
    sum
}

/// `reps` pairs of one reference pass over `records` and one run of `work`, timed back to back
/// so both see the machine in the same state (it is shared, and its load changes from second
/// to second). Returns the median work time, the median reference time, the median of the
/// pairs' ratios, and the last work's result.
fn paired<T>(
    reps: usize,
    records: &[Contact],
    mut work: impl FnMut() -> T,
) -> (Duration, Duration, f64, T) {
    let (mut works, mut refs, mut ratios) = (Vec::new(), Vec::new(), Vec::new());
    let mut check = 0;
    let mut last = None;
    for _ in 0..reps {
        let t = Instant::now();
        check ^= std::hint::black_box(reference(std::hint::black_box(records)));
        let r = t.elapsed();
        // One plan alive at a time, as in a sync.
        drop(last.take());
        let t = Instant::now();
        last = Some(std::hint::black_box(work()));
        let w = t.elapsed();
        ratios.push(w.as_secs_f64() / r.as_secs_f64());
        works.push(w);
        refs.push(r);
    }
    std::hint::black_box(check);
    ratios.sort_by(f64::total_cmp);
    let ratio = ratios[ratios.len() / 2];
    let last = last.expect("at least one repetition");
    (median(works), median(refs), ratio, last)
}

fn median(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v[v.len() / 2]
}

/// Runs one size and prints one machine-readable line.
fn child(n: usize) {
    let base = rss_kib("VmRSS:");
    let mut records = generate(n);
    let input_kib = rss_kib("VmRSS:").saturating_sub(base);
    let policy = Policy::default();
    let rules = rules();
    let reps = if n <= 10_000 {
        7
    } else if n <= 100_000 {
        5
    } else {
        3
    };
    let (first_time, ref_first, ratio_first, first) = paired(reps, &records, || {
        plan(&records, &Memory::default(), &policy, &rules)
    });
    let writes_first = first.updates.len();
    // The converged state a successful sync leaves: the records hold what was written (updated
    // in place: one copy of the input, as a sync holds), and the memory has the links, agreed
    // values and baselines.
    let index: HashMap<&RecordId, usize> = records
        .iter()
        .enumerate()
        .map(|(i, r)| (&r.id, i))
        .collect();
    let targets: Vec<usize> = first
        .updates
        .iter()
        .map(|u| index[&u.patch.record])
        .collect();
    drop(index);
    for (i, u) in targets.into_iter().zip(&first.updates) {
        for c in &u.patch.changes {
            records[i].set(c.field, c.new.clone());
        }
    }
    //
    // The state store loads records in the order of the listing they were first saved from
    // (`records.seq`), so links and baselines are filled in the records' order here too.
    let mut memory = Memory::default();
    for p in first.people {
        for r in p.records {
            memory.links.insert(r, p.person.clone());
        }
        memory.agreed.insert(p.person, p.agreed);
    }
    memory
        .links
        .sort_unstable_by(|a, _, b, _| place(a, n).cmp(&place(b, n)));
    for r in &records {
        memory.baselines.insert(
            r.id.clone(),
            Field::ALL
                .iter()
                .map(|f| (*f, r.get(*f)))
                .collect::<Baseline>(),
        );
    }
    let synced = records;
    let (steady_time, ref_steady, ratio_steady, steady) =
        paired(reps, &synced, || plan(&synced, &memory, &policy, &rules));
    let steady_writes = steady.updates.len();
    drop(steady);
    let peak = rss_kib("VmHWM:");
    // The same converged state in another order (a listing whose order changed since the
    // state was saved, or a state saved before it kept the order): every record is found by a
    // hash lookup instead. Timed after the peak RSS is read, so it is not in that figure.
    memory.links.reverse();
    memory.baselines.reverse();
    let (shuffled_time, _, ratio_shuffled, shuffled) =
        paired(reps, &synced, || plan(&synced, &memory, &policy, &rules));
    assert_eq!(
        shuffled.updates.len(),
        steady_writes,
        "the order changes no write"
    );
    println!(
        "RESULT {n} {} {} {} {writes_first} {steady_writes} {input_kib} {peak} {reps} {} {} {} {ratio_first} {ratio_steady} {ratio_shuffled}",
        n * 4,
        first_time.as_secs_f64(),
        steady_time.as_secs_f64(),
        ref_first.as_secs_f64(),
        ref_steady.as_secs_f64(),
        shuffled_time.as_secs_f64(),
    );
}

fn main() {
    let args: Vec<String> = std::env::args()
        .skip(1)
        .filter(|a| !a.starts_with("--"))
        .collect();
    if let Some(n) = std::env::var("CONTACT_SYNC_BENCH_CHILD")
        .ok()
        .and_then(|s| s.parse().ok())
    {
        child(n);
        return;
    }
    let sizes: Vec<usize> = if args.is_empty() {
        vec![10_000, 100_000, 1_000_000]
    } else {
        args.iter().filter_map(|a| a.parse().ok()).collect()
    };
    println!(
        "Planning (match + reconcile), one core, {} people sizes; median of repetitions; records {}",
        sizes.len(),
        if person_major() {
            "person by person (PLANNING_LAYOUT=person)"
        } else {
            "provider by provider, as a sync holds them"
        }
    );
    println!("| people | records | first run: time | records/s | ÷ reference | steady state: time | records/s | ÷ reference | steady, state in another order | ÷ reference | reference pass | writes (first / steady) | peak RSS | bytes/record | of which input | reps |");
    println!("|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|");
    let exe = std::env::current_exe().expect("own path");
    for n in sizes {
        let out = Command::new(&exe)
            .env("CONTACT_SYNC_BENCH_CHILD", n.to_string())
            .output()
            .expect("child runs");
        let text = String::from_utf8_lossy(&out.stdout);
        let Some(line) = text.lines().find(|l| l.starts_with("RESULT")) else {
            println!(
                "| {n} | child failed: {} |",
                String::from_utf8_lossy(&out.stderr)
                    .lines()
                    .last()
                    .unwrap_or("")
            );
            continue;
        };
        let f: Vec<&str> = line.split_whitespace().collect();
        let records: f64 = f[2].parse().unwrap_or(0.0);
        let t1: f64 = f[3].parse().unwrap_or(0.0);
        let t2: f64 = f[4].parse().unwrap_or(0.0);
        let input_kib: f64 = f[7].parse().unwrap_or(0.0);
        let peak_kib: f64 = f[8].parse().unwrap_or(0.0);
        let r1: f64 = f[10].parse().unwrap_or(f64::NAN);
        let r2: f64 = f[11].parse().unwrap_or(f64::NAN);
        let t3: f64 = f[12].parse().unwrap_or(f64::NAN);
        let q1: f64 = f[13].parse().unwrap_or(f64::NAN);
        let q2: f64 = f[14].parse().unwrap_or(f64::NAN);
        let q3: f64 = f[15].parse().unwrap_or(f64::NAN);
        println!(
            "| {n} | {} | {:.3} s | {:.0} | {:.1}× | {:.3} s | {:.0} | {:.1}× | {:.3} s | {:.1}× | {:.4} s / {:.4} s | {} / {} | {:.0} MiB | {:.0} | {:.0} | {} |",
            f[2],
            t1,
            records / t1,
            q1,
            t2,
            records / t2,
            q2,
            t3,
            q3,
            r1,
            r2,
            f[5],
            f[6],
            peak_kib / 1024.0,
            peak_kib * 1024.0 / records,
            input_kib * 1024.0 / records,
            f[9]
        );
    }
}
