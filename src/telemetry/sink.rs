//! Where log lines go: one writer thread owns stdout, so a stdout that stops
//! taking writes (a full pipe behind a stalled log shipper, a disk throttling
//! writes) never stops a request.
//!
//! Request threads and `tracing` only append lines to a buffer. The writer
//! thread empties it every 100 ms, as soon as 64 KiB pile up, and at once
//! for an operational event; [`flush`] empties it on the calling thread
//! before the process exits. While stdout is blocked the buffer grows to at
//! most [`CAP`] bytes; later lines are dropped and counted
//! (`keygate_log_lines_dropped_total`), and once stdout takes writes again a
//! warning line says how many were lost. Whole batches are written under one
//! lock, so lines never interleave mid-line.

use std::io::Write;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Condvar, LazyLock, Mutex, MutexGuard, Once, Weak};
use std::time::Duration;

/// Pending bytes that wake the writer thread at once.
pub const FLUSH_AT: usize = 64 * 1024;
/// The most bytes that wait for a blocked stdout (about 90,000 access lines).
pub const CAP: usize = 32 * 1024 * 1024;
/// How long a line waits at most while stdout takes writes.
const EVERY: Duration = Duration::from_millis(100);

/// A buffer of whole lines in front of one writer.
pub struct Sink {
    pending: Mutex<Pending>,
    wake: Condvar,
    out: Mutex<Output>,
    cap: usize,
    dropped: AtomicU64,
    json: AtomicBool,
    writer: Once,
    /// No writer thread could be started: whoever fills a batch writes it.
    inline: AtomicBool,
}

struct Pending {
    buf: Vec<u8>,
    /// Lines dropped since the last write.
    dropped: u64,
    /// An operational event is waiting: write without waiting for more.
    urgent: bool,
}

struct Output {
    w: Box<dyn Write + Send>,
    /// The buffer last written, kept for the next swap.
    spare: Vec<u8>,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

static STDOUT: LazyLock<Arc<Sink>> = LazyLock::new(|| Sink::new(Box::new(std::io::stdout()), CAP));

/// The process's stdout.
pub fn stdout() -> &'static Arc<Sink> {
    &STDOUT
}

/// Writes out every pending line on this thread: the last thing before the
/// process exits.
pub fn flush() {
    STDOUT.flush();
}

/// Makes every exit write out the pending lines first, whoever calls
/// `exit`: Pingora exits at once after logging why it cannot start.
pub fn flush_at_exit() {
    extern "C" fn at_exit() {
        flush();
    }
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        if !crate::util::sys::at_exit(at_exit) {
            eprintln!("keygate: cannot register the log flush at exit; the last log lines of a failed start may be lost");
        }
    });
}

impl Sink {
    /// A sink in front of `w` holding at most `cap` bytes while `w` blocks.
    /// Its writer thread starts with the first line and ends once the sink
    /// is dropped.
    pub fn new(w: Box<dyn Write + Send>, cap: usize) -> Arc<Sink> {
        Arc::new(Sink {
            pending: Mutex::new(Pending {
                buf: Vec::with_capacity(FLUSH_AT * 2),
                dropped: 0,
                urgent: false,
            }),
            wake: Condvar::new(),
            out: Mutex::new(Output {
                w,
                spare: Vec::with_capacity(FLUSH_AT * 2),
            }),
            cap,
            dropped: AtomicU64::new(0),
            json: AtomicBool::new(true),
            writer: Once::new(),
            inline: AtomicBool::new(false),
        })
    }

    /// Whether the drop warning is a JSON line (the default) or text.
    pub fn set_json(&self, json: bool) {
        self.json.store(json, Ordering::Relaxed);
    }

    /// Lines dropped since the start because the buffer was full.
    pub fn dropped(&self) -> u64 {
        self.dropped.load(Ordering::Relaxed)
    }

    /// Appends the line `line` writes (newline included); `false` when it
    /// was dropped because the buffer is full.
    pub fn push(self: &Arc<Self>, line: impl FnOnce(&mut Vec<u8>)) -> bool {
        self.push_with(line, false)
    }

    /// Appends whole lines, written without waiting for more when `urgent`.
    pub fn push_bytes(self: &Arc<Self>, lines: &[u8], urgent: bool) -> bool {
        self.push_with(|buf| buf.extend_from_slice(lines), urgent)
    }

    fn push_with(self: &Arc<Self>, line: impl FnOnce(&mut Vec<u8>), urgent: bool) -> bool {
        self.writer.call_once(|| {
            let sink = Arc::downgrade(self);
            let spawned = std::thread::Builder::new()
                .name("keygate-log".into())
                .spawn(move || write_until_dropped(&sink));
            if let Err(e) = spawned {
                self.inline.store(true, Ordering::Relaxed);
                eprintln!(
                    "keygate: cannot start the log writer thread ({e}); log lines are written by the threads that make them"
                );
            }
        });
        let mut p = lock(&self.pending);
        if p.buf.len() >= self.cap {
            p.dropped += 1;
            self.dropped.fetch_add(1, Ordering::Relaxed);
            return false;
        }
        line(&mut p.buf);
        p.urgent |= urgent;
        let wake = p.urgent || p.buf.len() >= FLUSH_AT;
        drop(p);
        if wake {
            if self.inline.load(Ordering::Relaxed) {
                self.flush();
            } else {
                self.wake.notify_one();
            }
        }
        true
    }

    /// Writes out every pending line on this thread, after any batch the
    /// writer thread is writing.
    pub fn flush(&self) {
        let mut out = lock(&self.out);
        let out = &mut *out;
        let dropped = {
            let mut p = lock(&self.pending);
            if p.buf.is_empty() && p.dropped == 0 {
                return;
            }
            out.spare.clear();
            std::mem::swap(&mut p.buf, &mut out.spare);
            p.urgent = false;
            std::mem::take(&mut p.dropped)
        };
        // A stdout that fails (closed, full disk) loses this batch; nothing
        // else can be done with it and serving goes on.
        let _ = out.w.write_all(&out.spare);
        if dropped > 0 {
            let _ = out.w.write_all(&self.drop_warning(dropped));
        }
        let _ = out.w.flush();
        // After a long block the batch was large: give the memory back.
        out.spare.clear();
        out.spare.shrink_to(FLUSH_AT * 2);
    }

    /// The line saying `n` lines were lost, in the log format.
    fn drop_warning(&self, n: u64) -> Vec<u8> {
        let mut line = Vec::with_capacity(200);
        let micros = crate::util::clock::unix_micros_now();
        let message = "stdout took no writes for too long: log lines were dropped";
        if self.json.load(Ordering::Relaxed) {
            line.extend_from_slice(b"{\"timestamp\":\"");
            crate::util::text::rfc3339_micros(&mut line, micros);
            line.extend_from_slice(b"\",\"level\":\"WARN\",\"message\":\"");
            line.extend_from_slice(message.as_bytes());
            line.extend_from_slice(b"\",\"dropped\":");
            line.extend_from_slice(itoa::Buffer::new().format(n).as_bytes());
            line.extend_from_slice(b",\"target\":\"keygate::log\"}\n");
        } else {
            crate::util::text::rfc3339_micros(&mut line, micros);
            line.extend_from_slice(b"  WARN keygate::log: ");
            line.extend_from_slice(message.as_bytes());
            line.extend_from_slice(b" dropped=");
            line.extend_from_slice(itoa::Buffer::new().format(n).as_bytes());
            line.push(b'\n');
        }
        line
    }
}

/// The writer thread: waits for lines (at most [`EVERY`]), writes them, and
/// ends once nobody else holds the sink.
fn write_until_dropped(sink: &Weak<Sink>) {
    while let Some(sink) = sink.upgrade() {
        {
            let p = lock(&sink.pending);
            let waited = sink
                .wake
                .wait_timeout_while(p, EVERY, |p| !p.urgent && p.buf.len() < FLUSH_AT);
            drop(waited.unwrap_or_else(|e| e.into_inner()));
        }
        sink.flush();
    }
}

/// `tracing`'s writer: each event is appended to stdout's sink whole, and
/// written at once unless it is an access line (those wait for their batch).
pub struct Events;

/// One event being formatted.
pub struct Event {
    buf: Vec<u8>,
    urgent: bool,
}

impl<'a> tracing_subscriber::fmt::MakeWriter<'a> for Events {
    type Writer = Event;

    fn make_writer(&'a self) -> Event {
        Event {
            buf: Vec::new(),
            urgent: true,
        }
    }

    fn make_writer_for(&'a self, meta: &tracing::Metadata<'_>) -> Event {
        Event {
            buf: Vec::new(),
            urgent: meta.target() != "keygate::access",
        }
    }
}

impl Write for Event {
    fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
        self.buf.extend_from_slice(b);
        Ok(b.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl Drop for Event {
    fn drop(&mut self) {
        if !self.buf.is_empty() {
            stdout().push_bytes(&self.buf, self.urgent);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::mpsc;

    /// A writer that records what it is given, and can be made to block.
    #[derive(Clone, Default)]
    struct Recorder {
        seen: Arc<Mutex<Vec<u8>>>,
        gate: Arc<(Mutex<bool>, Condvar)>,
        entered: Arc<Mutex<Option<mpsc::Sender<()>>>>,
    }

    impl Recorder {
        fn block(&self) -> mpsc::Receiver<()> {
            *lock(&self.gate.0) = true;
            let (tx, rx) = mpsc::channel();
            *lock(&self.entered) = Some(tx);
            rx
        }

        fn release(&self) {
            *lock(&self.gate.0) = false;
            self.gate.1.notify_all();
        }

        fn text(&self) -> String {
            String::from_utf8(lock(&self.seen).clone()).unwrap()
        }
    }

    impl Write for Recorder {
        fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
            if let Some(tx) = lock(&self.entered).take() {
                let _ = tx.send(());
            }
            let mut blocked = lock(&self.gate.0);
            while *blocked {
                blocked = self.gate.1.wait(blocked).unwrap();
            }
            drop(blocked);
            lock(&self.seen).extend_from_slice(b);
            Ok(b.len())
        }

        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    fn line(n: usize) -> impl FnOnce(&mut Vec<u8>) {
        move |buf| buf.extend_from_slice(format!("line {n}\n").as_bytes())
    }

    #[test]
    fn lines_come_out_whole_and_in_order() {
        let rec = Recorder::default();
        let sink = Sink::new(Box::new(rec.clone()), CAP);
        for n in 0..1000 {
            assert!(sink.push(line(n)));
        }
        sink.flush();
        let want: String = (0..1000).map(|n| format!("line {n}\n")).collect();
        assert_eq!(rec.text(), want);
        assert_eq!(sink.dropped(), 0);
    }

    #[test]
    fn an_urgent_line_is_written_without_a_flush() {
        let rec = Recorder::default();
        let sink = Sink::new(Box::new(rec.clone()), CAP);
        sink.push_bytes(b"event\n", true);
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        while rec.text().is_empty() {
            assert!(std::time::Instant::now() < deadline, "never written");
            std::thread::yield_now();
        }
        assert_eq!(rec.text(), "event\n");
    }

    #[test]
    fn a_blocked_writer_blocks_no_push_and_loses_only_past_the_cap() {
        let rec = Recorder::default();
        let entered = rec.block();
        let sink = Sink::new(Box::new(rec.clone()), 100);
        sink.set_json(false);
        // The writer thread takes the first line and blocks inside write.
        sink.push_bytes(b"first\n", true);
        entered
            .recv_timeout(Duration::from_secs(10))
            .expect("the writer thread writes");
        // Pushes go on without it: the buffer fills to its cap (13 lines of
        // 8 bytes: the last one starts at 96, below 100), then drops.
        let kept = (0..40).filter(|&n| sink.push(line(n + 10))).count();
        assert_eq!(kept, 13);
        assert_eq!(sink.dropped(), 27);
        rec.release();
        sink.flush();
        let text = rec.text();
        let mut want = String::from("first\n");
        want.extend((10..23).map(|n| format!("line {n}\n")));
        assert!(text.starts_with(&want), "{text}");
        let warning = &text[want.len()..];
        assert!(
            warning.contains("WARN keygate::log: stdout took no writes for too long")
                && warning.ends_with(" dropped=27\n"),
            "{warning}"
        );
        // Counted once: the next batch says nothing more.
        sink.push(line(99));
        sink.flush();
        assert!(rec.text().ends_with("dropped=27\nline 99\n"));
    }

    #[test]
    fn the_drop_warning_is_a_json_line() {
        let sink = Sink::new(Box::new(Recorder::default()), CAP);
        let line = sink.drop_warning(7);
        let v: serde_json::Value = serde_json::from_slice(&line).unwrap();
        assert_eq!(v["level"], "WARN");
        assert_eq!(v["dropped"], 7);
        assert_eq!(v["target"], "keygate::log");
        assert!(line.ends_with(b"}\n"));
    }
}
