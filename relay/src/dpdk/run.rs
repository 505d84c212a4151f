//! The DPDK backend's entry point: `photon-relay run --backend dpdk`.

use std::path::Path;
use std::sync::atomic::AtomicBool;
use std::sync::Arc;
use std::time::Duration;

use photon_protocol::identity::Identity;
use ring::rand::SystemRandom;

use super::control_core;
use super::dataplane::{DataPlane, StartError};
use crate::control::{self, Control, ControlShared};
use crate::ops::config::Config;
use crate::ops::counters::{self, Counter};
use crate::ops::metrics::{self, render};
use crate::ops::stages::StageLog;

/// `photon-relay run --backend dpdk`: starts the EAL, the data plane and `/metrics`, runs the
/// control core on this thread until `quit`, then stops the data cores (every mbuf returned).
/// Errors say what to change.
pub fn run(cfg: &Config, identity: Identity, quit: &AtomicBool) -> Result<(), String> {
    // Opened first: a bad path fails before the EAL and the ports start.
    let mut stages = match cfg.stage_log() {
        Some((path, node)) => Some(
            StageLog::open(&path, &node)
                .map_err(|e| format!("cannot open perf.stage_log {}: {e}", path.display()))?,
        ),
        None => None,
    };
    let eal = photon_dpdk::Eal::init(&cfg.eal_args()).map_err(|e| {
        let hint = if cfg.eal.no_huge {
            "check the [eal] and [[port]] settings"
        } else {
            "no hugepages? reserve them with scripts/setup.sh, or set eal.no_huge = true and \
             eal.memory_mb = 1024 (testing only); a wrong [[port]].pci address also fails here \
             (list devices with `dpdk-devbind.py -s`), or use --backend socket"
        };
        format!("{e}\n  hint: {hint}")
    })?;
    let eal: &'static photon_dpdk::Eal = Box::leak(Box::new(eal));
    let (dataplane, mut link) = DataPlane::start(eal, cfg).map_err(|e| match &e {
        StartError::Port { name, .. } => format!(
            "{e}\n  hint: [[port]] name {name:?} must be the DPDK device name: the PCI address \
             given as `pci` (bound to vfio-pci by scripts/setup.sh) or the vdev's name"
        ),
        _ => e.to_string(),
    })?;
    let (peers, unresolved) = cfg.peer_specs();
    let (arp_peers, unreachable): (Vec<_>, Vec<_>) =
        unresolved.into_iter().partition(|u| u.next_hop.is_some());
    if !unreachable.is_empty() {
        tracing::warn!(
            peers = ?unreachable.iter().map(|u| u.spec.node_id).collect::<Vec<_>>(),
            "peer relays off-link with no relay.gateway have no next hop: they are not \
             reachable; set relay.gateway (or put them on-link)"
        );
    }
    if !arp_peers.is_empty() {
        tracing::info!(
            peers = ?link.unresolved_peers,
            next_hops = ?arp_peers.iter().filter_map(|u| u.next_hop).collect::<Vec<_>>(),
            "peer relays without a [[neighbour]] MAC for their next hop: resolving by ARP \
             (they join the forwarding table when the next hop answers)"
        );
    }
    let mut settings = cfg.control_settings().map_err(|e| e.to_string())?;
    // Cached fragments pin pool mbufs here: the pools were sized for dataplane.repair_mbufs.
    settings.repair_cache_fragments = settings
        .repair_cache_fragments
        .min(cfg.dataplane.repair_mbufs as usize)
        .max(1);
    let mut control = Control::new(
        identity,
        link.local.clone(),
        peers,
        settings,
        Arc::new(SystemRandom::new()),
    )
    .map_err(|e| e.to_string())?;
    control
        .resolve_by_arp(
            control::ArpResolver::new(cfg.static_neighbours()),
            arp_peers
                .into_iter()
                .filter_map(|u| Some((u.spec, u.next_hop?)))
                .collect(),
            control::unix_ms(),
        )
        .map_err(|e| format!("ARP resolution of the peer relays' next hops: {e}"))?;
    let shared = Arc::new(ControlShared::new());
    let cores = dataplane.counters().to_vec();
    let s = shared.clone();
    let metrics = metrics::serve(&cfg.metrics, Arc::new(move || render(&cores, Some(&s))))?;
    tracing::info!(cores = ?cfg.relay.cores, "DPDK data path running");
    let roster_watch = photon_ops::roster::RosterWatcher::new(
        &cfg.roster,
        Path::new("."),
        control.roster().cloned(),
    );
    let drops = control_core::run_with_roster(
        &mut link,
        &mut control,
        &shared,
        quit,
        Duration::from_millis(100),
        stages.as_mut(),
        roster_watch,
    );
    drop(stages);
    tracing::info!(?drops, "control core stopped");
    let finals = dataplane.stop()?;
    drop(link);
    if let Some(m) = metrics {
        m.stop();
    }
    let total = finals
        .iter()
        .fold(counters::LocalCounters::default(), |mut a, c| {
            for counter in Counter::all() {
                a.add(counter, c.get(counter));
            }
            a
        });
    total.log_stopped();
    Ok(())
}
