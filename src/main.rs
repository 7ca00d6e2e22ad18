//! The command line: parse arguments, set up logging, call into the library.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand, ValueEnum};

use beredskab::config::{self, LoadError};

#[derive(Parser)]
#[command(
    name = "beredskab",
    version,
    about = "The IT preparedness plan, running"
)]
struct Cli {
    /// Log format on stderr.
    #[arg(long, global = true, value_enum, default_value = "text")]
    log_format: LogFormat,
    #[command(subcommand)]
    command: Command,
}

#[derive(Clone, Copy, ValueEnum)]
enum LogFormat {
    Text,
    Json,
}

#[derive(Subcommand)]
enum Command {
    /// Run the daemon: collectors, engine, store, notifications, HTTP API.
    Run {
        #[arg(short, long)]
        config: PathBuf,
    },
    /// Run the whole system with no external service: a broker and
    /// simulated sensors inside the process, a power cut and a fire.
    #[cfg(feature = "demo")]
    Demo {
        /// Where the HTTP API listens.
        #[arg(long, default_value = "127.0.0.1:8080")]
        listen: std::net::SocketAddr,
    },
    /// Validate a configuration file.
    Check {
        #[arg(short, long)]
        config: PathBuf,
    },
    /// Replay a scenario in simulated time; prints JSON lines.
    Drill {
        #[arg(short, long)]
        config: PathBuf,
        #[arg(long)]
        scenario: PathBuf,
    },
    /// Print the preparedness plan generated from the configuration.
    Plan {
        #[arg(short, long)]
        config: PathBuf,
        #[arg(long, value_enum, default_value = "markdown")]
        format: PlanFormat,
    },
    /// Write an incident's report for the archive, from the store (the
    /// daemon may be running; nothing is written).
    Report {
        #[arg(short, long)]
        config: PathBuf,
        /// The incident's number.
        #[arg(long)]
        incident: u64,
        #[arg(long, value_enum, default_value = "markdown")]
        format: ReportFormat,
    },
}

#[derive(Clone, Copy, ValueEnum)]
enum ReportFormat {
    Markdown,
    Json,
}

#[derive(Clone, Copy, ValueEnum)]
enum PlanFormat {
    Markdown,
    Html,
}

fn main() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) => {
            let _ = e.print();
            return if e.use_stderr() {
                ExitCode::from(2)
            } else {
                ExitCode::SUCCESS
            };
        }
    };
    init_tracing(cli.log_format);
    match run(cli.command) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::from(1)
        }
    }
}

fn init_tracing(format: LogFormat) {
    use std::io::IsTerminal;

    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let ansi = colour(
        std::io::stderr().is_terminal(),
        std::env::var_os("NO_COLOR").as_deref(),
    );
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(ansi)
        .with_writer(std::io::stderr);
    match format {
        LogFormat::Text => builder.init(),
        LogFormat::Json => builder.json().init(),
    }
}

/// Whether the text log is coloured: only on a terminal, since escape codes
/// garble a journal or a log file, and not when `NO_COLOR` is set to
/// anything but the empty string (<https://no-color.org>).
fn colour(stderr_is_terminal: bool, no_color: Option<&std::ffi::OsStr>) -> bool {
    stderr_is_terminal && no_color.is_none_or(|v| v.is_empty())
}

/// Loads a config, printing its warnings; on errors prints them and
/// returns the exit code to use.
fn load_config(path: &std::path::Path) -> Result<config::Loaded, ExitCode> {
    match config::load(path) {
        Ok(loaded) => {
            for w in &loaded.warnings {
                eprintln!("{w}");
            }
            Ok(loaded)
        }
        Err(LoadError::Invalid(diagnostics)) => {
            for d in &diagnostics {
                eprintln!("{d}");
            }
            Err(ExitCode::from(2))
        }
        Err(e @ LoadError::Io { .. }) => {
            eprintln!("error: {e}");
            Err(ExitCode::from(2))
        }
    }
}

fn run(command: Command) -> anyhow::Result<ExitCode> {
    match command {
        Command::Run { config } => {
            let runtime = tokio::runtime::Builder::new_multi_thread()
                .enable_all()
                .build()?;
            let opts = beredskab::daemon::RunOptions {
                config,
                on_listening: None,
                signals: true,
            };
            let token = tokio_util::sync::CancellationToken::new();
            let ran = runtime.block_on(beredskab::daemon::run(opts, token));
            // A task that ended on its own leaves others behind: exit now,
            // so the service manager can restart us, rather than wait.
            runtime.shutdown_timeout(std::time::Duration::from_millis(500));
            match ran {
                Ok(()) => Ok(ExitCode::SUCCESS),
                Err(beredskab::daemon::DaemonError::Config(msg)) => {
                    eprintln!("{msg}");
                    Ok(ExitCode::from(2))
                }
                Err(e) => Err(e.into()),
            }
        }
        #[cfg(feature = "demo")]
        Command::Demo { listen } => {
            let runtime = tokio::runtime::Builder::new_multi_thread()
                .enable_all()
                .build()?;
            runtime.block_on(beredskab::demo::run(listen))?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Check { config } => {
            let loaded = match load_config(&config) {
                Ok(l) => l,
                Err(code) => return Ok(code),
            };
            println!("ok: {}", config::summary(&loaded.config));
            Ok(ExitCode::SUCCESS)
        }
        Command::Drill { config, scenario } => {
            let loaded = match load_config(&config) {
                Ok(l) => l,
                Err(code) => return Ok(code),
            };
            let text = match std::fs::read_to_string(&scenario) {
                Ok(t) => t,
                Err(e) => {
                    eprintln!("error: cannot read {}: {e}", scenario.display());
                    return Ok(ExitCode::from(2));
                }
            };
            let scenario =
                match beredskab::drill::Scenario::parse(&scenario.display().to_string(), &text) {
                    Ok(s) => s,
                    Err(e) => {
                        eprintln!("{e}");
                        return Ok(ExitCode::from(2));
                    }
                };
            let stdout = std::io::stdout();
            let mut out = std::io::BufWriter::new(stdout.lock());
            match beredskab::drill::run(&loaded.config, &scenario, &mut out) {
                Ok(()) => Ok(ExitCode::SUCCESS),
                Err(beredskab::drill::DrillError::Scenario(msg)) => {
                    eprintln!("{msg}");
                    Ok(ExitCode::from(2))
                }
                // A closed pipe (`drill … | head`) is the reader's choice.
                Err(beredskab::drill::DrillError::Io(e))
                    if e.kind() == std::io::ErrorKind::BrokenPipe =>
                {
                    Ok(ExitCode::SUCCESS)
                }
                Err(e) => Err(e.into()),
            }
        }
        Command::Plan { config, format } => {
            let loaded = match load_config(&config) {
                Ok(l) => l,
                Err(code) => return Ok(code),
            };
            let format = match format {
                PlanFormat::Markdown => beredskab::plan::Format::Markdown,
                PlanFormat::Html => beredskab::plan::Format::Html,
            };
            print!("{}", beredskab::plan::render(&loaded.config, format));
            Ok(ExitCode::SUCCESS)
        }
        Command::Report {
            config,
            incident,
            format,
        } => {
            let loaded = match load_config(&config) {
                Ok(l) => l,
                Err(code) => return Ok(code),
            };
            let format = match format {
                ReportFormat::Markdown => beredskab::report::Format::Markdown,
                ReportFormat::Json => beredskab::report::Format::Json,
            };
            report(&loaded, incident, format)
        }
    }
}

/// `beredskab report`: reads the store named by the config, read-only,
/// and prints the report. A url that names no store is a config error (2);
/// a store or incident that is not there is 1.
fn report(
    loaded: &config::Loaded,
    incident: u64,
    format: beredskab::report::Format,
) -> anyhow::Result<ExitCode> {
    let url = &loaded.config.store.url;
    if url.starts_with("postgres://") || url.starts_with("postgresql://") {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?;
        let rows = runtime.block_on(async {
            let store = beredskab::store::PgStore::connect_read_only(url).await?;
            let rows = beredskab::report::load(&store, incident).await;
            store.close().await;
            rows
        });
        return print_report(loaded, incident, format, rows, "the PostgreSQL store");
    }
    let db = match beredskab::daemon::sqlite_path(&loaded.path, &loaded.config.store.url) {
        Ok(db) => db,
        Err(e) => {
            eprintln!("error: {e}");
            return Ok(ExitCode::from(2));
        }
    };
    if !db.is_file() {
        eprintln!(
            "error: there is no store at {} ([store] url in {}); has the daemon run?",
            db.display(),
            loaded.path.display()
        );
        return Ok(ExitCode::from(1));
    }
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let rows = runtime.block_on(async {
        let store = beredskab::store::SqliteStore::open_read_only(&db).await?;
        let rows = beredskab::report::load(&store, incident).await;
        store.close().await;
        rows
    });
    print_report(loaded, incident, format, rows, &db.display().to_string())
}

/// Prints the report of what was read from `store`, or says why not.
fn print_report(
    loaded: &config::Loaded,
    incident: u64,
    format: beredskab::report::Format,
    rows: Result<Option<beredskab::report::Rows>, beredskab::store::StoreError>,
    store: &str,
) -> anyhow::Result<ExitCode> {
    let rows = match rows {
        Ok(Some(rows)) => rows,
        Ok(None) => {
            eprintln!("error: there is no incident {incident} in {store}");
            return Ok(ExitCode::from(1));
        }
        Err(e) => {
            eprintln!("error: cannot read {store}: {e}");
            return Ok(ExitCode::from(1));
        }
    };
    let now = beredskab::clock::wall_now();
    print!(
        "{}",
        beredskab::report::render(&loaded.config, &rows, format, now)
    );
    Ok(ExitCode::SUCCESS)
}

#[cfg(test)]
mod tests {
    use std::ffi::OsStr;

    use super::colour;

    #[test]
    fn colour_only_on_a_terminal_without_no_color() {
        assert!(colour(true, None));
        assert!(colour(true, Some(OsStr::new(""))));
        assert!(!colour(true, Some(OsStr::new("1"))));
        assert!(!colour(true, Some(OsStr::new("false"))));
        assert!(!colour(false, None));
        assert!(!colour(false, Some(OsStr::new(""))));
    }
}
