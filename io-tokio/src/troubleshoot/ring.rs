//! The process's last log lines, in memory, so that `lifeboat logs` shows an agent's log from the
//! other site without a shell on its machine: a tracing [`Layer`] that writes every event the
//! filter lets through into a ring bounded in lines and in bytes (the oldest lines go first).

use lifeboat_core::utc::UtcDateTime;
use lifeboat_core::UtcMillis;
use serde::{Deserialize, Serialize};
use std::collections::VecDeque;
use std::fmt::Write as _;
use std::sync::{Arc, Mutex};
use std::time::{SystemTime, UNIX_EPOCH};
use tracing::field::{Field, Visit};
use tracing::{Event, Subscriber};
use tracing_subscriber::layer::{Context, Layer};

/// Lines the agent keeps (`lifeboat logs -n` asks for at most this many).
pub const RING_LINES: usize = 2000;
/// Bytes of text the agent keeps (1 MiB), whatever the lines' count.
pub const RING_BYTES: usize = 1 << 20;
/// A longer line is cut to this many bytes and marked, so one huge field cannot empty the ring.
pub const LINE_MAX: usize = 4096;
/// Marks a cut line.
const CUT: &str = " …[cut]";

/// One log line as `lifeboat logs` shows it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct LogLine {
    /// Counts every line this process logged: a gap between two shown lines is lines dropped.
    pub seq: u64,
    /// UTC, ISO 8601.
    pub utc: String,
    pub level: String,
    pub target: String,
    /// The message, then its fields as `name=value`.
    pub text: String,
}

impl LogLine {
    /// The bytes this line counts against [`RING_BYTES`].
    fn cost(&self) -> usize {
        self.utc.len() + self.level.len() + self.target.len() + self.text.len()
    }
}

/// The last lines, bounded in count and in bytes.
pub struct LogRing {
    max_lines: usize,
    max_bytes: usize,
    inner: Mutex<Kept>,
}

#[derive(Default)]
struct Kept {
    lines: VecDeque<LogLine>,
    bytes: usize,
    next_seq: u64,
}

/// What the ring holds now, for the answer's header.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct RingUse {
    pub lines: usize,
    pub bytes: usize,
    pub max_lines: usize,
    pub max_bytes: usize,
    /// Lines logged since the process started (kept or not).
    pub logged: u64,
}

impl LogRing {
    pub fn new(max_lines: usize, max_bytes: usize) -> LogRing {
        LogRing {
            max_lines: max_lines.max(1),
            max_bytes: max_bytes.max(LINE_MAX),
            inner: Mutex::new(Kept::default()),
        }
    }

    fn kept(&self) -> std::sync::MutexGuard<'_, Kept> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Keep a line, cutting it to [`LINE_MAX`] and dropping the oldest lines past the bounds.
    pub fn push(&self, utc: String, level: &str, target: &str, mut text: String) {
        if text.len() > LINE_MAX {
            let mut end = LINE_MAX - CUT.len();
            while !text.is_char_boundary(end) {
                end -= 1;
            }
            text.truncate(end);
            text.push_str(CUT);
        }
        let mut k = self.kept();
        let line = LogLine {
            seq: k.next_seq,
            utc,
            level: level.to_string(),
            target: target.chars().take(200).collect(),
            text,
        };
        k.next_seq += 1;
        k.bytes += line.cost();
        k.lines.push_back(line);
        while k.lines.len() > self.max_lines || k.bytes > self.max_bytes {
            match k.lines.pop_front() {
                Some(old) => k.bytes -= old.cost(),
                None => break,
            }
        }
        debug_assert!(k.lines.len() <= self.max_lines && k.bytes <= self.max_bytes);
    }

    /// The last `n` lines, oldest first.
    pub fn last(&self, n: usize) -> Vec<LogLine> {
        let k = self.kept();
        let skip = k.lines.len().saturating_sub(n);
        k.lines.iter().skip(skip).cloned().collect()
    }

    pub fn usage(&self) -> RingUse {
        let k = self.kept();
        RingUse {
            lines: k.lines.len(),
            bytes: k.bytes,
            max_lines: self.max_lines,
            max_bytes: self.max_bytes,
            logged: k.next_seq,
        }
    }
}

/// The [`Layer`] that fills a [`LogRing`].
pub struct RingLayer(pub Arc<LogRing>);

impl<S: Subscriber> Layer<S> for RingLayer {
    fn on_event(&self, event: &Event<'_>, _ctx: Context<'_, S>) {
        let mut text = TextVisitor::default();
        event.record(&mut text);
        let meta = event.metadata();
        self.0.push(
            utc_now(),
            meta.level().as_str(),
            meta.target(),
            text.finish(),
        );
    }
}

fn utc_now() -> String {
    let ms = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64);
    UtcDateTime::from_millis(UtcMillis(ms)).to_string()
}

/// The message first, then `name=value` for every other field, as the human log format does.
#[derive(Default)]
struct TextVisitor {
    message: String,
    fields: String,
}

impl TextVisitor {
    fn finish(self) -> String {
        if self.fields.is_empty() {
            self.message
        } else if self.message.is_empty() {
            self.fields.trim_start().to_string()
        } else {
            self.message + &self.fields
        }
    }

    /// Stop formatting once far past the line limit (the ring cuts the rest anyway).
    fn full(&self) -> bool {
        self.message.len() + self.fields.len() > 2 * LINE_MAX
    }
}

impl Visit for TextVisitor {
    fn record_str(&mut self, field: &Field, value: &str) {
        if self.full() {
            return;
        }
        if field.name() == "message" {
            self.message.push_str(value);
        } else {
            let _ = write!(self.fields, " {}={value}", field.name());
        }
    }

    fn record_debug(&mut self, field: &Field, value: &dyn std::fmt::Debug) {
        if self.full() {
            return;
        }
        if field.name() == "message" {
            let _ = write!(self.message, "{value:?}");
        } else {
            let _ = write!(self.fields, " {}={value:?}", field.name());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tracing_subscriber::layer::SubscriberExt;

    fn push(ring: &LogRing, text: &str) {
        ring.push("2026-01-01T00:00:00Z".into(), "INFO", "t", text.into());
    }

    #[test]
    fn the_ring_keeps_at_most_its_line_count_dropping_the_oldest() {
        let ring = LogRing::new(3, RING_BYTES);
        for i in 0..10 {
            push(&ring, &format!("line {i}"));
        }
        let kept: Vec<String> = ring.last(100).into_iter().map(|l| l.text).collect();
        assert_eq!(kept, vec!["line 7", "line 8", "line 9"]);
        assert_eq!(ring.usage().logged, 10);
        assert_eq!(ring.last(2)[0].seq, 8);
    }

    #[test]
    fn the_ring_keeps_at_most_its_bytes_whatever_the_line_count() {
        let ring = LogRing::new(1000, 3 * LINE_MAX);
        for _ in 0..50 {
            push(&ring, &"x".repeat(1000));
        }
        let u = ring.usage();
        assert!(u.bytes <= 3 * LINE_MAX, "{u:?}");
        assert!(u.lines < 50 && u.lines >= 10, "{u:?}");
    }

    #[test]
    fn a_huge_line_is_cut_and_marked_not_allowed_to_empty_the_ring() {
        let ring = LogRing::new(1000, RING_BYTES);
        push(&ring, "small");
        push(&ring, &"é".repeat(LINE_MAX)); // two bytes a char: the cut finds a boundary
        let lines = ring.last(10);
        assert_eq!(lines.len(), 2);
        assert!(lines[1].text.len() <= LINE_MAX);
        assert!(lines[1].text.ends_with("[cut]"));
    }

    #[test]
    fn events_reach_the_ring_with_their_message_and_fields() {
        let ring = Arc::new(LogRing::new(10, RING_BYTES));
        let sub = tracing_subscriber::registry().with(RingLayer(ring.clone()));
        tracing::subscriber::with_default(sub, || {
            tracing::warn!(peer = "recovery", tries = 3, "cannot reach peer");
        });
        let line = &ring.last(1)[0];
        assert_eq!(line.level, "WARN");
        assert_eq!(line.text, "cannot reach peer peer=recovery tries=3");
    }
}
