//! Hot reload: on SIGHUP, on a change of the config file and on
//! `POST /admin/reload`, the file is read and validated again; a valid one
//! is swapped in atomically, an invalid one leaves the running config as it
//! is and its error (file:line) is logged and shown on the admin API.
//!
//! - The swap is one `ArcSwap::store`: a request loads the snapshot once and
//!   runs to its end on it, so in-flight requests and open WebSockets finish
//!   on the old config while new requests see the new one.
//! - Services, rate-limit rules and the Redis backend whose settings did not
//!   change are taken over (see [`crate::config::reuse`]): pools, health,
//!   counters and connections carry on. A JWKS URL that did not change hands
//!   its key set to the new config, so no request waits for a fetch.
//! - Listener settings (`[server]` addresses and limits, `[admin] listen`,
//!   `[relay]`) are bound at start: a reload that changes them applies the
//!   rest and reports them under `restart_required`.
//! - Reloads run one at a time on this module's task; the file is read and
//!   compiled on the blocking pool (a GeoIP database can take a while).

use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use serde::Serialize;
use tokio::sync::{mpsc, oneshot};
use tokio_util::sync::CancellationToken;

use super::background::Background;
use crate::config::{ServerSettings, Snapshot};
use crate::dispatch::pipeline::Shared;

/// How the admin API and the signal handler ask for a reload, and what it
/// reads of the last one.
#[derive(Clone)]
pub(crate) struct ReloadHandle {
    tx: mpsc::Sender<Request>,
    status: Arc<Mutex<ReloadStatus>>,
}

pub(crate) struct Request {
    trigger: &'static str,
    reply: Option<oneshot::Sender<Attempt>>,
}

/// The config in effect and how the last reload went.
#[derive(Debug, Clone, Serialize)]
pub(crate) struct ReloadStatus {
    /// The config file (`None`: the built-in demo config).
    pub file: Option<PathBuf>,
    /// 1 for the config the gateway started with, +1 per applied reload.
    pub generation: u64,
    /// When the config in effect was loaded.
    pub loaded_at_unix: u64,
    /// Reloads applied and refused since start.
    pub reloads: u64,
    pub failed_reloads: u64,
    /// The last attempt, applied or not.
    pub last_attempt: Option<Attempt>,
}

/// One reload attempt.
#[derive(Debug, Clone, Serialize)]
pub(crate) struct Attempt {
    pub at_unix: u64,
    /// `SIGHUP`, `file change` or `admin`.
    pub trigger: &'static str,
    pub applied: bool,
    /// Why it was refused (`file:line:column: field: message`).
    pub error: Option<String>,
    /// The generation in effect after the attempt.
    pub generation: u64,
    pub warnings: Vec<String>,
    /// Changed settings that only take effect at restart.
    pub restart_required: Vec<String>,
}

impl ReloadHandle {
    /// A handle and the receiver [`run`] serves.
    pub(crate) fn new(file: Option<PathBuf>) -> (Self, mpsc::Receiver<Request>) {
        let (tx, rx) = mpsc::channel(16);
        let status = ReloadStatus {
            file,
            generation: 1,
            loaded_at_unix: unix_now(),
            reloads: 0,
            failed_reloads: 0,
            last_attempt: None,
        };
        (
            ReloadHandle {
                tx,
                status: Arc::new(Mutex::new(status)),
            },
            rx,
        )
    }

    /// Reload now and wait for the outcome (`None`: the gateway is stopping).
    pub(crate) async fn reload(&self, trigger: &'static str) -> Option<Attempt> {
        let (reply, rx) = oneshot::channel();
        self.tx
            .send(Request {
                trigger,
                reply: Some(reply),
            })
            .await
            .ok()?;
        rx.await.ok()
    }

    /// Ask for a reload without waiting (dropped when one is already queued
    /// and the queue is full: it would read the same file).
    fn request(&self, trigger: &'static str) {
        let _ = self.tx.try_send(Request {
            trigger,
            reply: None,
        });
    }

    /// The config in effect and the last attempt.
    pub(crate) fn status(&self) -> ReloadStatus {
        self.status
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }
}

/// The config file and how it looked when the running config was read.
pub(crate) struct ConfigFile {
    path: PathBuf,
    /// How the file looked when a reload (of any trigger) last read it:
    /// the watcher compares with this, so a SIGHUP or admin reload is not
    /// followed by a second one for the same file.
    stamp: Arc<Mutex<Option<Stamp>>>,
}

impl ConfigFile {
    /// Taken when the gateway starts, before any task runs: a change made
    /// after this point is a change.
    pub(crate) fn new(path: PathBuf) -> Self {
        let stamp = Arc::new(Mutex::new(stamp(&path)));
        ConfigFile { path, stamp }
    }

    /// Where it is.
    pub(crate) fn path(&self) -> &std::path::Path {
        &self.path
    }
}

/// What the reload task needs besides the shared state.
pub(crate) struct Reloader {
    pub(crate) file: Option<ConfigFile>,
    /// The listener settings the process was started with.
    pub(crate) server: ServerSettings,
    pub(crate) background: Background,
}

/// Serve reload requests until `stop`; also watch the file and SIGHUP.
pub(crate) async fn run(
    mut reloader: Reloader,
    mut rx: mpsc::Receiver<Request>,
    shared: Arc<Shared>,
    stop: CancellationToken,
) {
    let handle = shared.reload.clone();
    spawn_sighup(handle.clone(), stop.clone());
    if let Some(file) = &reloader.file
        && reloader.server.reload_on_change
    {
        tokio::spawn(watch(
            file.path.clone(),
            Arc::clone(&file.stamp),
            reloader.server.reload_check_interval,
            handle.clone(),
            stop.clone(),
        ));
    }
    loop {
        let req = tokio::select! {
            r = rx.recv() => match r { Some(r) => r, None => return },
            () = stop.cancelled() => return,
        };
        let attempt = reload_once(&mut reloader, &shared, req.trigger).await;
        {
            let mut s = handle.status.lock().unwrap_or_else(|p| p.into_inner());
            if attempt.applied {
                s.generation = attempt.generation;
                s.loaded_at_unix = attempt.at_unix;
                s.reloads += 1;
            } else {
                s.failed_reloads += 1;
            }
            s.last_attempt = Some(attempt.clone());
        }
        if let Some(reply) = req.reply {
            let _ = reply.send(attempt);
        }
    }
}

async fn reload_once(
    reloader: &mut Reloader,
    shared: &Arc<Shared>,
    trigger: &'static str,
) -> Attempt {
    let generation = shared.reload.status().generation;
    let mut attempt = Attempt {
        at_unix: unix_now(),
        trigger,
        applied: false,
        error: None,
        generation,
        warnings: Vec::new(),
        restart_required: Vec::new(),
    };
    let Some((file, read_stamp)) = reloader
        .file
        .as_ref()
        .map(|f| (f.path.clone(), Arc::clone(&f.stamp)))
    else {
        attempt.error = Some(
            "the gateway runs the built-in demo config: there is no file to reload (start it with --config FILE)"
                .to_owned(),
        );
        tracing::warn!(trigger, "reload asked for, but there is no config file");
        return attempt;
    };
    let running = shared.snapshot.load_full();
    let components = running.components.clone();
    let parsed = tokio::task::spawn_blocking(move || {
        // Taken before the read: a write after it is seen as a change.
        *read_stamp.lock().unwrap_or_else(|p| p.into_inner()) = stamp(&file);
        let text = crate::config::read_text(&file).map_err(|e| e.to_string())?;
        crate::config::parse_reusing(
            &text,
            &file,
            Arc::new(crate::clock::SystemClock),
            Some(&components),
        )
        .map_err(|e| e.to_string())
    })
    .await
    .unwrap_or_else(|e| Err(format!("the config build panicked: {e}")));
    let cfg = match parsed.and_then(|cfg| refuse_shrinking(&running, cfg)) {
        Ok(cfg) => cfg,
        Err(e) => {
            tracing::error!(trigger, error = %e, "config reload refused: the running config stays");
            attempt.error = Some(e);
            return attempt;
        }
    };
    attempt.restart_required = restart_required(&reloader.server, &cfg.server);
    // The listener's certificates: swapped into the running store (the new
    // config's parse has read and checked the files).
    match (&reloader.server.tls, &cfg.server.tls) {
        (Some(running), Some(new)) => {
            running.replace(new);
            if running.reload_interval() != new.reload_interval() {
                attempt
                    .restart_required
                    .push("server.tls_reload_interval_seconds".to_owned());
            }
        }
        (None, None) => {}
        _ => attempt
            .restart_required
            .push("server.tls (TLS on or off)".to_owned()),
    }
    attempt.warnings = cfg.warnings;
    let mut next = cfg.snapshot;
    carry_over(&running, &mut next, shared);
    if let (Some(relay), Some(cfg)) = (&shared.relay, &cfg.server.relay) {
        relay.update_credentials(cfg);
    }
    let kept = next
        .dispatcher
        .services()
        .filter(|s| running.dispatcher.services().any(|o| Arc::ptr_eq(o, s)))
        .count();
    let services = next.dispatcher.services().count();
    shared.snapshot.store(Arc::new(next));
    reloader.background.sync(&shared.snapshot.load());
    attempt.applied = true;
    attempt.generation = generation + 1;
    for w in &attempt.warnings {
        tracing::warn!("{w}");
    }
    if !attempt.restart_required.is_empty() {
        tracing::warn!(
            settings = ?attempt.restart_required,
            "changed settings take effect at restart; the rest of the config is applied"
        );
    }
    tracing::info!(
        trigger,
        generation = attempt.generation,
        services,
        services_kept = kept,
        routes = shared.snapshot.load().router.routes().len(),
        "config reloaded"
    );
    attempt
}

/// What no reload may do, though a fresh start may: leave the gateway with
/// no routes (a file truncated by an in-place write parses; a gateway
/// that answers 404 to everything is an outage), or take the token off an
/// admin API that stays bound.
fn refuse_shrinking(
    running: &Snapshot,
    cfg: crate::config::GatewayConfig,
) -> Result<crate::config::GatewayConfig, String> {
    if !running.router.routes().is_empty() && cfg.snapshot.router.routes().is_empty() {
        return Err(
            "the new file has no [[routes]] (truncated?): a reload never leaves the gateway without routes; restart it to run without any"
                .to_owned(),
        );
    }
    if running.admin_token.is_some() && cfg.snapshot.admin_token.is_none() {
        return Err(
            "admin: the new file has no token_env / token_file: a reload never opens a running admin API; restart it to run without a token"
                .to_owned(),
        );
    }
    Ok(cfg)
}

/// What a new snapshot takes from the running gateway besides its reused
/// parts: the JWKS key set of an unchanged URL, the relay's bound port.
fn carry_over(running: &Snapshot, next: &mut Snapshot, shared: &Shared) {
    if let (Some(new), Some(old)) = (
        next.auth.as_ref().and_then(|a| a.remote()),
        running.auth.as_ref().and_then(|a| a.remote()),
    ) && !Arc::ptr_eq(new, old)
    {
        new.adopt(old);
    }
    if let (Some(voice), Some(relay)) = (&next.voice, &shared.relay) {
        voice.set_bound_port(relay.udp_addr().port());
    }
}

/// The relay's settings that are bound at start: all but its credentials
/// (realm, secrets, static users, nonce lifetime), which a reload swaps in.
fn relay_fixed(relay: Option<&crate::relay::RelayConfig>) -> String {
    // Field by field: RelayConfig's Debug leaves out what it must not print.
    relay.map_or_else(String::new, |r| {
        format!(
            "{:?}",
            (
                r.listen,
                r.tcp,
                r.relay_bind,
                r.relay_bind_v6,
                r.ports,
                &r.turn,
                r.challenges_per_second,
                r.challenge_burst,
                r.max_tcp_connections,
                r.max_tcp_connections_per_address,
                r.revocation_seconds,
            )
        )
    })
}

/// Settings bound at start that the new file changes.
fn restart_required(running: &ServerSettings, new: &ServerSettings) -> Vec<String> {
    let mut out = Vec::new();
    macro_rules! compare {
        ($($field:ident => $name:literal),* $(,)?) => {
            $(
                if format!("{:?}", running.$field) != format!("{:?}", new.$field) {
                    out.push($name.to_owned());
                }
            )*
        };
    }
    compare! {
        listen => "server.listen",
        max_connections => "server.max_connections",
        header_read_timeout => "server.header_read_timeout_ms",
        max_header_bytes => "server.max_header_bytes",
        shutdown_drain => "server.shutdown_drain_seconds",
        shutdown_delay => "server.shutdown_delay_seconds",
        worker_threads => "server.worker_threads",
        http2_max_concurrent_streams => "server.http2_max_concurrent_streams",
        idle_timeout => "server.idle_timeout_ms",
        tunnel_idle_timeout => "server.tunnel_idle_timeout_ms",
        send_timeout => "server.send_timeout_ms",
        reload_on_change => "server.reload_on_change",
        reload_check_interval => "server.reload_check_interval_ms",
        admin_listen => "admin.listen",
    }
    // The subscriber and the span exporter are the process's, set up once;
    // `access_log` lives in the snapshot and is swapped with it.
    let (old, log) = (&running.log, &new.log);
    for (changed, name) in [
        (old.format != log.format, "log.format"),
        (old.level != log.level, "log.level"),
        (old.otlp_endpoint != log.otlp_endpoint, "log.otlp_endpoint"),
    ] {
        if changed {
            out.push(name.to_owned());
        }
    }
    if relay_fixed(running.relay.as_ref()) != relay_fixed(new.relay.as_ref()) {
        out.push("relay".to_owned());
    }
    out
}

#[cfg(unix)]
fn spawn_sighup(handle: ReloadHandle, stop: CancellationToken) {
    use tokio::signal::unix::{SignalKind, signal};
    // Installed even without a file: SIGHUP's default action would end the
    // process, which no operator sending it means.
    let mut hup = match signal(SignalKind::hangup()) {
        Ok(s) => s,
        Err(e) => {
            tracing::warn!(error = %e, "cannot listen for SIGHUP: reload by file change or POST /admin/reload");
            return;
        }
    };
    tokio::spawn(async move {
        loop {
            tokio::select! {
                r = hup.recv() => if r.is_none() { return },
                () = stop.cancelled() => return,
            }
            tracing::info!("SIGHUP: reloading the config");
            handle.request("SIGHUP");
        }
    });
}

#[cfg(not(unix))]
fn spawn_sighup(_: ReloadHandle, _: CancellationToken) {}

/// What tells a changed file: modification time, length and (on Unix) the
/// inode, so an editor's rename-over or a ConfigMap's symlink swap counts.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Stamp(Option<SystemTime>, u64, u64);

fn stamp(path: &std::path::Path) -> Option<Stamp> {
    // metadata() follows symlinks: the target's change is what counts.
    let m = std::fs::metadata(path).ok()?;
    #[cfg(unix)]
    let ino = std::os::unix::fs::MetadataExt::ino(&m);
    #[cfg(not(unix))]
    let ino = 0;
    Some(Stamp(m.modified().ok(), m.len(), ino))
}

/// Poll the file; a change is reloaded once the file has looked the same
/// for one more interval (debounce: an editor writing in pieces, or a
/// deploy tool copying, is not read half-way).
///
/// Polling rather than inotify: a watch on the file itself is lost when an
/// editor or a ConfigMap update replaces it, and one stat a second costs
/// nothing.
async fn watch(
    path: PathBuf,
    seen: Arc<Mutex<Option<Stamp>>>,
    interval: Duration,
    handle: ReloadHandle,
    stop: CancellationToken,
) {
    let mut pending: Option<Stamp> = None;
    let mut missing_said = false;
    loop {
        tokio::select! {
            () = tokio::time::sleep(interval) => {}
            () = stop.cancelled() => return,
        }
        let Some(now) = stamp(&path) else {
            if !missing_said {
                tracing::warn!(file = %path.display(), "config file is gone: the running config stays");
                missing_said = true;
            }
            pending = None;
            continue;
        };
        missing_said = false;
        if seen.lock().unwrap_or_else(|p| p.into_inner()).as_ref() == Some(&now) {
            pending = None;
            continue;
        }
        if pending.as_ref() == Some(&now) {
            tracing::info!(file = %path.display(), "config file changed: reloading");
            // Set here too: until the reload task reads the file, this
            // change is being handled.
            *seen.lock().unwrap_or_else(|p| p.into_inner()) = Some(now);
            pending = None;
            handle.request("file change");
        } else {
            pending = Some(now);
        }
    }
}

fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}
