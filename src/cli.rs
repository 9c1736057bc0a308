//! The command line: subcommands, flags, and the exit-code contract.
//!
//! Exit codes (SPEC section 4):
//!
//! | code | meaning |
//! |---|---|
//! | 0 | everything applied, or nothing to do |
//! | 1 | some records failed (reported), or a guard rail stopped the run |
//! | 2 | usage or configuration error (the message names file, key and line) |
//! | 3 | `diff --exit-code` only: changes are pending |

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

use crate::config::Config;
use crate::telemetry::{self, LogFormat};

/// Keeps the contact lists of Protocol, Callbell, Chatwoot and Privy in agreement.
#[derive(Debug, Parser)]
#[command(name = "contact-sync", version, about, long_about = None)]
pub struct Cli {
    /// Config file.
    #[arg(
        long,
        global = true,
        env = "CONTACT_SYNC_CONFIG",
        default_value = "config/contact-sync.toml"
    )]
    pub config: PathBuf,

    /// Log format: human on a terminal and JSON otherwise by default.
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
    /// Validate the config file and the secrets it references; exit 0 if usable, 2 if not.
    CheckConfig,
}

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
    match run(cli) {
        Ok(code) => code.into(),
        Err(e) => {
            eprintln!("error: {e:#}");
            Exit::Usage.into()
        }
    }
}

fn run(cli: Cli) -> anyhow::Result<Exit> {
    match cli.command {
        Command::CheckConfig => check_config(&cli.config),
    }
}

fn check_config(path: &std::path::Path) -> anyhow::Result<Exit> {
    match Config::load(path) {
        Ok(config) => {
            println!("{}: OK", path.display());
            println!("  state: {}", config.state_path.display());
            println!(
                "  schedule: {:?} ({})",
                config.schedule.cron, config.schedule.timezone
            );
            for p in &config.providers {
                println!(
                    "  {}: {} ({} requests per {:?}, using {:.0}%)",
                    p.kind,
                    p.base_url,
                    p.rate.requests,
                    p.rate.per,
                    p.share * 100.0
                );
            }
            if config.providers.is_empty() {
                println!("  no providers configured: nothing would be synced");
            }
            Ok(Exit::Ok)
        }
        Err(errors) => {
            eprint!("{errors}");
            Ok(Exit::Usage)
        }
    }
}
