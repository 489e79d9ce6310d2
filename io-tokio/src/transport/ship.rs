//! Artifact streaming over a ship link: the sender's and the receiver's half of one transfer.
//!
//! Memory stays bounded on both sides: a disk thread and the network task hand chunks over a
//! channel of `window` chunks, so neither side holds more than `window + 2` chunks of a file.
//! The receiver hashes (xxh3-64) as the bytes arrive; on resume it re-hashes the prefix it already
//! holds, so the checksum it reports is always over the whole file.

use super::frame::{FrameError, FrameKind, Payload};
use super::inbox::{fsync_dir, Claim, Inbox};
use super::wire::{Frame, FrameReader, FrameWriter};
use super::TransportConfig;
use crate::drivers::manifest::{manifest_path, stage_manifest, Manifest};
use lifeboat_core::{ArtifactKey, ArtifactMeta, Checksum};
use std::fmt;
use std::fs::{self, File, OpenOptions};
use std::io::{self, Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::sync::mpsc;
use xxhash_rust::xxh3::Xxh3Default;

/// How one `ship` went.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub struct Shipped {
    /// The receiver already held this many bytes (a resumed transfer when non-zero).
    pub resumed_from: u64,
    /// Bytes sent by the attempt that completed.
    pub bytes_sent: u64,
    /// The checksum the receiver computed over the whole file. Compare it with the manifest's to
    /// know at once whether the copy is good; the receiving engine decides and acks.
    pub computed: Checksum,
}

/// An artifact's identity in words: `transaction log of db#0 [100, 200) epoch 3`.
pub(crate) struct KeyText<'a>(pub &'a ArtifactKey);

impl fmt::Display for KeyText<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let k = self.0;
        write!(
            f,
            "{} of {} [{}, {}) epoch {}",
            k.kind.text_word(),
            k.db,
            k.lsn_start,
            k.lsn_end,
            k.epoch
        )
    }
}

/// Why one ship attempt failed.
#[derive(Debug, thiserror::Error)]
pub enum ShipErrorKind {
    #[error("cannot read the artifact file: {0}; check the outbox")]
    Source(io::Error),
    #[error(
        "the file holds {actual} bytes but its manifest says {expected}; \
         the file or its manifest is wrong, take the backup again"
    )]
    SizeMismatch { actual: u64, expected: u64 },
    #[error("cannot connect: {0}")]
    Connect(io::Error),
    #[error("no connection within {0:?}")]
    ConnectTimeout(Duration),
    #[error("handshake failed: {0}")]
    Handshake(String),
    #[error("the receiver refused the artifact: {0}")]
    Refused(String),
    #[error("the receiver closed the link: {0}; the next attempt resumes where it stopped")]
    Closed(String),
    #[error("the link failed: {0}; the next attempt resumes where the receiver stopped")]
    Link(#[from] FrameError),
    #[error("protocol error: the receiver answered with a {0:?} frame")]
    Unexpected(FrameKind),
}

impl ShipErrorKind {
    /// Whether trying again soon may help (network trouble), or not (a bad file, a refusal).
    pub fn is_retryable(&self) -> bool {
        matches!(
            self,
            ShipErrorKind::Connect(_)
                | ShipErrorKind::ConnectTimeout(_)
                | ShipErrorKind::Link(_)
                | ShipErrorKind::Closed(_)
                | ShipErrorKind::Unexpected(_)
        )
    }
}

/// How a send failed, and whether the receiver had answered the offer: a link kept idle between
/// transfers (`dialer.rs`) that fails before any answer was closed meanwhile, and the artifact
/// is offered again on a new link.
#[derive(Debug)]
pub(crate) struct ShipFailure {
    pub kind: ShipErrorKind,
    pub unanswered: bool,
}

impl From<ShipErrorKind> for ShipFailure {
    fn from(kind: ShipErrorKind) -> ShipFailure {
        ShipFailure {
            kind,
            unanswered: false,
        }
    }
}

/// Send one artifact over an open ship link.
pub(crate) async fn send_artifact<R, W>(
    reader: &mut FrameReader<R>,
    writer: &mut FrameWriter<W>,
    meta: &ArtifactMeta,
    path: &Path,
    cfg: &TransportConfig,
    transfers: &super::Transfers,
) -> Result<Shipped, ShipFailure>
where
    R: AsyncRead + Unpin,
    W: AsyncWrite + Unpin,
{
    let source = open_source(meta, path).await?;
    let offset = offer(reader, writer, meta, cfg)
        .await
        .map_err(|kind| ShipFailure {
            kind,
            unanswered: true,
        })?;
    Ok(stream(reader, writer, meta, path, cfg, transfers, source, offset).await?)
}

/// The artifact's file, open, once its size is the manifest's.
async fn open_source(meta: &ArtifactMeta, path: &Path) -> Result<File, ShipErrorKind> {
    let (source, actual) = {
        let path = path.to_path_buf();
        blocking(move || {
            let file = File::open(path)?;
            let len = file.metadata()?.len();
            Ok((file, len))
        })
        .await
        .map_err(ShipErrorKind::Source)?
    };
    if actual != meta.size {
        return Err(ShipErrorKind::SizeMismatch {
            actual,
            expected: meta.size,
        });
    }

    Ok(source)
}

/// Offer `meta` on a link: the offset the receiver resumes from.
async fn offer<R, W>(
    reader: &mut FrameReader<R>,
    writer: &mut FrameWriter<W>,
    meta: &ArtifactMeta,
    cfg: &TransportConfig,
) -> Result<u64, ShipErrorKind>
where
    R: AsyncRead + Unpin,
    W: AsyncWrite + Unpin,
{
    writer.send(&Frame::ShipOffer(*meta)).await?;
    match reader.next(cfg.io_timeout).await? {
        Frame::ShipResume { offset } => {
            check_resume(offset, meta.size).map_err(|e| ShipErrorKind::Refused(e.to_string()))?;
            Ok(offset)
        }
        Frame::Close { reason } => Err(ShipErrorKind::Refused(reason)),
        other => Err(ShipErrorKind::Unexpected(other.kind())),
    }
}

/// The artifact's bytes from `offset` on, then the receiver's confirmation.
#[allow(clippy::too_many_arguments)]
async fn stream<R, W>(
    reader: &mut FrameReader<R>,
    writer: &mut FrameWriter<W>,
    meta: &ArtifactMeta,
    path: &Path,
    cfg: &TransportConfig,
    transfers: &super::Transfers,
    source: File,
    offset: u64,
) -> Result<Shipped, ShipErrorKind>
where
    R: AsyncRead + Unpin,
    W: AsyncWrite + Unpin,
{
    // A disk thread reads ahead by at most `window` chunks; the network drains them.
    let (tx, mut rx) = mpsc::channel::<io::Result<Vec<u8>>>(cfg.window.max(1));
    let chunk = cfg.chunk_len();
    let remaining = meta.size - offset;
    tokio::task::spawn_blocking(move || read_ahead(source, offset, remaining, chunk, tx));
    let progress = transfers.start(
        super::Direction::Send,
        path.file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default(),
        meta.size,
        offset,
    );
    let mut sent = 0u64;
    while let Some(next) = rx.recv().await {
        let bytes = next.map_err(ShipErrorKind::Source)?;
        if let Err(e) = writer.send_chunk(&bytes).await {
            return Err(explain_failure(reader, e).await);
        }
        sent += bytes.len() as u64;
        super::buffers::give(bytes);
        progress.set(offset + sent);
    }
    if sent != remaining {
        return Err(ShipErrorKind::Source(io::Error::new(
            io::ErrorKind::UnexpectedEof,
            format!(
                "the file ended after {} of {} bytes",
                offset + sent,
                meta.size
            ),
        )));
    }
    if let Err(e) = writer.send(&Frame::ShipEnd).await {
        return Err(explain_failure(reader, e).await);
    }
    match reader.next(cfg.io_timeout).await? {
        Frame::ShipDone { computed } => Ok(Shipped {
            resumed_from: offset,
            bytes_sent: sent,
            computed,
        }),
        Frame::Close { reason } => Err(ShipErrorKind::Closed(reason)),
        other => Err(ShipErrorKind::Unexpected(other.kind())),
    }
}

/// The receiver's answer to an offer, checked by the sender: it may hold at most the whole
/// artifact. Returns how many bytes are left to send.
pub fn check_resume(offset: u64, size: u64) -> Result<u64, ResumeError> {
    size.checked_sub(offset).ok_or(ResumeError { offset, size })
}

/// A receiver that claims more bytes than the artifact has.
#[derive(Copy, Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("it claims {offset} bytes of a {size}-byte artifact")]
pub struct ResumeError {
    pub offset: u64,
    pub size: u64,
}

/// Where a receive resumes, given the bytes a partial file `held` of an artifact of `size`
/// bytes: nothing when it holds more than the artifact (not this artifact's bytes), else its
/// whole blocks (direct writes continue at an aligned offset; the sender resends the rest).
pub fn resume_offset(held: u64, size: u64) -> u64 {
    if held > size {
        return 0;
    }
    held - held % super::direct::ALIGN as u64
}

/// The receiver's count of an artifact's bytes, from the offset it resumed at: never past the
/// size the offer announced, and the end only at exactly that size.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub struct ChunkCount {
    received: u64,
    size: u64,
}

/// The sender sent more or fewer bytes than the artifact has. `got` is `u64::MAX` when the
/// count itself would overflow.
#[derive(Copy, Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("the sender sent {got} bytes of a {size}-byte artifact")]
pub struct WrongLength {
    pub got: u64,
    pub size: u64,
}

impl ChunkCount {
    /// Counting from `offset` of `size` bytes; an offset past the size is a wrong length.
    pub fn new(offset: u64, size: u64) -> Result<ChunkCount, WrongLength> {
        if offset > size {
            return Err(WrongLength { got: offset, size });
        }
        Ok(ChunkCount {
            received: offset,
            size,
        })
    }

    /// Bytes held so far (the resume offset plus every accepted chunk).
    pub fn received(&self) -> u64 {
        self.received
    }

    /// The size the offer announced.
    pub fn size(&self) -> u64 {
        self.size
    }

    /// A chunk of `len` bytes arrived: the new count, or the count it would make when that is
    /// past the size (the count is then unchanged).
    pub fn chunk(&mut self, len: usize) -> Result<u64, WrongLength> {
        let size = self.size;
        match self.received.checked_add(len as u64) {
            Some(got) if got <= size => {
                self.received = got;
                Ok(got)
            }
            Some(got) => Err(WrongLength { got, size }),
            None => Err(WrongLength {
                got: u64::MAX,
                size,
            }),
        }
    }

    /// `ShipEnd` arrived: fine only when every byte did.
    pub fn end(&self) -> Result<(), WrongLength> {
        if self.received == self.size {
            Ok(())
        } else {
            Err(WrongLength {
                got: self.received,
                size: self.size,
            })
        }
    }
}

/// The disk side of a send: read `remaining` bytes from `offset` in chunks into the channel.
fn read_ahead(
    mut file: File,
    offset: u64,
    mut remaining: u64,
    chunk: usize,
    tx: mpsc::Sender<io::Result<Vec<u8>>>,
) {
    if let Err(e) = file.seek(SeekFrom::Start(offset)) {
        let _ = tx.blocking_send(Err(e));
        return;
    }
    while remaining > 0 {
        let n = remaining.min(chunk as u64) as usize;
        let mut buf = super::buffers::take(n);
        let read = match (&mut file).take(n as u64).read_to_end(&mut buf) {
            Ok(got) if got == n => Ok(buf),
            Ok(got) => Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                format!("the file ended {} bytes early", remaining - got as u64),
            )),
            Err(e) => Err(e),
        };
        let failed = read.is_err();
        if tx.blocking_send(read).is_err() || failed {
            return; // the network side gave up, or the error is on its way
        }
        remaining -= n as u64;
    }
}

/// A write failed: the receiver may have said why before closing. Look briefly.
async fn explain_failure<R: AsyncRead + Unpin>(
    reader: &mut FrameReader<R>,
    error: FrameError,
) -> ShipErrorKind {
    match reader.next(Duration::from_millis(500)).await {
        Ok(Frame::Close { reason }) => ShipErrorKind::Closed(reason),
        _ => ShipErrorKind::Link(error),
    }
}

/// An artifact durably in the inbox.
#[derive(Clone, Debug)]
pub(crate) struct Received {
    pub meta: ArtifactMeta,
    pub computed: Checksum,
    pub path: PathBuf,
    pub resumed_from: u64,
}

/// Why receiving an artifact stopped. The partial file keeps every byte that passed its frame
/// checksum, so the next offer resumes from there.
#[derive(Debug, thiserror::Error)]
pub(crate) enum ReceiveError {
    #[error("{}: {source}", KeyText(.key))]
    Link {
        key: ArtifactKey,
        source: FrameError,
    },
    #[error(
        "{}: disk error on {}: {source}; check free space and permissions",
        KeyText(.key),
        .path.display()
    )]
    Disk {
        key: ArtifactKey,
        path: PathBuf,
        source: io::Error,
    },
    #[error("{}: the sender sent {got} bytes of a {size}-byte artifact", KeyText(.key))]
    WrongLength {
        key: ArtifactKey,
        got: u64,
        size: u64,
    },
    #[error("{}: unexpected {kind:?} frame during the transfer", KeyText(.key))]
    Unexpected { key: ArtifactKey, kind: FrameKind },
    #[error("{}: a newer offer of the same artifact took over", KeyText(.key))]
    Superseded { key: ArtifactKey },
    #[error("{}: the offer is not a valid artifact: {why}", KeyText(.key))]
    BadOffer { key: ArtifactKey, why: &'static str },
}

/// Receive one offered artifact into the inbox. Returns once the file is fsynced and renamed
/// and its manifest written; the caller then reports it and answers `ShipDone`.
pub(crate) async fn receive_artifact<R, W>(
    inbox: &Inbox,
    meta: ArtifactMeta,
    reader: &mut FrameReader<R>,
    writer: &mut FrameWriter<W>,
    cfg: &TransportConfig,
) -> Result<Received, ReceiveError>
where
    R: AsyncRead + Unpin,
    W: AsyncWrite + Unpin,
{
    let key = meta.key;
    // The offer comes from the network: refuse an artifact the core would never accept before
    // a file is named after it or a manifest written for it.
    meta.check()
        .map_err(|why| ReceiveError::BadOffer { key, why })?;
    let claim: Claim = match tokio::time::timeout(cfg.io_timeout, inbox.claims.claim(key)).await {
        Ok(claim) => claim,
        Err(_) => return Err(ReceiveError::Superseded { key }),
    };
    let final_path = inbox.artifact_path(&meta);
    let partial = inbox.partial_path(&meta);
    let disk = |path: &Path| {
        let path = path.to_path_buf();
        move |source| ReceiveError::Disk { key, path, source }
    };
    let (file, hasher, offset) = {
        let p = partial.clone();
        blocking(move || open_partial(&p, meta.size))
            .await
            .map_err(disk(&partial))?
    };
    writer
        .send(&Frame::ShipResume { offset })
        .await
        .map_err(|source| ReceiveError::Link { key, source })?;

    let progress = inbox.transfers().start(
        super::Direction::Receive,
        final_path
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default(),
        meta.size,
        offset,
    );
    // The network task checks and forwards chunks; a disk thread writes, hashes and fsyncs.
    let (tx, rx) = mpsc::channel::<Payload>(cfg.window.max(1));
    let sink = {
        let path = partial.clone();
        let size = meta.size;
        tokio::task::spawn_blocking(move || write_behind(file, &path, hasher, offset, size, rx))
    };
    let streamed = tokio::select! {
        r = stream_chunks(reader, tx, key, offset, meta.size, cfg.io_timeout, &progress) => r,
        () = claim.superseded() => Err(ReceiveError::Superseded { key }),
    };
    // The manifest is staged (written, fsynced) while the disk thread fsyncs the bytes.
    // Staged beside the partial file, whose name is unique to this artifact.
    let staged = streamed.is_ok().then(|| {
        let (artifact, meta, db_name) = (partial.clone(), meta, inbox.db_name(meta.key.db));
        tokio::task::spawn_blocking(move || {
            stage_manifest(&artifact, &Manifest::from_meta(&meta, &db_name))
        })
    });
    // Always let the disk thread finish: the prefix is then durable for the next resume.
    let written = match sink.await {
        Ok(Ok(written)) => written,
        Ok(Err(e)) => return Err(disk(&partial)(e)),
        Err(join) => return Err(disk(&partial)(io::Error::other(join))),
    };
    streamed?;
    let (computed, total) = written;
    if total != meta.size {
        return Err(ReceiveError::WrongLength {
            key,
            got: total,
            size: meta.size,
        });
    }
    let staged = match staged {
        Some(job) => job.await.unwrap_or_else(|join| Err(io::Error::other(join))),
        None => Err(io::Error::other("the manifest was not staged")),
    }
    .map_err(disk(&final_path))?;

    // Durable order: bytes fsynced and manifest staged (done), rename the bytes, then the
    // manifest, then one directory fsync makes both names durable. The renames reach the journal
    // in this order, so a manifest beside a file always means the file is complete. The final
    // name is chosen and taken under the inbox's naming lock.
    crate::crash::point("receive_before_rename");
    let final_path = {
        let (from, dir, naming) = (
            partial.clone(),
            inbox.dir().to_path_buf(),
            inbox.naming.clone(),
        );
        let db_name = inbox.db_name(meta.key.db);
        blocking(move || {
            let _names = naming.lock().unwrap_or_else(|e| e.into_inner());
            let to = super::inbox::free_artifact_path(&dir, &db_name, &meta)?;
            fs::rename(&from, &to)?;
            fs::rename(&staged, manifest_path(&to))?;
            fsync_dir(&dir)?;
            Ok(to)
        })
        .await
        .map_err(disk(&final_path))?
    };
    drop(claim);
    crate::crash::point("receive_before_report");
    Ok(Received {
        meta,
        computed: Checksum(computed),
        path: final_path,
        resumed_from: offset,
    })
}

/// Read chunks off the link into the disk thread until `ShipEnd`, never past `size`.
async fn stream_chunks<R: AsyncRead + Unpin>(
    reader: &mut FrameReader<R>,
    tx: mpsc::Sender<Payload>,
    key: ArtifactKey,
    offset: u64,
    size: u64,
    io_timeout: Duration,
    progress: &super::progress::Progress,
) -> Result<(), ReceiveError> {
    let wrong = |WrongLength { got, size }| ReceiveError::WrongLength { key, got, size };
    let mut count = ChunkCount::new(offset, size).map_err(wrong)?;
    loop {
        let frame = reader
            .next(io_timeout)
            .await
            .map_err(|source| ReceiveError::Link { key, source })?;
        match frame {
            Frame::Chunk(bytes) => {
                let received = count.chunk(bytes.len()).map_err(wrong)?;
                if tx.send(bytes).await.is_err() {
                    return Ok(()); // the disk thread failed; its error is the one to report
                }
                progress.set(received);
            }
            Frame::ShipEnd => return count.end().map_err(wrong),
            other => {
                return Err(ReceiveError::Unexpected {
                    key,
                    kind: other.kind(),
                })
            }
        }
    }
}

/// Open (or create) the partial file, drop it if it is longer than the artifact, cut it back to
/// whole blocks (direct writes continue at an aligned offset; the sender resends the rest), hash
/// the prefix it holds and position at its end.
fn open_partial(path: &Path, size: u64) -> io::Result<(File, Xxh3Default, u64)> {
    let mut file = OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .open(path)?;
    let on_disk = file.metadata()?.len();
    let held = resume_offset(on_disk, size);
    if held != on_disk {
        file.set_len(held)?;
    }
    let mut hasher = Xxh3Default::new();
    let mut buf = vec![0u8; 1 << 20];
    let mut left = held;
    file.seek(SeekFrom::Start(0))?;
    while left > 0 {
        let n = left.min(buf.len() as u64) as usize;
        file.read_exact(&mut buf[..n])?;
        hasher.update(&buf[..n]);
        left -= n as u64;
    }
    file.seek(SeekFrom::Start(held))?;
    Ok((file, hasher, held))
}

/// The disk side of a receive: write (around the page cache where it can, see `direct.rs`) and
/// hash every chunk, then fsync (also after an interruption, so the prefix survives a crash).
/// Returns the digest and the file's length.
fn write_behind(
    file: File,
    path: &Path,
    mut hasher: Xxh3Default,
    offset: u64,
    size: u64,
    mut rx: mpsc::Receiver<Payload>,
) -> io::Result<(u64, u64)> {
    let mut out =
        super::direct::ArtifactWriter::new(file, path, offset, size.saturating_sub(offset));
    while let Some(bytes) = rx.blocking_recv() {
        hasher.update(&bytes);
        let written = out.write(&bytes);
        bytes.recycle();
        written?;
    }
    crate::crash::point("receive_before_fsync");
    let total = out.finish()?;
    Ok((hasher.digest(), total))
}

/// Run blocking file work off the async threads.
async fn blocking<T, F>(f: F) -> io::Result<T>
where
    F: FnOnce() -> io::Result<T> + Send + 'static,
    T: Send + 'static,
{
    tokio::task::spawn_blocking(f)
        .await
        .unwrap_or_else(|join| Err(io::Error::other(join)))
}
