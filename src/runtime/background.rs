//! The background tasks of the running config: per service its discovery
//! and health probes, the JWKS refresh, the Redis connection.
//!
//! Each task belongs to one part of the config and stops when a reload
//! drops that part; a part a reload takes over unchanged (see
//! [`crate::config::reuse`]) keeps its tasks running, so its probe history
//! and discovered endpoints carry on.

use std::any::Any;
use std::collections::HashMap;
use std::sync::Arc;

use tokio_util::sync::CancellationToken;

use crate::config::Snapshot;
use crate::upstream::Service;

/// The tasks running for the parts of the current snapshot.
pub(crate) struct Background {
    stop: CancellationToken,
    /// By the part's address; the part itself is held so that address is
    /// never reused by a new part while its tasks are known here.
    running: HashMap<usize, (CancellationToken, Arc<dyn Any + Send + Sync>)>,
}

impl Background {
    /// Tasks that all stop with `stop` (the gateway's shutdown).
    pub(crate) fn new(stop: CancellationToken) -> Self {
        Background {
            stop,
            running: HashMap::new(),
        }
    }

    /// Start the tasks of the parts of `snap` that have none yet and stop
    /// those of parts it no longer has.
    pub(crate) fn sync(&mut self, snap: &Snapshot) {
        let mut wanted: Vec<(usize, Arc<dyn Any + Send + Sync>, Starter)> = Vec::new();
        for service in snap.dispatcher.services() {
            if service.discovery.is_some() || service.health_check.is_some() {
                let s = Arc::clone(service);
                wanted.push((
                    Arc::as_ptr(service) as usize,
                    Arc::clone(service) as _,
                    Box::new(move |stop| start_service(&s, &stop)),
                ));
            }
        }
        if let Some(remote) = snap.auth.as_ref().and_then(|a| a.remote()) {
            let r = Arc::clone(remote);
            wanted.push((
                Arc::as_ptr(remote) as usize,
                Arc::clone(remote) as _,
                Box::new(move |stop| {
                    tokio::spawn(r.run(stop));
                }),
            ));
        }
        if let Some(redis) = &snap.rate_limits.redis {
            let r = Arc::clone(redis);
            wanted.push((
                Arc::as_ptr(redis) as usize,
                Arc::clone(redis) as _,
                Box::new(move |stop| {
                    tokio::spawn(r.connect(stop));
                }),
            ));
        }
        let keep: std::collections::HashSet<usize> = wanted.iter().map(|w| w.0).collect();
        self.running.retain(|key, (token, _)| {
            let kept = keep.contains(key);
            if !kept {
                token.cancel();
            }
            kept
        });
        for (key, part, start) in wanted {
            if let std::collections::hash_map::Entry::Vacant(e) = self.running.entry(key) {
                let token = self.stop.child_token();
                start(token.clone());
                e.insert((token, part));
            }
        }
    }
}

type Starter = Box<dyn FnOnce(CancellationToken) + Send>;

/// A service's discovery (which swaps in new endpoint sets) and health
/// supervisor (one probe task per endpoint, following the sets).
fn start_service(service: &Arc<Service>, stop: &CancellationToken) {
    if let Some(source) = service.discovery.clone() {
        let (tx, mut rx) = tokio::sync::watch::channel(Arc::new(Vec::new()));
        tokio::spawn(source.run(tx, stop.clone()));
        let service = Arc::clone(service);
        let stop = stop.clone();
        tokio::spawn(async move {
            loop {
                tokio::select! {
                    r = rx.changed() => if r.is_err() { return },
                    () = stop.cancelled() => return,
                }
                let found = Arc::clone(&rx.borrow_and_update());
                service.update_endpoints(&found);
            }
        });
    }
    if service.health_check.is_some() {
        tokio::spawn(crate::health::supervise(Arc::clone(service), stop.clone()));
    }
}
