//! The command line: subcommands, flags, and the exit-code contract.
//!
//! Exit codes (SPEC section 4):
//!
//! | code | meaning |
//! |---|---|
//! | 0 | everything applied, or nothing to do |
//! | 1 | some records or providers failed (reported), a guard rail or a signal stopped the run, or a runtime failure (state locked or unreadable, listener cannot bind); the message says what to do |
//! | 2 | usage or configuration error (the message names file, key and line) |
//! | 3 | `diff --exit-code` only: changes are pending |

use std::io::IsTerminal;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::Context as _;
use clap::{Args, Parser, Subcommand};
use indicatif::{ProgressBar, ProgressStyle};
use tokio_util::sync::CancellationToken;

use crate::config::Config;
use crate::executor::Outcome;
use crate::identity::{self, review::Review};
use crate::planfile::PlanFile;
use crate::reconcile::Update;
use crate::report::{Format, RunReport};
use crate::state::StateStore;
use crate::sync::{Engine, Progress, RunOptions};
use crate::telemetry::{self, LogFormat};

/// Keeps the contact lists of Protocol, Callbell, Chatwoot and Privy in agreement.
///
/// Every run lists all contacts of every configured provider, links the records that are the
/// same person (by phone, then e-mail, then links from earlier runs), merges each field three
/// ways against what the last sync agreed, and sends each provider the smallest set of
/// rate-limited updates its rules allow.
#[derive(Debug, Parser)]
#[command(name = "contact-sync", version, about, long_about, after_help = EXIT_CODES)]
pub struct Cli {
    /// Config file (TOML). See config/contact-sync.example.toml for every key.
    #[arg(
        long,
        global = true,
        env = "CONTACT_SYNC_CONFIG",
        default_value = "config/contact-sync.toml"
    )]
    pub config: PathBuf,

    /// Log format: `auto` is human on a terminal and JSON lines otherwise. Logs go to stderr.
    #[arg(long, global = true, value_enum, default_value_t = LogFormat::Auto)]
    pub log_format: LogFormat,

    /// More log detail (-v debug, -vv trace). RUST_LOG overrides.
    #[arg(short, long, global = true, action = clap::ArgAction::Count)]
    pub verbose: u8,

    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run as a service: sync on the config's cron schedule until SIGTERM.
    Daemon(DaemonArgs),
    /// Sync once: fetch, plan, apply, report.
    Sync(SyncArgs),
    /// Dry run: fetch and plan, print what a sync would change, send nothing.
    Diff(DiffArgs),
    /// Validate the config file and the secrets it references (exit 0 if usable, 2 if not).
    CheckConfig(CheckConfigArgs),
    /// Run the whole job on built-in provider simulators (no account, token or network).
    Demo(DemoArgs),
    /// Show the last runs from the state store, and the next scheduled run.
    Status(StatusArgs),
    /// List records whose writes keep failing (the dead-letter view).
    Failures,
    /// List what needs a human (ambiguous records, join candidates, conflicts, blocked
    /// changes), each with the command that settles it. Reads the providers like `diff`.
    Review(ReviewArgs),
    /// Make records one person: `link chatwoot:8 privy:9`. Refused if two are of one provider.
    Link {
        /// Records as reports print them: provider:id.
        #[arg(required = true, num_args = 2.., value_name = "RECORD")]
        records: Vec<String>,
    },
    /// Take a record out of its person: it becomes a person of its own, with no baseline, and
    /// is never joined to the person it left by a key again.
    Unlink {
        /// The record, as provider:id.
        record: String,
    },
    /// Leave a record alone: neither matched, merged nor written, until `unignore`.
    Ignore {
        /// The record, as provider:id.
        record: String,
    },
    /// Undo `ignore`: the record takes part again (its values compete by precedence).
    Unignore {
        /// The record, as provider:id.
        record: String,
    },
    /// Set a person's agreed value of one field once; the next sync spreads it.
    Resolve(ResolveArgs),
}

#[derive(Debug, Args)]
pub struct ReviewArgs {
    /// Report format [default: text on a terminal, json otherwise].
    #[arg(long, value_enum)]
    pub format: Option<Format>,
    /// Do not read the providers: show the findings of the last sync.
    #[arg(long)]
    pub offline: bool,
}

#[derive(Debug, Args)]
#[command(group(clap::ArgGroup::new("source").required(true).args(["from", "value"])))]
pub struct ResolveArgs {
    /// The person id, as reports and `review` print it (e.g. p:chatwoot:8).
    pub person: String,
    /// The field: name, email, phone, avatar_url, username, external_id, tags, custom_fields.
    pub field: String,
    /// Take the value this provider's record of the person held at the last sync.
    #[arg(long, value_name = "PROVIDER")]
    pub from: Option<String>,
    /// Take this value (scalar fields; normalised like provider data).
    #[arg(long, value_name = "VALUE")]
    pub value: Option<String>,
}

#[derive(Debug, Args)]
pub struct ReportArgs {
    /// Report format [default: text on a terminal, json otherwise].
    #[arg(long, value_enum)]
    pub format: Option<Format>,
}

#[derive(Debug, Args)]
pub struct SyncArgs {
    /// Plan and report only; send nothing (same as `diff`).
    #[arg(long)]
    pub dry_run: bool,
    /// Write the full report to FILE (format from --format, default text).
    #[arg(long, value_name = "FILE")]
    pub report: Option<PathBuf>,
    #[command(flatten)]
    pub report_args: ReportArgs,
    /// Apply exactly this plan (from `diff --plan-out`); records changed since are skipped as stale.
    #[arg(long, value_name = "FILE")]
    pub plan: Option<PathBuf>,
    /// Apply even when a guard rail (max_change_share, max_clears) would stop the run.
    #[arg(long)]
    pub force: bool,
    /// Only retry the records listed by `contact-sync failures`.
    #[arg(long)]
    pub retry_failed: bool,
}

#[derive(Debug, Args)]
pub struct DiffArgs {
    #[command(flatten)]
    pub report_args: ReportArgs,
    /// Write the report to FILE instead of stdout.
    #[arg(long, short, value_name = "FILE")]
    pub output: Option<PathBuf>,
    /// Exit 3 when changes are pending, 0 when converged (for CI and monitoring).
    #[arg(long)]
    pub exit_code: bool,
    /// Also write an applyable plan to FILE, for `sync --plan FILE`.
    #[arg(long, value_name = "FILE")]
    pub plan_out: Option<PathBuf>,
}

#[derive(Debug, Args)]
pub struct CheckConfigArgs {
    /// Also connect to every provider: token, account and inbox checks, plus what an operator
    /// should know (exit 1 when a provider fails).
    #[arg(long)]
    pub online: bool,
}

#[derive(Debug, Args)]
pub struct DaemonArgs {
    /// Run a sync at start, before the first scheduled tick.
    #[arg(long)]
    pub run_now: bool,
}

#[derive(Debug, Args)]
pub struct DemoArgs {
    /// How many sample people to seed.
    #[arg(long, default_value_t = 36)]
    pub people: usize,
}

#[derive(Debug, Args)]
pub struct StatusArgs {
    /// How many runs to show.
    #[arg(long, default_value_t = 10)]
    pub runs: usize,
    /// Output format: `text` (default) or `json` (`markdown` prints the text).
    #[arg(long, value_enum)]
    pub format: Option<Format>,
}

/// The exit-code table printed at the end of `--help` (kept in step with the README).
pub const EXIT_CODES: &str = "\
Exit codes:
  0  done: everything applied, or nothing to do
  1  some records or providers failed (reported), a guard rail or a signal stopped the run,
     or a runtime failure (state locked or unreadable, listener cannot bind); the message
     says what to do
  2  usage or configuration error (the message names file, key and line)
  3  `diff --exit-code` only: changes are pending";

/// Process exit codes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Exit {
    Ok = 0,
    Failures = 1,
    Usage = 2,
    Pending = 3,
}

impl From<Exit> for ExitCode {
    fn from(e: Exit) -> Self {
        ExitCode::from(e as u8)
    }
}

/// Entry point used by `main`.
pub fn main() -> ExitCode {
    let cli = Cli::parse();
    let level = match cli.verbose {
        0 => "info",
        1 => "debug",
        _ => "trace",
    };
    telemetry::init(cli.log_format, level);
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return Exit::Failures.into();
        }
    };
    match runtime.block_on(run(cli)) {
        Ok(code) => code.into(),
        Err(e) => {
            // Usage and config problems were reported and turned into `Exit::Usage` where
            // they were found; anything that arrives here is a runtime failure.
            eprintln!("error: {}", chain(&e));
            if let Some(hint) = hint(&e) {
                eprintln!("hint: {hint}");
            }
            Exit::Failures.into()
        }
    }
}

/// The error and its causes joined by `: `, leaving out a cause whose text the message before it
/// already holds (several errors print their source in their own message).
fn chain(e: &anyhow::Error) -> String {
    let mut out = String::new();
    for cause in e.chain() {
        let text = cause.to_string();
        if !out.contains(&text) {
            if !out.is_empty() {
                out.push_str(": ");
            }
            out.push_str(&text);
        }
    }
    out
}

/// What to do about a runtime failure, when its cause says more than its message.
fn hint(e: &anyhow::Error) -> Option<&'static str> {
    use crate::daemon::DaemonError;
    use crate::state::StateError;
    use crate::sync::SyncError;
    e.chain().find_map(|cause| {
        let state = cause.downcast_ref::<StateError>().or_else(|| {
            match cause.downcast_ref::<SyncError>() {
                Some(SyncError::State(s)) => Some(s),
                _ => None,
            }
        });
        if let Some(s) = state {
            return Some(match s {
                StateError::Locked { .. } => {
                    "only one sync runs per state file; run this again when the other one has finished"
                }
                StateError::Sqlite { .. } => {
                    "the state file cannot be read or written: check its permissions and free disk space; if it is damaged, restore it from a backup (or move it aside to start over, which forgets links and baselines)"
                }
                StateError::File { .. } | StateError::Io { .. } => {
                    "check that the state directory exists and is writable by this user (`state.path`)"
                }
                StateError::TooNew { .. } => "run the newer contact-sync that wrote this state",
            });
        }
        match cause.downcast_ref::<DaemonError>()? {
            DaemonError::Listen { .. } => Some(
                "stop the process using that address, or set `daemon.listen` to a free loopback port (or \"\" to serve nothing)",
            ),
            _ => None,
        }
    })
}

async fn run(cli: Cli) -> anyhow::Result<Exit> {
    match cli.command {
        Command::CheckConfig(args) => match check_config(&cli.config)? {
            Exit::Ok if args.online => check_online(&cli.config).await,
            exit => Ok(exit),
        },
        Command::Demo(args) => {
            let out = crate::demo::run(args.people).await?;
            print!("{out}");
            Ok(Exit::Ok)
        }
        Command::Diff(args) => diff(&cli.config, args).await,
        Command::Sync(args) => sync(&cli.config, args).await,
        Command::Status(args) => {
            status(&cli.config, args.runs, args.format.unwrap_or(Format::Text))
        }
        Command::Failures => failures(&cli.config),
        Command::Review(args) => review(&cli.config, args).await,
        Command::Link { records } => decide(&cli.config, |store, config| {
            let ids = records
                .iter()
                .map(|r| identity::parse_record(r, config))
                .collect::<Result<Vec<_>, _>>()?;
            identity::link(store, &ids)
        }),
        Command::Unlink { record } => decide(&cli.config, |store, config| {
            identity::unlink(store, &identity::parse_record(&record, config)?)
        }),
        Command::Ignore { record } => decide(&cli.config, |store, config| {
            identity::ignore(store, &identity::parse_record(&record, config)?, true)
        }),
        Command::Unignore { record } => decide(&cli.config, |store, config| {
            identity::ignore(store, &identity::parse_record(&record, config)?, false)
        }),
        Command::Resolve(args) => decide(&cli.config, |store, config| {
            let from = match (&args.from, &args.value) {
                (Some(p), _) => identity::ResolveFrom::Provider(
                    p.parse().map_err(identity::DecisionError::Invalid)?,
                ),
                (None, Some(v)) => identity::ResolveFrom::Value(v.clone()),
                (None, None) => {
                    return Err(identity::DecisionError::Invalid(
                        "give --from PROVIDER or --value VALUE".into(),
                    ))
                }
            };
            identity::resolve(store, config, &args.person, &args.field, &from)
        }),
        Command::Daemon(args) => {
            let Some(config) = load(&cli.config) else {
                return Ok(Exit::Usage);
            };
            match crate::daemon::run_with_signals(config, cli.config.clone(), args.run_now).await {
                Ok(()) => Ok(Exit::Ok),
                // The providers' settings are configuration: exit 2, as `sync` does.
                Err(e @ crate::daemon::DaemonError::Providers(_)) => {
                    eprintln!("error: {e}");
                    Ok(Exit::Usage)
                }
                Err(e) => Err(e.into()),
            }
        }
    }
}

/// Loads the config, printing every problem; `None` means exit 2.
fn load(path: &Path) -> Option<Config> {
    match Config::load(path) {
        Ok(c) => Some(c),
        Err(errors) => {
            eprint!("{errors}");
            None
        }
    }
}

fn check_config(path: &Path) -> anyhow::Result<Exit> {
    let Some(config) = load(path) else {
        return Ok(Exit::Usage);
    };
    println!("{}: OK", path.display());
    println!("  state: {}", config.state_path.display());
    let next = config
        .schedule
        .next_after(chrono::Utc::now())
        .map_or_else(|| "never".to_string(), |t| t.to_rfc3339());
    println!(
        "  schedule: {:?} ({}), next run {next}",
        config.schedule.cron(),
        config.schedule.timezone()
    );
    for p in &config.providers {
        println!(
            "  {}: {} ({} requests per {:?}, using {:.0}%, timeout {:?})",
            p.kind,
            p.base_url,
            p.rate.requests,
            p.rate.per,
            p.share * 100.0,
            p.http.timeout
        );
    }
    if config.providers.is_empty() {
        println!("  no providers configured: nothing would be synced");
    }
    Ok(Exit::Ok)
}

/// `check-config --online`: every provider's health report, printed; exit 1 when one fails.
async fn check_online(path: &Path) -> anyhow::Result<Exit> {
    let Some(config) = load(path) else {
        return Ok(Exit::Usage);
    };
    println!("online checks:");
    let reports = crate::provider::health_reports(&config).await;
    let mut failed = 0;
    for r in &reports {
        match &r.result {
            Ok(notes) => {
                println!("  {}: OK", r.provider);
                for note in notes {
                    println!("    {note}");
                }
            }
            Err(e) => {
                failed += 1;
                println!("  {}: FAILED: {e}", r.provider);
            }
        }
    }
    if failed > 0 {
        eprintln!(
            "error: {failed} of {} providers failed the online check",
            reports.len()
        );
        return Ok(Exit::Failures);
    }
    Ok(Exit::Ok)
}

fn default_format() -> Format {
    if std::io::stdout().is_terminal() {
        Format::Text
    } else {
        Format::Json
    }
}

fn render(report: &RunReport, format: Format) -> String {
    match format {
        Format::Text => report.to_text(false),
        Format::Markdown => report.to_text(true),
        Format::Json => report.to_json() + "\n",
    }
}

/// The providers of `config`, or `None` after printing why they cannot be set up: their
/// settings (a token that cannot be sent in a header, a malformed section) are configuration,
/// so this exits 2.
fn build_engine(config: Config) -> Option<Engine> {
    match Engine::new(config) {
        Ok(engine) => Some(engine),
        Err(e) => {
            eprintln!("error: cannot set up the providers: {e}");
            None
        }
    }
}

async fn diff(path: &Path, args: DiffArgs) -> anyhow::Result<Exit> {
    let Some(config) = load(path) else {
        return Ok(Exit::Usage);
    };
    let fingerprint = config.fingerprint();
    let Some(engine) = build_engine(config) else {
        return Ok(Exit::Usage);
    };
    let report = engine
        .run(
            RunOptions {
                diff: true,
                ..RunOptions::default()
            },
            &CancellationToken::new(),
            &crate::sync::Quiet,
        )
        .await?;
    let text = render(
        &report,
        args.report_args.format.unwrap_or_else(default_format),
    );
    match &args.output {
        Some(file) => std::fs::write(file, text)
            .with_context(|| format!("cannot write {}", file.display()))?,
        None => print!("{text}"),
    }
    if let Some(file) = &args.plan_out {
        let plan = PlanFile::from_plan(&report.plan, &fingerprint);
        let json = serde_json::to_string_pretty(&plan)?;
        std::fs::write(file, json).with_context(|| format!("cannot write {}", file.display()))?;
        eprintln!(
            "Plan with {} writes saved to {}; apply it with `contact-sync sync --plan {}`.",
            plan.writes.len(),
            file.display(),
            file.display()
        );
    }
    Ok(if report.failure_count() > 0 {
        Exit::Failures
    } else if args.exit_code && !report.plan.updates.is_empty() {
        Exit::Pending
    } else {
        Exit::Ok
    })
}

/// Cancels `cancel` on the first SIGTERM or SIGINT, as the daemon stops: the run plans and
/// sends nothing new, lets in-flight requests finish (within `daemon.shutdown_grace`, see
/// [`sync`]) and persists what they did.
///
/// # Errors
/// The signal handlers cannot be installed.
fn stop_on_signals(cancel: CancellationToken) -> anyhow::Result<()> {
    use tokio::signal::unix::{signal, SignalKind};
    let mut term = signal(SignalKind::terminate()).context("cannot install a SIGTERM handler")?;
    let mut int = signal(SignalKind::interrupt()).context("cannot install a SIGINT handler")?;
    tokio::spawn(async move {
        let name = tokio::select! {
            _ = term.recv() => "SIGTERM",
            _ = int.recv() => "SIGINT",
        };
        eprintln!("{name}: finishing in-flight requests, sending nothing new.");
        tracing::info!(
            signal = name,
            "Stopping: no new requests; letting in-flight ones finish."
        );
        cancel.cancel();
    });
    Ok(())
}

/// A progress bar on a terminal.
struct Bar(Option<ProgressBar>);

impl Progress for Bar {
    fn planned(&self, writes: usize) {
        if let Some(b) = &self.0 {
            b.set_length(writes as u64);
            b.set_position(0);
        }
    }
    fn wrote(&self, u: &Update, outcome: &Outcome) {
        if let Some(b) = &self.0 {
            b.inc(1);
            if let Outcome::Failed(e) = outcome {
                b.println(format!("failed {}: {e}", u.patch.record));
            }
        }
    }
}

async fn sync(path: &Path, args: SyncArgs) -> anyhow::Result<Exit> {
    if args.dry_run {
        return diff(
            path,
            DiffArgs {
                report_args: args.report_args,
                output: args.report,
                exit_code: false,
                plan_out: None,
            },
        )
        .await;
    }
    let Some(config) = load(path) else {
        return Ok(Exit::Usage);
    };
    let plan = match &args.plan {
        Some(file) => match PlanFile::load(file, &config.fingerprint()) {
            Ok(p) => Some(p),
            Err(e) => {
                eprintln!("error: {e}");
                return Ok(Exit::Usage);
            }
        },
        None => None,
    };
    let grace = config.daemon.shutdown_grace;
    let Some(engine) = build_engine(config) else {
        return Ok(Exit::Usage);
    };
    let bar = std::io::stderr().is_terminal().then(|| {
        let b = ProgressBar::new(0);
        b.set_style(
            ProgressStyle::with_template(
                "{spinner} writing {pos}/{len} [{bar:30}] {per_sec} eta {eta}",
            )
            .unwrap_or_else(|_| ProgressStyle::default_bar()),
        );
        b
    });
    let cancel = CancellationToken::new();
    stop_on_signals(cancel.clone())?;
    let progress = Bar(bar);
    let run = engine.run(
        RunOptions {
            diff: false,
            force: args.force,
            retry_failed: args.retry_failed,
            plan,
            // One-shot: list every provider today's quota can pay for; stop the others.
            pacing: crate::cadence::Pacing::WhenAffordable,
        },
        &cancel,
        &progress,
    );
    tokio::pin!(run);
    let report = tokio::select! {
        report = &mut run => report?,
        () = cancel.cancelled() => match tokio::time::timeout(grace, &mut run).await {
            Ok(report) => report?,
            Err(_) => {
                eprintln!(
                    "Stopped: in-flight requests did not finish within daemon.shutdown_grace ({}); \
                     the write journal lets the next run check what was sent.",
                    humantime::format_duration(grace)
                );
                return Ok(Exit::Failures);
            }
        },
    };
    if let Some(b) = &progress.0 {
        b.finish_and_clear();
    }
    if let Some(file) = &args.report {
        let text = render(&report, args.report_args.format.unwrap_or(Format::Text));
        std::fs::write(file, text).with_context(|| format!("cannot write {}", file.display()))?;
    } else if let Some(format) = args.report_args.format {
        print!("{}", render(&report, format));
    }
    for g in &report.guard {
        eprintln!("guard rail: {}", g.message);
    }
    let report_on_stdout = args.report.is_none() && args.report_args.format.is_some();
    for line in report.provider_lines() {
        // Keep stdout a clean report when one is printed there.
        if report_on_stdout {
            eprintln!("{line}");
        } else {
            println!("{line}");
        }
    }
    for p in &report.problems {
        eprintln!("{} ({}): {}", p.provider, p.stage, p.error);
    }
    Ok(
        if report.failure_count() > 0 || !report.guard.is_empty() || cancel.is_cancelled() {
            Exit::Failures
        } else {
            Exit::Ok
        },
    )
}

/// `contact-sync status`: the last runs, the next scheduled run, and per provider its scan
/// cadence (last and next scan, requests today and projected, contacts, and the freshness its
/// quota allows; SPEC section 14).
fn status(path: &Path, n: usize, format: Format) -> anyhow::Result<Exit> {
    let Some(config) = load(path) else {
        return Ok(Exit::Usage);
    };
    let now = chrono::Utc::now();
    let store = StateStore::open_read_only(&config.state_path)?;
    let runs = match &store {
        Some(s) => s.recent_runs(n)?,
        None => Vec::new(),
    };
    let last_success = store
        .as_ref()
        .map(|s| s.last_success())
        .transpose()?
        .flatten();
    let failing = match &store {
        Some(s) => s.failures()?.len(),
        None => 0,
    };
    let next_run = config.schedule.next_after(now);
    let model_of = |k| {
        store
            .as_ref()
            .map_or(Ok(crate::cadence::CostModel::default()), |s| {
                s.cost_model(k)
            })
    };
    let providers = crate::cadence::outlooks(&config, model_of, now)?;
    if format == Format::Json {
        let runs: Vec<serde_json::Value> = runs
            .iter()
            .map(|r| {
                serde_json::json!({
                    "id": r.id, "mode": r.mode, "started_at": r.started_at, "finished_at": r.finished_at,
                    "outcome": r.outcome, "planned": r.planned, "applied": r.applied, "failed": r.failed,
                    "skipped": r.skipped, "conflicts": r.conflicts, "message": r.message,
                })
            })
            .collect();
        let doc = serde_json::json!({
            "schema": "contact-sync.status/1",
            "state": config.state_path,
            "runs": runs,
            "last_success": last_success,
            "next_run": next_run,
            "schedule": {"cron": config.schedule.cron(), "timezone": config.schedule.timezone().name()},
            "failing_records": failing,
            "providers": providers,
        });
        println!("{}", serde_json::to_string_pretty(&doc)?);
        return Ok(Exit::Ok);
    }
    if store.is_none() {
        println!("No runs yet (no state at {}).", config.state_path.display());
    } else {
        println!(
            "{:>5}  {:<25} {:>9}  {:<11} {:>7} {:>7} {:>6} {:>7}",
            "run", "started", "duration", "outcome", "planned", "applied", "failed", "skipped"
        );
    }
    for r in runs {
        let duration = match (
            crate::state::parse_ts(&r.started_at),
            r.finished_at.as_deref().and_then(crate::state::parse_ts),
        ) {
            (Some(a), Some(b)) => format!("{:.1}s", (b - a).num_milliseconds() as f64 / 1000.0),
            _ => "running".into(),
        };
        println!(
            "{:>5}  {:<25} {:>9}  {:<11} {:>7} {:>7} {:>6} {:>7}{}",
            r.id,
            r.started_at,
            duration,
            r.outcome.as_deref().unwrap_or("-"),
            r.planned,
            r.applied,
            r.failed,
            r.skipped,
            r.message.map(|m| format!("  {m}")).unwrap_or_default()
        );
    }
    if let Some(t) = last_success {
        println!("last successful sync: {t}");
    }
    let next = next_run.map_or_else(|| "never".into(), |t| t.to_rfc3339());
    println!(
        "next scheduled run (daemon, {:?} {}): {next}",
        config.schedule.cron(),
        config.schedule.timezone()
    );
    if failing > 0 {
        println!("{failing} records keep failing: see `contact-sync failures`");
    }
    if !providers.is_empty() {
        let when = |t: Option<chrono::DateTime<chrono::Utc>>| {
            t.map_or_else(
                || "never".to_owned(),
                |t| t.to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
            )
        };
        println!();
        println!(
            "{:<9} {:<21} {:<21} {:>15} {:>10} {:>9}",
            "provider", "last scan", "next scan", "requests today", "projected", "contacts"
        );
        for o in &providers {
            let today = match o.daily_budget {
                Some(b) => format!("{} / {b}", o.requests_today),
                None => o.requests_today.to_string(),
            };
            let next = match (o.deferred, o.next_scan) {
                (Some(crate::cadence::DeferReason::QuotaSpent), Some(t)) => {
                    format!("{} (quota)", when(Some(t)))
                }
                (_, t) => when(t),
            };
            println!(
                "{:<9} {:<21} {:<21} {:>15} {:>10} {:>9}",
                o.provider.as_str(),
                when(o.last_scan),
                next,
                today,
                o.projected_today,
                o.contacts
            );
            println!("  freshness: {}", o.freshness_line());
        }
    }
    Ok(Exit::Ok)
}

fn failures(path: &Path) -> anyhow::Result<Exit> {
    let Some(config) = load(path) else {
        return Ok(Exit::Usage);
    };
    let rows = match StateStore::open_read_only(&config.state_path)? {
        Some(s) => s.failures()?,
        None => Vec::new(),
    };
    if rows.is_empty() {
        println!("No failing records.");
        return Ok(Exit::Ok);
    }
    println!(
        "{:<40} {:>8}  {:<25} {:<16} last error",
        "record", "attempts", "last failed", "kind"
    );
    for f in rows {
        println!(
            "{} {:>8}  {:<25} {:<16} {}",
            crate::report::pad(&f.record.to_string(), 40),
            f.attempts,
            f.last_failed_at,
            f.error_kind,
            f.last_error
        );
    }
    println!("Retry just these with `contact-sync sync --retry-failed`.");
    Ok(Exit::Ok)
}

/// Runs one identity decision against the state: prints what it changed; exit 2 when the
/// arguments do not fit the state (nothing changed), 1 when the state cannot be used.
fn decide(
    path: &Path,
    f: impl FnOnce(&mut StateStore, &Config) -> Result<String, identity::DecisionError>,
) -> anyhow::Result<Exit> {
    let Some(config) = load(path) else {
        return Ok(Exit::Usage);
    };
    let result = identity::open_state(&config).and_then(|mut store| f(&mut store, &config));
    match result {
        Ok(said) => {
            println!("{said}");
            Ok(Exit::Ok)
        }
        Err(e) => {
            eprintln!("error: {e}");
            Ok(if e.is_usage() {
                Exit::Usage
            } else {
                Exit::Failures
            })
        }
    }
}

/// `contact-sync review`: live (a diff's plan) or `--offline` (the last sync's findings).
async fn review(path: &Path, args: ReviewArgs) -> anyhow::Result<Exit> {
    let Some(config) = load(path) else {
        return Ok(Exit::Usage);
    };
    let review = if args.offline {
        let stored = StateStore::open_read_only(&config.state_path)?
            .map(|s| s.findings())
            .transpose()?
            .flatten();
        match stored {
            Some(f) => Review::from_json(&f.body)
                .map_err(|e| anyhow::anyhow!("the stored findings do not parse ({e}); run `contact-sync review` without --offline"))?,
            None => {
                eprintln!(
                    "No findings stored yet (no sync has run on {}); run `contact-sync review` without --offline.",
                    config.state_path.display()
                );
                return Ok(Exit::Failures);
            }
        }
    } else {
        let Some(engine) = build_engine(config) else {
            return Ok(Exit::Usage);
        };
        let report = engine
            .run(
                RunOptions {
                    diff: true,
                    ..RunOptions::default()
                },
                &CancellationToken::new(),
                &crate::sync::Quiet,
            )
            .await?;
        for p in &report.problems {
            eprintln!("{} ({}): {}", p.provider, p.stage, p.error);
        }
        Review::of_plan(&report.plan, "live", None)
    };
    let text = match args.format.unwrap_or_else(default_format) {
        Format::Text => review.to_text(false),
        Format::Markdown => review.to_text(true),
        Format::Json => review.to_json() + "\n",
    };
    print!("{text}");
    Ok(Exit::Ok)
}
