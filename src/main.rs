//! The `aether-gateway` command line: run, check, demo. No logic lives here.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;

use aether_gateway::config::log::{LogFormat, LogSettings};
use aether_gateway::config::{self, GatewayConfig};
use aether_gateway::{BackendRuntime, demo};
use clap::{Parser, Subcommand};

// Every request allocates a few small header maps and buffers; mimalloc's
// thread-local free lists make that measurably cheaper than glibc's (bench/run.sh).
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// `--version`: the release, the commit it was built from and the cargo
/// features compiled in (an `otlp_endpoint` needs `otel`).
const VERSION: &str = concat!(
    env!("CARGO_PKG_VERSION"),
    " (commit ",
    env!("AETHER_GIT_COMMIT"),
    "; features: ",
    env!("AETHER_FEATURES"),
    ")"
);

/// The edge API gateway of the Aether VR platform.
#[derive(Parser)]
#[command(name = "aether-gateway", version = VERSION, about)]
struct Cli {
    /// Configuration file (required by `run` and `check`; with no command
    /// it is run, and with neither the built-in demo starts).
    #[arg(long, short, global = true)]
    config: Option<PathBuf>,
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Subcommand)]
enum Command {
    /// Run the gateway with a configuration file.
    Run,
    /// Validate a configuration file and exit (non-zero with file:line: field: message on error).
    Check,
    /// Ask the running gateway (its [admin] API) to reload the configuration
    /// file; exits non-zero when it refused the file or could not be asked.
    Reload {
        /// The admin API's address (HOST:PORT), when it is not the config's
        /// [admin] listen.
        #[arg(long, value_parser = resolve_admin)]
        admin: Option<SocketAddr>,
    },
    /// Run the self-contained demo: built-in upstreams and config.
    Demo {
        /// Where the demo gateway listens.
        #[arg(long, default_value = "127.0.0.1:8080")]
        listen: SocketAddr,
        /// Where the demo's admin API listens.
        #[arg(long, default_value = "127.0.0.1:9901")]
        admin_listen: SocketAddr,
        /// Where the demo's STUN/TURN relay listens (UDP and TCP).
        #[arg(long, default_value = "127.0.0.1:3478")]
        relay_listen: SocketAddr,
    },
}

/// `--admin HOST:PORT`: an address, or a name resolved here (`localhost`).
fn resolve_admin(s: &str) -> Result<SocketAddr, String> {
    use std::net::ToSocketAddrs;
    s.to_socket_addrs()
        .map_err(|e| format!("{s:?} is not HOST:PORT: {e}"))?
        .next()
        .ok_or_else(|| format!("{s:?} resolves to no address"))
}

fn main() -> ExitCode {
    // A `systemctl reload` (SIGHUP) that arrives while the config is read or
    // the listeners are bound must not end the process, which is SIGHUP's
    // default action: ignored until the reload task installs its handler.
    #[cfg(unix)]
    // SAFETY: setting a signal's disposition to SIG_IGN runs no code of ours
    // in a signal context; this is the first thing the process does.
    unsafe {
        libc::signal(libc::SIGHUP, libc::SIG_IGN);
    }
    let cli = Cli::parse();
    // `run` logs in its config's format, so its subscriber waits for the
    // config; `check` and `demo` log as text.
    let _log = (!matches!(
        (&cli.command, &cli.config),
        (Some(Command::Run) | None, Some(_))
    ))
    .then(|| init_logging(&LogSettings::default()));
    match (cli.command, cli.config) {
        (Some(Command::Check), Some(path)) => match config::load(&path) {
            Ok(cfg) => {
                for w in &cfg.warnings {
                    eprintln!("warning: {w}");
                }
                let relay = cfg
                    .server
                    .relay
                    .as_ref()
                    .map(|r| format!(", TURN relay {}", r.listen))
                    .unwrap_or_default();
                println!(
                    "{}: ok ({} routes counting each method, listen {}{relay})",
                    path.display(),
                    cfg.snapshot.router.routes().len(),
                    cfg.server.listen
                );
                ExitCode::SUCCESS
            }
            Err(e) => {
                eprintln!("error: {e}");
                ExitCode::from(2)
            }
        },
        (Some(Command::Reload { admin }), Some(path)) => reload(&path, admin),
        (Some(Command::Check), None)
        | (Some(Command::Run), None)
        | (Some(Command::Reload { .. }), None) => {
            eprintln!("error: --config FILE is required");
            ExitCode::from(2)
        }
        (Some(Command::Run) | None, Some(path)) => match config::load(&path) {
            Ok(cfg) => {
                let _log = init_logging(&cfg.server.log);
                run(cfg, path)
            }
            Err(e) => {
                eprintln!("error: {e}");
                ExitCode::from(2)
            }
        },
        (Some(Command::Demo { .. }), Some(_)) => {
            eprintln!(
                "error: `demo` runs the built-in config and takes no --config (use `run --config FILE`)"
            );
            ExitCode::from(2)
        }
        (
            Some(Command::Demo {
                listen,
                admin_listen,
                relay_listen,
            }),
            None,
        ) => run_demo(listen, admin_listen, relay_listen),
        (None, None) => run_demo(
            SocketAddr::from(([127, 0, 0, 1], 8080)),
            SocketAddr::from(([127, 0, 0, 1], 9901)),
            SocketAddr::from(([127, 0, 0, 1], 3478)),
        ),
    }
}

/// The process's subscriber: `RUST_LOG` when set, else `[log] level`; text
/// or JSON lines on stderr. Lines are written by a thread of their own
/// (the guard flushes it on exit): a request never waits on stderr's lock
/// or a slow reader, and under a flood lines are dropped, not requests
/// slowed.
fn init_logging(log: &LogSettings) -> tracing_appender::non_blocking::WorkerGuard {
    // Bounded in lines, and lines are bounded in size (the access line cuts
    // paths and users), so a stalled log reader costs at most tens of MiB;
    // lines beyond are dropped and counted (aether_log_lines_dropped_total).
    let (writer, guard) = tracing_appender::non_blocking::NonBlockingBuilder::default()
        .buffered_lines_limit(aether_gateway::metrics::LOG_QUEUE_LINES)
        .lossy(true)
        .finish(std::io::stderr());
    aether_gateway::metrics::count_dropped_log_lines(writer.error_counter());
    // The STUN codec warns about every malformed datagram; the relay counts
    // those (drops.malformed) instead of letting anyone fill the log.
    let default = || tracing_subscriber::EnvFilter::new(format!("{},stun_types=error", log.level));
    let mut refused_env = None;
    let filter = match std::env::var("RUST_LOG") {
        Ok(v) if !v.trim().is_empty() => {
            // A misspelt level ("inof") parses, as a target, and would
            // silence every line: refused like a filter that does not parse.
            match aether_gateway::config::log::rust_log_typo(&v) {
                Some(why) => {
                    refused_env = Some(why);
                    default()
                }
                None => tracing_subscriber::EnvFilter::builder()
                    .parse(&v)
                    .unwrap_or_else(|e| {
                        refused_env = Some(e.to_string());
                        default()
                    }),
            }
        }
        _ => default(),
    };
    use std::io::IsTerminal;
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(writer);
    match log.format {
        LogFormat::Text => builder.with_ansi(std::io::stderr().is_terminal()).init(),
        // Event fields at the top level: `jq .status` rather than `.fields.status`.
        LogFormat::Json => builder.json().flatten_event(true).init(),
    }
    if let Some(e) = refused_env {
        tracing::warn!(error = %e, filter = %log.level, "RUST_LOG is not a valid filter: using [log] level instead");
    }
    guard
}

fn tokio_runtime(worker_threads: Option<usize>) -> std::io::Result<tokio::runtime::Runtime> {
    // One worker: a current-thread runtime does the same work without the
    // work-stealing machinery (measured in bench/run.sh).
    if worker_threads == Some(1) {
        return tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build();
    }
    let mut b = tokio::runtime::Builder::new_multi_thread();
    if let Some(n) = worker_threads {
        b.worker_threads(n);
    }
    b.enable_all().build()
}

fn run(cfg: GatewayConfig, path: PathBuf) -> ExitCode {
    for w in &cfg.warnings {
        tracing::warn!("{w}");
    }
    // Logging is set up in the config's format: fatal errors go through it.
    let rt = match tokio_runtime(cfg.server.worker_threads) {
        Ok(rt) => rt,
        Err(e) => {
            tracing::error!("cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let scheme = if cfg.server.tls.is_some() {
        "https"
    } else {
        "http"
    };
    let json = cfg.server.log.format == LogFormat::Json;
    let code = rt.block_on(async move {
        match BackendRuntime::from_config(cfg)
            .with_config_file(path)
            .start()
            .await
        {
            Ok(gw) => {
                // Scripts wait for these lines on stdout; with JSON logs
                // they are JSON too, so a shipper reading both streams
                // (`docker logs`) sees JSON only.
                announce(
                    json,
                    "listening",
                    format!("aether-gateway listening on {scheme}://{}", gw.local_addr()),
                    format!("{scheme}://{}", gw.local_addr()),
                );
                if let Some(a) = gw.admin_addr() {
                    announce(
                        json,
                        "admin",
                        format!("admin API on http://{a}"),
                        format!("http://{a}"),
                    );
                }
                if let Some(r) = gw.relay() {
                    let text = match r.tcp_addr() {
                        Some(t) => format!("TURN relay on udp://{} and tcp://{t}", r.udp_addr()),
                        None => format!("TURN relay on udp://{}", r.udp_addr()),
                    };
                    announce(json, "relay", text, format!("udp://{}", r.udp_addr()));
                }
                gw.run_until_signal().await;
                ExitCode::SUCCESS
            }
            Err(e) => {
                tracing::error!("cannot start: {e}");
                ExitCode::FAILURE
            }
        }
    });
    // The gateway has drained; a blocking read stuck in the kernel (a
    // hung network file system under a config path) must not keep the
    // process from exiting.
    rt.shutdown_timeout(RUNTIME_EXIT_GRACE);
    code
}

/// How long the process waits, after the drain, for blocking work to end.
const RUNTIME_EXIT_GRACE: std::time::Duration = std::time::Duration::from_secs(2);

/// One start-up line on stdout: the text, or with JSON logs
/// `{"event": …, "url": …, "message": text}`.
fn announce(json: bool, event: &str, text: String, url: String) {
    if json {
        println!(
            "{}",
            serde_json::json!({"level": "INFO", "event": event, "url": url, "message": text})
        );
    } else {
        println!("{text}");
    }
}

/// `reload`: validate the file here first (its errors name the line), then
/// `POST /admin/reload` with the config's admin token and print the answer.
fn reload(path: &std::path::Path, admin: Option<SocketAddr>) -> ExitCode {
    let cfg = match config::load(path) {
        Ok(cfg) => cfg,
        Err(e) => {
            eprintln!("error: {e}");
            return ExitCode::from(2);
        }
    };
    let Some(listen) = admin.or(cfg.server.admin_listen) else {
        eprintln!(
            "error: {}: reload asks the [admin] API, and this config has no [admin] section (send the gateway SIGHUP instead)",
            path.display()
        );
        return ExitCode::from(2);
    };
    let rt = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    if listen.port() == 0 {
        eprintln!(
            "error: {}: [admin] listen has port 0 (chosen at start): give the running gateway's admin address with --admin HOST:PORT (it prints it at start)",
            path.display()
        );
        return ExitCode::from(2);
    }
    let token = cfg.snapshot.admin_token.clone();
    use aether_gateway::admin::client::{ReloadOutcome, reload as ask};
    match rt.block_on(ask(listen, token.as_ref(), path)) {
        Ok(ReloadOutcome::Applied(body)) => {
            println!("{body}");
            ExitCode::SUCCESS
        }
        Ok(ReloadOutcome::Refused(why)) => {
            eprintln!("error: the gateway refused the file and keeps its running config: {why}");
            ExitCode::FAILURE
        }
        Ok(ReloadOutcome::NotAsked(why)) => {
            eprintln!("error: nothing reloaded: {why}");
            ExitCode::FAILURE
        }
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
    }
}

fn print_relay(gw: &aether_gateway::RunningGateway) {
    if let Some(r) = gw.relay() {
        match r.tcp_addr() {
            Some(t) => println!("TURN relay on udp://{} and tcp://{t}", r.udp_addr()),
            None => println!("TURN relay on udp://{}", r.udp_addr()),
        }
    }
}

fn run_demo(listen: SocketAddr, admin: SocketAddr, relay: SocketAddr) -> ExitCode {
    let rt = match tokio_runtime(None) {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    rt.block_on(async move {
        let upstreams = match demo::start_upstreams().await {
            Ok(u) => u,
            Err(e) => {
                eprintln!("error: cannot start demo upstreams: {e}");
                return ExitCode::FAILURE;
            }
        };
        let demo = match demo::config(listen, admin, relay, &upstreams) {
            Ok(d) => d,
            Err(e) => {
                eprintln!("error: {e}");
                return ExitCode::FAILURE;
            }
        };
        match BackendRuntime::from_config(demo.config).start().await {
            Ok(gw) => {
                println!("aether-gateway listening on http://{}", gw.local_addr());
                if let Some(a) = gw.admin_addr() {
                    println!("admin API on http://{a}");
                }
                print_relay(&gw);
                println!(
                    "{}",
                    demo::banner(
                        gw.local_addr(),
                        gw.admin_addr(),
                        gw.relay().map(|r| r.udp_addr()),
                        &upstreams,
                        &demo.tokens
                    )
                );
                gw.run_until_signal().await;
                ExitCode::SUCCESS
            }
            Err(e) => {
                eprintln!("error: cannot start: {e} (try `aether-gateway demo --listen 127.0.0.1:8081 --admin-listen 127.0.0.1:9902 --relay-listen 127.0.0.1:3479`)");
                ExitCode::FAILURE
            }
        }
    })
}
