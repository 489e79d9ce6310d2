//! # lifeboat-testkit
//!
//! The one fake executor of the core's [`Command`]s. Every test world (the core's harness, its
//! determinism test and bench, the `engine_inputs` fuzz body, the simulator) runs what the
//! engines ask for through [`execute`]: it maps each command to the inputs its execution
//! reports (`Completed`, `ArtifactReceived`, `ShipFailed`, `ArtifactDiscovered`, `Probe`,
//! `WritePosition`, `Promoted`), in one `match` without a wildcard, so a new `Command` variant is handled
//! here and the compiler points at this one place.
//!
//! A world brings its [`Model`]: what its databases, links and files do with each command (the
//! outcome, the artifacts a backup cuts, the faults), and when each report arrives
//! ([`Model::When`]: a delay, a lane, an instant; the world decides delivery). Hooks that a plain
//! adapter answers with a bare completion default to [`Model::completes`]; file operations that
//! report nothing default to doing nothing. A hook may also report nothing now ([`Done::Later`],
//! [`Ship::Silent`]) when the world delivers the result itself, later or never.
//!
//! Like the core, the kit is pure: no clock, I/O, threads or RNG. Randomness stays in the models,
//! so a seed draws the same values in the same order as before.

#![forbid(unsafe_code)]

use lifeboat_core::protocol::{Command, Failure, Input, ProbeTarget};
use lifeboat_core::{
    ArtifactKey, ArtifactKind, ArtifactMeta, Checksum, DbId, Epoch, Lsn, OpId, SiteId,
};

/// A failure as an executor reports it.
pub fn failure(code: i32, message: impl Into<String>, permanent: bool) -> Failure {
    Failure {
        code,
        message: message.into(),
        permanent,
    }
}

/// How an operation ends, as far as this call reports it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Done<W> {
    /// `Completed { op, result }` reaches the site at `W`.
    At(W, Result<(), Failure>),
    /// Nothing now: the model reports the completion itself later, or never (an agent that
    /// died before reporting, a hook that hangs).
    Later,
}

impl<W> Done<W> {
    /// Success, reported at `when`.
    pub fn ok(when: W) -> Self {
        Done::At(when, Ok(()))
    }
}

/// What became of one `Ship`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Ship<W> {
    /// Copies reach the peer, each at its time with the checksum the receiver computes (the
    /// manifest's, or another one for a copy damaged on the way).
    Arrives(Vec<(W, Checksum)>),
    /// The transfer failed: `ShipFailed` reaches the sender at `W`.
    Fails(W, String),
    /// Nothing to report: lost without a word, or the model carries the copies itself and
    /// reports them as they land.
    Silent,
}

/// What one `TakeBackup` produced: the artifacts discovered (each reported when it is
/// found), then the operation's end.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Backup<W> {
    pub found: Vec<(W, ArtifactMeta)>,
    pub done: Done<W>,
}

/// A world's databases, links and files, as the executor sees them. Sites are indexes; `site`
/// is always the site whose engine issued the command.
pub trait Model {
    /// When a report reaches an engine. Consecutive reports to the same site with equal `When`
    /// are handed to [`Model::deliver`] together, in order.
    type When: Clone + PartialEq;

    /// Hand `inputs` (one or more, in order) to `site`'s engine at `when`.
    fn deliver(&mut self, site: usize, when: Self::When, inputs: Vec<Input>);

    /// How a command that the model does not model otherwise completes (the default of every
    /// hook below that reports a completion).
    fn completes(&mut self, site: usize, op: OpId) -> Done<Self::When>;

    /// Send an artifact to site `to`.
    fn ship(
        &mut self,
        site: usize,
        op: OpId,
        artifact: ArtifactMeta,
        to: SiteId,
    ) -> Ship<Self::When>;

    /// Apply an artifact to its database: a `Restore`, or a `Reseed` from a full (`reseed`).
    fn restore(
        &mut self,
        site: usize,
        op: OpId,
        artifact: ArtifactMeta,
        reseed: bool,
    ) -> Done<Self::When>;

    /// Take backups of `kind` (of every database when `db` is `None`).
    fn backup(
        &mut self,
        site: usize,
        op: OpId,
        db: Option<DbId>,
        kind: ArtifactKind,
    ) -> Backup<Self::When>;

    /// Probe the primary: the results, in the order they are reported.
    fn probe(&mut self, site: usize) -> (Self::When, Vec<(ProbeTarget, bool)>);

    /// The databases' write positions (none reported when empty).
    fn positions(&mut self, site: usize) -> (Self::When, Vec<(DbId, Lsn)>);

    /// Stop writes on this site's databases.
    fn fence(&mut self, site: usize, op: OpId) -> Done<Self::When> {
        self.completes(site, op)
    }

    /// Accept writes at `epoch`: `AllowWrites`, or `Promote` (`promote`) of the standbys.
    fn open_writes(
        &mut self,
        site: usize,
        op: OpId,
        epoch: Epoch,
        promote: bool,
    ) -> Done<Self::When> {
        let _ = (epoch, promote);
        self.completes(site, op)
    }

    /// `PromoteUntil`: promote the standbys at the position the chain restored, without
    /// anything the site holds beyond it (streamed WAL may come from after `until`).
    fn promote_until(
        &mut self,
        site: usize,
        op: OpId,
        epoch: Epoch,
        until: lifeboat_core::UtcMillis,
    ) -> Done<Self::When> {
        let _ = until;
        self.open_writes(site, op, epoch, true)
    }

    /// After a successful promotion: the position each database opened at, reported as
    /// `Promoted` before the completion. Empty (nothing reported) by default: a model whose
    /// promotion opens the databases where they were restored has nothing to add.
    fn promoted_positions(&mut self, site: usize) -> Vec<(DbId, Lsn)> {
        let _ = site;
        Vec::new()
    }

    /// Run the external fence against site `target`.
    fn external_fence(
        &mut self,
        site: usize,
        op: OpId,
        target: SiteId,
        epoch: Epoch,
    ) -> Done<Self::When> {
        let _ = (target, epoch);
        self.completes(site, op)
    }

    /// Restart the local database service.
    fn restart_service(&mut self, site: usize, op: OpId) -> Done<Self::When> {
        self.completes(site, op)
    }

    /// Check that the local database service answers.
    fn check_service(&mut self, site: usize, op: OpId) -> Done<Self::When> {
        self.completes(site, op)
    }

    /// Move the service identity to site `to`.
    fn switch_identity(
        &mut self,
        site: usize,
        op: OpId,
        to: SiteId,
        epoch: Epoch,
    ) -> Done<Self::When> {
        let _ = (to, epoch);
        self.completes(site, op)
    }

    /// Restore `chain` into a scratch copy up to `upto` and check it.
    fn drill(
        &mut self,
        site: usize,
        op: OpId,
        db: DbId,
        upto: Lsn,
        chain: &[ArtifactMeta],
    ) -> Done<Self::When> {
        let _ = (db, upto, chain);
        self.completes(site, op)
    }

    /// Rename an artifact's files for its new retry count (reports nothing).
    fn relabel(&mut self, site: usize, artifact: &ArtifactMeta) {
        let _ = (site, artifact);
    }

    /// Remove an artifact's files (reports nothing).
    fn discard(&mut self, site: usize, key: ArtifactKey) {
        let _ = (site, key);
    }

    /// Remove the database's artifacts that end before `before`, except `keep` (reports
    /// nothing).
    fn prune(&mut self, site: usize, db: DbId, before: Lsn, keep: &[ArtifactKey]) {
        let _ = (site, db, before, keep);
    }

    /// Keep an artifact aside (reports nothing).
    fn quarantine(&mut self, site: usize, artifact: &ArtifactMeta, reason: &str) {
        let _ = (site, artifact, reason);
    }

    /// Copy an accepted artifact into the point-in-time archive: when the copy is reported
    /// durable (`None`) or failed (`Some(why)`); nothing reported by default.
    fn archive(
        &mut self,
        site: usize,
        artifact: &ArtifactMeta,
    ) -> Option<(Self::When, Option<String>)> {
        let _ = (site, artifact);
        None
    }

    /// Restore a chain from the archive into scratch and check it (the archive's scheduled
    /// verification).
    fn archive_drill(
        &mut self,
        site: usize,
        op: OpId,
        db: DbId,
        upto: Lsn,
        chain: &[ArtifactMeta],
    ) -> Done<Self::When> {
        let _ = (db, upto, chain);
        self.completes(site, op)
    }

    /// Remove artifacts from the archive (reports nothing).
    fn archive_remove(&mut self, site: usize, db: DbId, keys: &[ArtifactKey]) {
        let _ = (site, db, keys);
    }

    /// Publish the logs the database finished on its own. None of the fake databases does;
    /// a model that does reports them with [`Model::deliver`].
    fn collect_logs(&mut self, site: usize, epoch: Epoch) {
        let _ = (site, epoch);
    }
}

/// Whether executing `cmd` reports anything back to its engine (a completion, probe results,
/// write positions): a world that holds commands before executing them keeps only these.
pub fn reports(cmd: &Command) -> bool {
    match cmd {
        Command::Ship { .. }
        | Command::Restore { .. }
        | Command::TakeBackup { .. }
        | Command::Reseed { .. }
        | Command::Fence { .. }
        | Command::AllowWrites { .. }
        | Command::Promote { .. }
        | Command::PromoteUntil { .. }
        | Command::ExternalFence { .. }
        | Command::RestartService { .. }
        | Command::SwitchIdentity { .. }
        | Command::Drill { .. }
        | Command::Probe
        | Command::SamplePositions
        | Command::CheckService { .. }
        | Command::Archive { .. }
        | Command::ArchiveDrill { .. } => true,
        Command::Relabel { .. }
        | Command::ArchiveRemove { .. }
        | Command::Discard { .. }
        | Command::Prune { .. }
        | Command::Quarantine { .. }
        | Command::CollectLogs { .. } => false,
    }
}

/// Execute a command `site`'s engine issued against `model`, and deliver what it reports.
/// A promotion's completion, after the positions each database opened at (when the model
/// knows them: the loss bounds count from there).
fn promoted<M: Model>(
    model: &mut M,
    out: &mut Reports<M::When>,
    site: usize,
    op: OpId,
    done: Done<M::When>,
) {
    if let Done::At(when, Ok(())) = &done {
        let positions = model.promoted_positions(site);
        if !positions.is_empty() {
            out.push(site, when.clone(), Input::Promoted { op, positions });
        }
    }
    out.done(site, op, done);
}

pub fn execute<M: Model>(model: &mut M, site: usize, cmd: Command) {
    let mut out = Reports::default();
    match cmd {
        Command::Ship { op, artifact, to } => match model.ship(site, op, artifact, to) {
            Ship::Arrives(copies) => {
                let from = SiteId(site as u16);
                for (when, computed) in copies {
                    let input = Input::ArtifactReceived {
                        meta: artifact,
                        computed,
                        from,
                    };
                    out.push(usize::from(to.0), when, input);
                }
            }
            Ship::Fails(when, reason) => {
                let key = artifact.key;
                let input = Input::ShipFailed {
                    op,
                    key,
                    to,
                    reason,
                };
                out.push(site, when, input);
            }
            Ship::Silent => {}
        },
        Command::Restore { op, artifact } => {
            let done = model.restore(site, op, artifact, false);
            out.done(site, op, done);
        }
        Command::Reseed { op, full } => {
            let done = model.restore(site, op, full, true);
            out.done(site, op, done);
        }
        Command::TakeBackup { op, db, kind } => {
            let b = model.backup(site, op, db, kind);
            for (when, meta) in b.found {
                out.push(site, when, Input::ArtifactDiscovered(meta));
            }
            out.done(site, op, b.done);
        }
        Command::Probe => {
            let (when, results) = model.probe(site);
            for (target, ok) in results {
                out.push(site, when.clone(), Input::Probe { target, ok });
            }
        }
        Command::SamplePositions => {
            let (when, positions) = model.positions(site);
            for (db, lsn) in positions {
                out.push(site, when.clone(), Input::WritePosition { db, lsn });
            }
        }
        Command::Fence { op } => {
            let done = model.fence(site, op);
            out.done(site, op, done);
        }
        Command::AllowWrites { op, epoch } => {
            let done = model.open_writes(site, op, epoch, false);
            out.done(site, op, done);
        }
        Command::Promote { op, epoch } => {
            let done = model.open_writes(site, op, epoch, true);
            promoted(model, &mut out, site, op, done);
        }
        Command::PromoteUntil { op, epoch, until } => {
            let done = model.promote_until(site, op, epoch, until);
            promoted(model, &mut out, site, op, done);
        }
        Command::ExternalFence { op, target, epoch } => {
            let done = model.external_fence(site, op, target, epoch);
            out.done(site, op, done);
        }
        Command::RestartService { op } => {
            let done = model.restart_service(site, op);
            out.done(site, op, done);
        }
        Command::CheckService { op } => {
            let done = model.check_service(site, op);
            out.done(site, op, done);
        }
        Command::SwitchIdentity { op, to, epoch } => {
            let done = model.switch_identity(site, op, to, epoch);
            out.done(site, op, done);
        }
        Command::Drill {
            op,
            db,
            upto,
            chain,
        } => {
            let done = model.drill(site, op, db, upto, &chain);
            out.done(site, op, done);
        }
        Command::Relabel { artifact } => model.relabel(site, &artifact),
        Command::Discard { key } => model.discard(site, key),
        Command::Prune { db, before, keep } => model.prune(site, db, before, &keep),
        Command::Quarantine { artifact, reason } => model.quarantine(site, &artifact, &reason),
        Command::CollectLogs { epoch } => model.collect_logs(site, epoch),
        Command::Archive { artifact } => {
            if let Some((when, error)) = model.archive(site, &artifact) {
                let key = artifact.key;
                out.push(site, when, Input::Archived { key, error });
            }
        }
        Command::ArchiveRemove { db, keys } => model.archive_remove(site, db, &keys),
        Command::ArchiveDrill {
            op,
            db,
            upto,
            chain,
        } => {
            let done = model.archive_drill(site, op, db, upto, &chain);
            out.done(site, op, done);
        }
    }
    out.deliver(model);
}

/// The reports of one command, in order, until they are delivered.
struct Reports<W> {
    list: Vec<(usize, W, Input)>,
}

impl<W> Default for Reports<W> {
    fn default() -> Self {
        Reports { list: Vec::new() }
    }
}

impl<W: PartialEq> Reports<W> {
    fn push(&mut self, site: usize, when: W, input: Input) {
        self.list.push((site, when, input));
    }

    fn done(&mut self, site: usize, op: OpId, done: Done<W>) {
        if let Done::At(when, result) = done {
            self.push(site, when, Input::Completed { op, result });
        }
    }

    /// Deliver in order, consecutive reports to one site at one time together.
    fn deliver<M: Model<When = W>>(self, model: &mut M) {
        let mut batch: Option<(usize, W, Vec<Input>)> = None;
        for (site, when, input) in self.list {
            match &mut batch {
                Some((s, w, inputs)) if *s == site && *w == when => inputs.push(input),
                _ => {
                    if let Some((s, w, inputs)) = batch.replace((site, when, vec![input])) {
                        model.deliver(s, w, inputs);
                    }
                }
            }
        }
        if let Some((s, w, inputs)) = batch {
            model.deliver(s, w, inputs);
        }
    }
}
