use baton::config::{self, ConfigError};
use baton::spool::Condition;
use clap::{Parser, Subcommand, ValueEnum};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;

#[derive(Parser)]
#[command(name = "baton", version, about = "Multi-provider email failover relay")]
struct Cli {
    /// Config file [default: config/baton.toml; for `demo`, config/demo.toml].
    #[arg(long, global = true, env = "BATON_CONFIG")]
    config: Option<PathBuf>,
    /// Log line format.
    #[arg(long, global = true, value_enum, default_value_t = LogFormat::Text)]
    log_format: LogFormat,
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Subcommand)]
enum Command {
    /// Run the relay (the default).
    Serve,
    /// Validate a config file: exit 0 if it is valid, else print every problem and exit 1.
    CheckConfig,
    /// Watch a failover with no provider account: the relay on config/demo.toml, with a local
    /// SMTP sink in place of each provider, which `POST /NAME/suspend` on the control address
    /// makes answer like a suspended account.
    Demo {
        /// Where the sinks' control API listens.
        #[arg(long, default_value = "127.0.0.1:8025")]
        control: SocketAddr,
    },
}

impl Command {
    fn default_config(&self) -> PathBuf {
        match self {
            Command::Serve | Command::CheckConfig => "config/baton.toml".into(),
            Command::Demo { .. } => "config/demo.toml".into(),
        }
    }
}

#[derive(Clone, Copy, ValueEnum)]
enum LogFormat {
    Text,
    Json,
}

/// Lines waiting for the log thread before a logging call waits for room (never dropped).
const LOG_BUFFERED_LINES: usize = 16_384;

/// Logs go to stderr through a thread of their own (tracing-appender), which writes every line
/// waiting in one `write(2)`: at thousands of messages a second, one syscall per line on the
/// async workers cost about a tenth of Baton's CPU (docs/benchmarks.md). No line is dropped: a
/// full buffer makes the logging call wait. The guard flushes what is left when `main` returns;
/// a SIGKILL loses only lines not yet written, milliseconds' worth.
fn init_logging(format: LogFormat) -> tracing_appender::non_blocking::WorkerGuard {
    let filter = tracing_subscriber::EnvFilter::try_from_env("BATON_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"))
        // async-imap logs every IMAP command at trace level, the canary mailbox's LOGIN and
        // password included: never below info, whatever BATON_LOG asks for.
        .add_directive("async_imap=info".parse().expect("a valid directive"))
        .add_directive("imap_proto=info".parse().expect("a valid directive"));
    use std::io::IsTerminal;
    let (writer, guard) = tracing_appender::non_blocking::NonBlockingBuilder::default()
        .lossy(false)
        .buffered_lines_limit(LOG_BUFFERED_LINES)
        .thread_name("log-writer")
        .finish(std::io::BufWriter::with_capacity(64 * 1024, std::io::stderr()));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(std::io::stderr().is_terminal())
        .with_writer(writer);
    match format {
        LogFormat::Text => builder.init(),
        LogFormat::Json => builder.json().flatten_event(true).init(),
    }
    // A panic is logged like every other error (one JSON line with --log-format json), so a
    // supervisor's log shows it in place. Panics the spool catches (redb on a damaged file)
    // are logged here too, before the spool turns them into a clear error.
    std::panic::set_hook(Box::new(|info| tracing::error!(panic = %info, "panic")));
    guard
}

fn print_problems(err: &ConfigError) {
    match err {
        ConfigError::Invalid { problems } => {
            for p in problems {
                eprintln!("error: {p}");
            }
            eprintln!("{} problem(s) found", problems.len());
        }
        other => eprintln!("error: {other}"),
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let command = cli.command.unwrap_or(Command::Serve);
    let config_path = cli.config.unwrap_or_else(|| command.default_config());
    match command {
        Command::CheckConfig => match config::load(&config_path) {
            Ok(loaded) => {
                for w in &loaded.warnings {
                    eprintln!("warning: {w}");
                }
                let c = &loaded.config;
                println!(
                    "{}: OK ({} providers, {} routes, {} clients)",
                    config_path.display(),
                    c.providers.len(),
                    c.routes.len(),
                    c.clients.len()
                );
                ExitCode::SUCCESS
            }
            Err(e) => {
                print_problems(&e);
                ExitCode::FAILURE
            }
        },
        Command::Serve | Command::Demo { .. } => {
            let _log = init_logging(cli.log_format);
            let loaded = match config::load(&config_path) {
                Ok(l) => l,
                Err(e) => {
                    print_problems(&e);
                    return ExitCode::FAILURE;
                }
            };
            let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build().expect("tokio runtime");
            match command {
                Command::Demo { control } => runtime.block_on(demo(loaded, control)),
                _ => runtime.block_on(serve(loaded, None)),
            }
        }
    }
}

/// `baton demo`: the sinks first (Baton's first probes find them), then the relay as `serve`.
async fn demo(loaded: config::Loaded, control: SocketAddr) -> ExitCode {
    match baton::demo::start(&loaded.config, control).await {
        Ok(demo) => {
            tracing::info!(control = %demo.control, sinks = demo.sinks.len(), "demo sinks listening");
            serve(loaded, Some(demo)).await
        }
        Err(e) => {
            tracing::error!(error = %e, source = ?std::error::Error::source(&e), "cannot start the demo");
            ExitCode::FAILURE
        }
    }
}

/// Runs the relay until SIGTERM / SIGINT (SIGHUP reloads); with `demo`, prints its guide once
/// the relay listens.
async fn serve(loaded: config::Loaded, demo: Option<baton::demo::Demo>) -> ExitCode {
    // Handlers first: a signal that arrives while starting must not kill the process.
    use tokio::signal::unix::{SignalKind, signal};
    let mut term = signal(SignalKind::terminate()).expect("SIGTERM handler");
    let mut int = signal(SignalKind::interrupt()).expect("SIGINT handler");
    let mut hup = signal(SignalKind::hangup()).expect("SIGHUP handler");
    for w in &loaded.warnings {
        tracing::warn!(problem = %w, "config warning");
    }
    let running = match baton::app::start(loaded).await {
        Ok(r) => r,
        Err(e) => {
            tracing::error!(error = %e, "cannot start");
            return ExitCode::FAILURE;
        }
    };
    if let Some(demo) = &demo {
        let runtime = running.shared.runtime.load();
        println!("{}", demo.guide(&runtime.config, running.http_addr, running.admin_addr));
    }
    loop {
        tokio::select! {
            _ = term.recv() => {
                tracing::info!("SIGTERM received");
                break;
            }
            _ = int.recv() => {
                tracing::info!("SIGINT received");
                break;
            }
            _ = hup.recv() => {
                tracing::info!("SIGHUP received: reloading the config");
                // Success and failure are logged and counted by the reloader.
                let _ = baton::reload::reload(&running.shared, "SIGHUP").await;
            }
            // Baton stopped itself: the spool cannot be written any more (logged there).
            _ = running.stopping() => break,
        }
    }
    let spool = running.shared.spool.clone();
    running.stop().await;
    // Exit non-zero when the spool failed, so a supervisor restarts Baton (the start re-opens
    // and verifies the spool) and the failure is not mistaken for a requested stop.
    match spool.condition() {
        Condition::Failed(_) => ExitCode::FAILURE,
        _ => ExitCode::SUCCESS,
    }
}
