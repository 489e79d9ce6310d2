//! Recycled chunk buffers. Every artifact moves as 1 MiB chunks; allocating each one fresh
//! costs a fresh mapping, page faults and zeroing per chunk (the allocator maps and unmaps
//! buffers this large), which measured as a third of the CPU time of shipping. Buffers go back
//! here once their bytes are on the wire or on disk, and the next chunk takes one.
//!
//! Bounded: at most [`KEEP`] buffers of at most [`MAX_KEPT_CAPACITY`] bytes each are kept.

use std::sync::Mutex;

/// Buffers kept for reuse: enough for a few transfers' windows in flight on each side.
const KEEP: usize = 32;
/// Larger buffers are not kept (a chunk is at most the frame limit, normally 1 MiB).
const MAX_KEPT_CAPACITY: usize = 4 << 20;
/// Smaller requests are ordinary allocations (messages, small frames).
pub(crate) const MIN_POOLED: usize = 64 << 10;

/// A bounded pool of byte buffers of one size range, shared by the threads of a transfer.
pub(crate) struct Pool {
    kept: Mutex<Vec<Vec<u8>>>,
    /// At most this many buffers are kept.
    keep: usize,
    /// Buffers of a capacity outside `min..=max` are neither pooled nor kept.
    min: usize,
    max: usize,
}

impl Pool {
    pub(crate) const fn new(keep: usize, min: usize, max: usize) -> Pool {
        Pool {
            kept: Mutex::new(Vec::new()),
            keep,
            min,
            max,
        }
    }

    /// An empty buffer with room for at least `len` bytes.
    pub(crate) fn take(&self, len: usize) -> Vec<u8> {
        self.reuse(len).unwrap_or_else(|| Vec::with_capacity(len))
    }

    /// A kept buffer with room for at least `len` bytes, if there is one (never a fresh one).
    pub(crate) fn reuse(&self, len: usize) -> Option<Vec<u8>> {
        if len < self.min {
            return None;
        }
        let mut kept = self.kept.lock().unwrap_or_else(|e| e.into_inner());
        let i = kept.iter().rposition(|b| b.capacity() >= len)?;
        let mut b = kept.swap_remove(i);
        b.clear();
        Some(b)
    }

    /// Give a buffer back for reuse (dropped when the pool is full or the buffer is odd-sized).
    pub(crate) fn give(&self, buf: Vec<u8>) {
        if !(self.min..=self.max).contains(&buf.capacity()) {
            return;
        }
        let mut kept = self.kept.lock().unwrap_or_else(|e| e.into_inner());
        if kept.len() < self.keep {
            kept.push(buf);
        }
    }
}

/// Memory alignment of a received chunk's bytes: a direct write takes them where they are
/// (devices want 512 bytes, some 4096; see `direct.rs`).
pub(crate) const PAYLOAD_ALIGN: usize = 4096;

/// A frame's payload bytes: `buf[start..]`. Large chunk payloads start at an aligned address
/// (the bytes in front are padding), so they reach the disk without another copy.
#[derive(Clone, Default)]
pub struct Payload {
    buf: Vec<u8>,
    start: usize,
}

impl Payload {
    /// An empty payload with room for `len` bytes at an aligned address (a pooled buffer).
    pub(crate) fn aligned(len: usize) -> Payload {
        let mut buf = take(len + PAYLOAD_ALIGN);
        let start = buf.as_ptr().align_offset(PAYLOAD_ALIGN).min(PAYLOAD_ALIGN);
        buf.resize(start, 0);
        Payload { buf, start }
    }

    /// The buffer the payload's bytes are appended to (after the padding).
    pub(crate) fn buffer(&mut self) -> &mut Vec<u8> {
        &mut self.buf
    }

    /// The bytes as a vector of their own (a copy only when there is padding in front).
    pub fn into_vec(mut self) -> Vec<u8> {
        if self.start > 0 {
            self.buf.drain(..self.start);
        }
        self.buf
    }

    /// Give the buffer back to the pool.
    pub(crate) fn recycle(self) {
        give(self.buf)
    }
}

impl From<Vec<u8>> for Payload {
    fn from(buf: Vec<u8>) -> Payload {
        Payload { buf, start: 0 }
    }
}

impl std::ops::Deref for Payload {
    type Target = [u8];
    fn deref(&self) -> &[u8] {
        &self.buf[self.start..]
    }
}

impl PartialEq for Payload {
    fn eq(&self, other: &Payload) -> bool {
        **self == **other
    }
}

impl Eq for Payload {}

impl PartialEq<Vec<u8>> for Payload {
    fn eq(&self, other: &Vec<u8>) -> bool {
        **self == other[..]
    }
}

impl PartialEq<Payload> for Vec<u8> {
    fn eq(&self, other: &Payload) -> bool {
        self[..] == **other
    }
}

impl std::fmt::Debug for Payload {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Payload({} bytes)", self.len())
    }
}

/// The chunk buffers.
static CHUNKS: Pool = Pool::new(KEEP, MIN_POOLED, MAX_KEPT_CAPACITY);

/// An empty chunk buffer with room for at least `len` bytes.
pub(crate) fn take(len: usize) -> Vec<u8> {
    CHUNKS.take(len)
}

/// A recycled chunk buffer with room for at least `len` bytes, if one is free.
pub(crate) fn reuse(len: usize) -> Option<Vec<u8>> {
    CHUNKS.reuse(len)
}

/// Give a chunk buffer back for reuse.
pub(crate) fn give(buf: Vec<u8>) {
    CHUNKS.give(buf)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_aligned_payload_starts_on_the_alignment_and_reads_back_its_bytes() {
        let mut p = Payload::aligned(1 << 20);
        p.buffer().extend_from_slice(&[5u8; 10_000]);
        assert_eq!(p.as_ptr() as usize % PAYLOAD_ALIGN, 0);
        assert_eq!(p.len(), 10_000);
        assert_eq!(p, vec![5u8; 10_000]);
        assert_eq!(p.clone().into_vec(), vec![5u8; 10_000]);
        p.recycle();
    }

    #[test]
    fn a_returned_chunk_buffer_is_reused_empty_and_small_ones_are_not_kept() {
        let mut b = take(1 << 20);
        b.extend_from_slice(&[7u8; 100]);
        give(b);
        // Whichever pooled buffer comes back, it is empty and large enough.
        let again = take(1 << 20);
        assert!(again.is_empty());
        assert!(again.capacity() >= 1 << 20);
        let small = Vec::with_capacity(16);
        give(small);
        assert!(CHUNKS
            .kept
            .lock()
            .unwrap()
            .iter()
            .all(|b| b.capacity() >= MIN_POOLED));
    }
}
