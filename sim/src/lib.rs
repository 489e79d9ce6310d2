//! # lifeboat-sim
//!
//! A deterministic discrete-event simulator in the manner of FoundationDB's simulation and
//! TigerBeetle's VOPR: one seed decides the whole world. It runs the **real** engines of
//! `lifeboat-core` — both site engines and the arbiter (or the etcd translation against a
//! model of etcd), unchanged — against a simulated world
//! (clients, databases, backup jobs, disks, links, clocks), injects named faults, and checks the
//! failover invariants with oracles that are separate from the engines.
//!
//! ```text
//! spec.rs     what to run: configuration, world, fault schedule source, expectations
//! swarm.rs    swarm testing: each seed enables a random subset of fault modes and intensities
//! world.rs    virtual time, the event queue, engines, clients, the one-writer oracle
//! exec.rs     the simulated adapter: commands executed with their faults, crash and restart
//! faults.rs   applying a schedule's faults     operator.rs  confirmations, forced failovers
//! node.rs     an engine process: clock, journal on the simulated disk, replay
//! db.rs       the database model: positions on lineages (divergence shows)
//! net.rs      links and network faults        clock.rs   drifting, stepping clocks
//! etcd.rs     the witness on etcd: the store, the sites' translations, calls on the wire
//! oracle/     the oracles                     trace.rs   the trace hash, the last events
//! sweep.rs    many seeds on all cores, the summary      shrink.rs  minimal fault schedules
//! ```

#![forbid(unsafe_code)]

pub mod clock;
pub mod db;
pub mod etcd;
pub mod exec;
pub mod faults;
pub mod net;
pub mod node;
pub mod operator;
pub mod oracle;
pub mod outcome;
pub mod queue;
pub mod shrink;
pub mod spec;
pub mod swarm;
pub mod sweep;
pub mod trace;
pub mod world;

pub use outcome::{RpoSample, SeedOutcome, Violation};
pub use spec::{FaultChoice, RunSpec};
pub use sweep::{run_seeds, Summary};
pub use trace::mix;

pub(crate) fn lifeboat_scenarios_span(ms: lifeboat_core::Millis) -> String {
    lifeboat_scenarios::format_span(ms)
}
