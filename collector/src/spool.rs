//! A bounded on-disk spool between capture and Kafka.
//!
//! Every captured event is appended to the spool first, and the sender
//! publishes from the spool in order, advancing an acknowledged cursor only
//! when Kafka has acknowledged the records. So one code path covers the
//! normal case (the spool is a few milliseconds deep and lives in the page
//! cache) and an outage (the spool grows on disk and drains, in order, when
//! Kafka returns), and a collector restart resumes from the last
//! acknowledged record.
//!
//! Layout: a directory of segment files named by the sequence number of
//! their first record (`00000000000000000042.seg`), and a `cursor` file
//! holding the acknowledged position. A record is
//! `[u32 body length][u32 crc32 of body][u16 key length][key][value]`,
//! little endian. A torn record at the end of the last segment (a crash
//! mid-write) is cut off when the spool is opened.
//!
//! Bound: when the segments hold more than `max_bytes`, the oldest segment
//! is deleted even if it was not sent; its unsent records are counted as
//! dropped (`outlier_collector_spool_dropped_total`) and logged. Newest data
//! is kept because it is what an investigation of an ongoing incident needs.

use std::collections::VecDeque;
use std::fs::{self, File, OpenOptions};
use std::io::{self, BufWriter, Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard};

use thiserror::Error;

const HEADER: usize = 8;
/// Largest record accepted (a bound on what a corrupt length can claim).
const MAX_RECORD: usize = 16 << 20;

#[derive(Debug, Error)]
pub enum SpoolError {
    #[error("spool directory {path}: {source}")]
    Dir { path: PathBuf, source: io::Error },
    #[error("spool i/o: {0}")]
    Io(#[from] io::Error),
    #[error("record of {0} bytes is larger than the spool's limit")]
    TooLarge(usize),
}

/// Where a record ends: the segment it is in (by first sequence number) and
/// the byte offset just after it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Position {
    pub segment: u64,
    pub offset: u64,
}

/// A record read back for sending.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Record {
    /// Sequence number (0-based, increasing across segments).
    pub seq: u64,
    /// Where the record ends: acknowledging it moves the cursor here.
    pub end: Position,
    pub key: Vec<u8>,
    pub value: Vec<u8>,
}

#[derive(Debug, Clone)]
struct Segment {
    first_seq: u64,
    records: u64,
    bytes: u64,
}

struct Shared {
    dir: PathBuf,
    max_bytes: u64,
    segment_bytes: u64,
    segments: VecDeque<Segment>,
    total_bytes: u64,
    writer: Option<BufWriter<File>>,
    next_seq: u64,
    /// First sequence number not yet acknowledged.
    acked_seq: u64,
    acked_pos: Position,
    /// Records deleted unsent because the spool was full.
    dropped: u64,
}

/// The spool. Cheap to clone; one writer (capture) and one reader (the
/// sender) use it at once.
#[derive(Clone)]
pub struct Spool {
    shared: Arc<Mutex<Shared>>,
    notify: Arc<tokio::sync::Notify>,
}

fn seg_path(dir: &Path, first_seq: u64) -> PathBuf {
    dir.join(format!("{first_seq:020}.seg"))
}

/// Scans a segment: the number of whole records and the byte length they
/// span (anything after is a torn or corrupt tail).
fn scan(path: &Path) -> io::Result<(u64, u64)> {
    let mut data = Vec::new();
    File::open(path)?.read_to_end(&mut data)?;
    let mut off = 0usize;
    let mut n = 0u64;
    while let Some(Parsed { end, .. }) = parse(&data, off) {
        off = end;
        n += 1;
    }
    Ok((n, off as u64))
}

/// Where a parsed record's parts are in the buffer.
struct Parsed {
    key: std::ops::Range<usize>,
    value: std::ops::Range<usize>,
    end: usize,
}

/// Parses the record at `off`: its key and value ranges and its end, or
/// `None` if no whole, valid record starts there.
fn parse(data: &[u8], off: usize) -> Option<Parsed> {
    let head = data.get(off..off + HEADER)?;
    let len = u32::from_le_bytes(head[..4].try_into().ok()?) as usize;
    let crc = u32::from_le_bytes(head[4..].try_into().ok()?);
    if !(2..=MAX_RECORD).contains(&len) {
        return None;
    }
    let body = data.get(off + HEADER..off + HEADER + len)?;
    if crc32fast::hash(body) != crc {
        return None;
    }
    let klen = u16::from_le_bytes([body[0], body[1]]) as usize;
    if 2 + klen > len {
        return None;
    }
    let k0 = off + HEADER + 2;
    Some(Parsed {
        key: k0..k0 + klen,
        value: k0 + klen..off + HEADER + len,
        end: off + HEADER + len,
    })
}

impl Spool {
    /// Opens (or creates) the spool in `dir`, recovering segments and the
    /// acknowledged cursor left by an earlier run.
    pub fn open(dir: &Path, max_bytes: u64, segment_bytes: u64) -> Result<Self, SpoolError> {
        fs::create_dir_all(dir).map_err(|source| SpoolError::Dir {
            path: dir.to_path_buf(),
            source,
        })?;
        // Captured command lines are for the collector's user alone.
        {
            use std::os::unix::fs::PermissionsExt;
            fs::set_permissions(dir, fs::Permissions::from_mode(0o700)).map_err(|source| {
                SpoolError::Dir {
                    path: dir.to_path_buf(),
                    source,
                }
            })?;
        }
        let mut firsts: Vec<u64> = fs::read_dir(dir)
            .map_err(|source| SpoolError::Dir {
                path: dir.to_path_buf(),
                source,
            })?
            .filter_map(|e| e.ok())
            .filter_map(|e| {
                let name = e.file_name().into_string().ok()?;
                name.strip_suffix(".seg")?.parse::<u64>().ok()
            })
            .collect();
        firsts.sort_unstable();
        let mut segments = VecDeque::new();
        let mut total_bytes = 0;
        for (i, &first) in firsts.iter().enumerate() {
            let path = seg_path(dir, first);
            let (records, bytes) = scan(&path)?;
            let len = fs::metadata(&path)?.len();
            if bytes < len {
                // A torn tail from a crash mid-write: cut it off so appends
                // continue after the last whole record.
                tracing::warn!(segment = %path.display(), kept = bytes, cut = len - bytes, "spool segment had a torn tail");
                OpenOptions::new().write(true).open(&path)?.set_len(bytes)?;
            }
            if records == 0 && i + 1 < firsts.len() {
                fs::remove_file(&path)?;
                continue;
            }
            total_bytes += bytes;
            segments.push_back(Segment {
                first_seq: first,
                records,
                bytes,
            });
        }
        let next_seq = segments.back().map_or(0, |s| s.first_seq + s.records);
        let first_seq = segments.front().map_or(next_seq, |s| s.first_seq);
        let (mut acked_seq, mut acked_pos) = (
            first_seq,
            Position {
                segment: first_seq,
                offset: 0,
            },
        );
        if let Ok(text) = fs::read_to_string(dir.join("cursor")) {
            let v: Vec<u64> = text
                .split_whitespace()
                .filter_map(|s| s.parse().ok())
                .collect();
            if let [seq, segment, offset] = v[..]
                && seq >= first_seq
                && seq <= next_seq
            {
                acked_seq = seq;
                acked_pos = Position { segment, offset };
            }
        }
        let shared = Shared {
            dir: dir.to_path_buf(),
            max_bytes: max_bytes.max(segment_bytes),
            segment_bytes,
            segments,
            total_bytes,
            writer: None,
            next_seq,
            acked_seq,
            acked_pos,
            dropped: 0,
        };
        Ok(Self {
            shared: Arc::new(Mutex::new(shared)),
            notify: Arc::new(tokio::sync::Notify::new()),
        })
    }

    fn lock(&self) -> MutexGuard<'_, Shared> {
        self.shared.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Appends records (key, value) in order and makes them visible to the
    /// reader. Returns how many older records were dropped to stay within
    /// the bound.
    pub fn append<'a, I>(&self, records: I) -> Result<u64, SpoolError>
    where
        I: IntoIterator<Item = (&'a [u8], &'a [u8])>,
    {
        let mut s = self.lock();
        let mut dropped = 0;
        for (key, value) in records {
            let len = 2 + key.len() + value.len();
            if len > MAX_RECORD || key.len() > usize::from(u16::MAX) {
                return Err(SpoolError::TooLarge(len));
            }
            let need_new = match s.segments.back() {
                None => true,
                Some(seg) => seg.bytes >= s.segment_bytes || s.writer.is_none() && seg.bytes > 0,
            };
            if need_new || s.writer.is_none() {
                s.roll(need_new)?;
            }
            let mut body = Vec::with_capacity(len);
            body.extend_from_slice(&(key.len() as u16).to_le_bytes());
            body.extend_from_slice(key);
            body.extend_from_slice(value);
            let w = s.writer.as_mut().expect("rolled above");
            w.write_all(&(len as u32).to_le_bytes())?;
            w.write_all(&crc32fast::hash(&body).to_le_bytes())?;
            w.write_all(&body)?;
            let seg = s.segments.back_mut().expect("rolled above");
            seg.records += 1;
            seg.bytes += (HEADER + len) as u64;
            s.total_bytes += (HEADER + len) as u64;
            s.next_seq += 1;
            dropped += s.enforce_bound()?;
        }
        if let Some(w) = s.writer.as_mut() {
            w.flush()?;
        }
        drop(s);
        self.notify.notify_one();
        Ok(dropped)
    }

    /// Records appended and not yet acknowledged.
    pub fn backlog(&self) -> u64 {
        let s = self.lock();
        s.next_seq - s.acked_seq
    }

    /// Bytes held on disk.
    pub fn bytes(&self) -> u64 {
        self.lock().total_bytes
    }

    /// Records dropped unsent since the spool was opened.
    pub fn dropped(&self) -> u64 {
        self.lock().dropped
    }

    /// The acknowledged position (where a new reader starts).
    pub fn acked(&self) -> (u64, Position) {
        let s = self.lock();
        (s.acked_seq, s.acked_pos)
    }

    /// Resolves when records were appended since the last call.
    pub async fn appended(&self) {
        self.notify.notified().await;
    }

    /// Marks every record up to and including `seq` (ending at `end`)
    /// acknowledged and deletes segments wholly acknowledged. The cursor
    /// reaches the disk at the next [`Spool::sync_cursor`].
    pub fn ack(&self, seq: u64, end: Position) -> Result<(), SpoolError> {
        let mut s = self.lock();
        if seq < s.acked_seq {
            return Ok(()); // older than what a drop already skipped
        }
        s.acked_seq = seq + 1;
        s.acked_pos = end;
        // Delete segments entirely before the cursor (never the one written).
        while s.segments.len() > 1 {
            let first = &s.segments[0];
            if first.first_seq + first.records <= s.acked_seq {
                let seg = s.segments.pop_front().expect("len > 1");
                s.total_bytes -= seg.bytes;
                fs::remove_file(seg_path(&s.dir, seg.first_seq))?;
            } else {
                break;
            }
        }
        Ok(())
    }

    /// Writes the acknowledged cursor (atomically: temp file and rename), so
    /// a restart resends nothing acknowledged before this call.
    pub fn sync_cursor(&self) -> Result<(), SpoolError> {
        let s = self.lock();
        let tmp = s.dir.join("cursor.tmp");
        fs::write(
            &tmp,
            format!(
                "{} {} {}\n",
                s.acked_seq, s.acked_pos.segment, s.acked_pos.offset
            ),
        )?;
        fs::rename(&tmp, s.dir.join("cursor"))?;
        Ok(())
    }

    /// A reader that starts at the acknowledged cursor.
    pub fn reader(&self) -> Reader {
        let (seq, pos) = self.acked();
        Reader {
            spool: self.clone(),
            seq,
            pos,
            file: None,
            buf: Vec::new(),
            buf_at: Position::default(),
        }
    }
}

impl Shared {
    /// Opens the segment to write: a new one when `fresh`, else reopens the
    /// last one for appending.
    fn roll(&mut self, fresh: bool) -> Result<(), SpoolError> {
        if let Some(mut w) = self.writer.take() {
            w.flush()?;
        }
        if fresh {
            self.segments.push_back(Segment {
                first_seq: self.next_seq,
                records: 0,
                bytes: 0,
            });
        }
        let first = self.segments.back().expect("pushed").first_seq;
        let file = {
            use std::os::unix::fs::OpenOptionsExt;
            OpenOptions::new()
                .create(true)
                .append(true)
                .mode(0o600)
                .open(seg_path(&self.dir, first))?
        };
        self.writer = Some(BufWriter::with_capacity(256 << 10, file));
        Ok(())
    }

    /// Deletes the oldest segments while over the bound.
    fn enforce_bound(&mut self) -> Result<u64, SpoolError> {
        let mut dropped = 0;
        while self.total_bytes > self.max_bytes && self.segments.len() > 1 {
            let seg = self.segments.pop_front().expect("len > 1");
            self.total_bytes -= seg.bytes;
            fs::remove_file(seg_path(&self.dir, seg.first_seq))?;
            let end = seg.first_seq + seg.records;
            if end > self.acked_seq {
                let lost = end - self.acked_seq.max(seg.first_seq);
                dropped += lost;
                self.dropped += lost;
                self.acked_seq = end;
                self.acked_pos = Position {
                    segment: self.segments[0].first_seq,
                    offset: 0,
                };
                crate::metrics::SPOOL_DROPPED.inc_by(lost);
                tracing::warn!(
                    dropped = lost,
                    max_bytes = self.max_bytes,
                    "spool full: oldest unsent events dropped"
                );
            }
        }
        Ok(dropped)
    }
}

/// Reads records in order from a position; can be rewound to the
/// acknowledged cursor after a failed delivery.
pub struct Reader {
    spool: Spool,
    seq: u64,
    pos: Position,
    file: Option<(u64, File)>,
    /// Read-ahead: bytes of segment `buf_at.segment` from `buf_at.offset`.
    buf: Vec<u8>,
    buf_at: Position,
}

/// Bytes read from a segment at once.
const READ_AHEAD: u64 = 1 << 20;

impl Reader {
    /// The sequence number of the next record to read.
    pub fn next_seq(&self) -> u64 {
        self.seq
    }

    /// Goes back to the acknowledged cursor (after a failed delivery: every
    /// record after it is read, and sent, again).
    pub fn rewind(&mut self) {
        let (seq, pos) = self.spool.acked();
        self.seq = seq;
        self.pos = pos;
        self.file = None;
        self.buf.clear();
    }

    /// Reads up to `max` records (or about `max_bytes`). Empty when the
    /// reader has caught up with the writer.
    pub fn read(&mut self, max: usize, max_bytes: usize) -> Result<Vec<Record>, SpoolError> {
        let mut out = Vec::new();
        let mut bytes = 0;
        while out.len() < max && bytes < max_bytes {
            // Where the next record is, given what exists now.
            let (segments, acked_seq) = {
                let s = self.spool.lock();
                let segs: Vec<(u64, u64, u64)> = s
                    .segments
                    .iter()
                    .map(|g| (g.first_seq, g.records, g.bytes))
                    .collect();
                (segs, s.acked_seq)
            };
            if self.seq < acked_seq {
                // Segments were dropped under us: skip to what is left.
                self.seq = acked_seq;
                self.pos = Position {
                    segment: segments.first().map_or(self.seq, |g| g.0),
                    offset: 0,
                };
                self.file = None;
            }
            let Some(idx) = segments.iter().position(|g| g.0 == self.pos.segment) else {
                // Our segment is gone (acked and deleted, or dropped): move
                // to the segment holding `seq`.
                match segments
                    .iter()
                    .find(|g| g.0 <= self.seq && self.seq < g.0 + g.1.max(1))
                {
                    Some(g) if g.0 != self.pos.segment => {
                        self.pos = Position {
                            segment: g.0,
                            offset: 0,
                        };
                        self.seq = self.seq.max(g.0);
                        self.file = None;
                        continue;
                    }
                    _ => break,
                }
            };
            let (first, records, seg_bytes) = segments[idx];
            if self.pos.offset >= seg_bytes {
                if idx + 1 < segments.len() && self.seq >= first + records {
                    self.pos = Position {
                        segment: segments[idx + 1].0,
                        offset: 0,
                    };
                    self.file = None;
                    continue;
                }
                break; // caught up
            }
            // Serve from the read-ahead when it holds the next record.
            let in_buf = self.buf_at.segment == self.pos.segment
                && self.pos.offset >= self.buf_at.offset
                && self.pos.offset < self.buf_at.offset + self.buf.len() as u64;
            let mut off = if in_buf {
                (self.pos.offset - self.buf_at.offset) as usize
            } else {
                0
            };
            if !in_buf || parse(&self.buf, off).is_none() {
                if self
                    .file
                    .as_ref()
                    .is_none_or(|(s, _)| *s != self.pos.segment)
                {
                    let dir = self.spool.lock().dir.clone();
                    let f = File::open(seg_path(&dir, self.pos.segment))?;
                    self.file = Some((self.pos.segment, f));
                }
                let (_, f) = self.file.as_mut().expect("opened above");
                let want =
                    (seg_bytes - self.pos.offset).min(READ_AHEAD.max(max_bytes as u64)) as usize;
                self.buf.resize(want, 0);
                f.seek(SeekFrom::Start(self.pos.offset))?;
                f.read_exact(&mut self.buf)?;
                self.buf_at = self.pos;
                off = 0;
            }
            let start = off;
            while out.len() < max && bytes < max_bytes {
                let Some(Parsed { key, value, end }) = parse(&self.buf, off) else {
                    break;
                };
                self.pos.offset += (end - off) as u64;
                bytes += end - off;
                out.push(Record {
                    seq: self.seq,
                    end: self.pos,
                    key: self.buf[key].to_vec(),
                    value: self.buf[value].to_vec(),
                });
                self.seq += 1;
                off = end;
            }
            if off == start {
                // Not even one whole record: only possible if the writer's
                // bytes are not all flushed yet; try again later.
                break;
            }
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_spool_is_readable_by_its_owner_only() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path().join("spool");
        let s = Spool::open(&d, 1 << 20, 1 << 16).unwrap();
        s.append([(&b"k"[..], &b"argv with a secret"[..])]).unwrap();
        let mode = |p: &Path| fs::metadata(p).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode(&d), 0o700);
        let seg = fs::read_dir(&d)
            .unwrap()
            .filter_map(|e| e.ok())
            .find(|e| e.file_name().to_string_lossy().ends_with(".seg"))
            .expect("a segment");
        assert_eq!(mode(&seg.path()), 0o600);
    }

    fn recs(n: std::ops::Range<u32>) -> Vec<(Vec<u8>, Vec<u8>)> {
        n.map(|i| {
            (
                format!("k{}", i % 3).into_bytes(),
                format!("value-{i}").into_bytes(),
            )
        })
        .collect()
    }

    fn append(s: &Spool, r: &[(Vec<u8>, Vec<u8>)]) -> u64 {
        s.append(r.iter().map(|(k, v)| (k.as_slice(), v.as_slice())))
            .unwrap()
    }

    fn values(r: &[Record]) -> Vec<String> {
        r.iter()
            .map(|r| String::from_utf8(r.value.clone()).unwrap())
            .collect()
    }

    #[test]
    fn reads_back_in_order_across_segments() {
        let dir = tempfile::tempdir().unwrap();
        let s = Spool::open(dir.path(), 1 << 30, 200).unwrap();
        append(&s, &recs(0..50));
        let mut r = s.reader();
        let got = r.read(1000, usize::MAX).unwrap();
        assert_eq!(got.len(), 50);
        let want: Vec<String> = (0..50).map(|i| format!("value-{i}")).collect();
        assert_eq!(values(&got), want);
        assert_eq!(got[7].key, b"k1");
        assert!(got.windows(2).all(|w| w[1].seq == w[0].seq + 1));
        // More than one segment was written.
        assert!(fs::read_dir(dir.path()).unwrap().count() > 3);
        assert!(r.read(10, usize::MAX).unwrap().is_empty(), "caught up");
        append(&s, &recs(50..52));
        assert_eq!(
            values(&r.read(10, usize::MAX).unwrap()),
            ["value-50", "value-51"]
        );
    }

    #[test]
    fn acked_segments_are_deleted_and_a_reopen_resumes_after_the_ack() {
        let dir = tempfile::tempdir().unwrap();
        {
            let s = Spool::open(dir.path(), 1 << 30, 200).unwrap();
            append(&s, &recs(0..40));
            let mut r = s.reader();
            let got = r.read(25, usize::MAX).unwrap();
            let last = got.last().unwrap();
            s.ack(last.seq, last.end).unwrap();
            s.sync_cursor().unwrap();
            assert_eq!(s.backlog(), 15);
        }
        let segs = fs::read_dir(dir.path())
            .unwrap()
            .filter(|e| {
                e.as_ref()
                    .unwrap()
                    .path()
                    .extension()
                    .is_some_and(|x| x == "seg")
            })
            .count();
        assert!(segs < 8, "acknowledged segments deleted ({segs} left)");
        let s = Spool::open(dir.path(), 1 << 30, 200).unwrap();
        assert_eq!(s.backlog(), 15);
        let got = s.reader().read(100, usize::MAX).unwrap();
        let want: Vec<String> = (25..40).map(|i| format!("value-{i}")).collect();
        assert_eq!(values(&got), want);
        // New records continue the sequence.
        append(&s, &recs(40..41));
        let mut r = s.reader();
        let all = r.read(100, usize::MAX).unwrap();
        assert_eq!(all.last().unwrap().seq, 40);
    }

    #[test]
    fn rewind_sends_everything_after_the_ack_again() {
        let dir = tempfile::tempdir().unwrap();
        let s = Spool::open(dir.path(), 1 << 30, 1 << 20).unwrap();
        append(&s, &recs(0..10));
        let mut r = s.reader();
        let got = r.read(4, usize::MAX).unwrap();
        s.ack(got[1].seq, got[1].end).unwrap();
        let _ = r.read(100, usize::MAX).unwrap();
        r.rewind();
        let again = r.read(100, usize::MAX).unwrap();
        let want: Vec<String> = (2..10).map(|i| format!("value-{i}")).collect();
        assert_eq!(values(&again), want);
    }

    #[test]
    fn a_full_spool_drops_the_oldest_and_counts_them() {
        let dir = tempfile::tempdir().unwrap();
        // ~27 bytes a record, 100-byte segments, 300-byte bound.
        let s = Spool::open(dir.path(), 300, 100).unwrap();
        let dropped = append(&s, &recs(0..60));
        assert!(dropped > 0);
        assert_eq!(s.dropped(), dropped);
        assert!(s.bytes() <= 300 + 100, "bounded: {} bytes", s.bytes());
        let got = s.reader().read(1000, usize::MAX).unwrap();
        // What is left is the newest, in order, and nothing is both dropped
        // and read.
        assert_eq!(got.len() as u64 + dropped, 60);
        assert_eq!(values(&got).last().unwrap(), "value-59");
        assert!(got.windows(2).all(|w| w[1].seq == w[0].seq + 1));
    }

    #[test]
    fn a_reader_behind_a_drop_skips_to_what_is_left() {
        let dir = tempfile::tempdir().unwrap();
        let s = Spool::open(dir.path(), 300, 100).unwrap();
        append(&s, &recs(0..5));
        let mut r = s.reader();
        assert_eq!(r.read(2, usize::MAX).unwrap().len(), 2);
        let dropped = append(&s, &recs(5..60));
        let got = r.read(1000, usize::MAX).unwrap();
        // The two records read but not yet acknowledged were dropped too:
        // until Kafka acknowledges them they count as not delivered.
        assert_eq!(got.len() as u64 + dropped, 60);
        assert_eq!(got.first().unwrap().seq, s.acked().0);
    }

    #[test]
    fn a_torn_tail_is_cut_off_on_open() {
        let dir = tempfile::tempdir().unwrap();
        {
            let s = Spool::open(dir.path(), 1 << 30, 1 << 20).unwrap();
            append(&s, &recs(0..3));
        }
        let seg = seg_path(dir.path(), 0);
        let mut f = OpenOptions::new().append(true).open(&seg).unwrap();
        f.write_all(&[200, 0, 0, 0, 1, 2]).unwrap(); // half a header
        drop(f);
        let s = Spool::open(dir.path(), 1 << 30, 1 << 20).unwrap();
        append(&s, &recs(3..4));
        let got = s.reader().read(100, usize::MAX).unwrap();
        assert_eq!(values(&got), ["value-0", "value-1", "value-2", "value-3"]);
    }

    #[test]
    fn corrupt_bytes_are_not_returned_as_records() {
        let dir = tempfile::tempdir().unwrap();
        {
            let s = Spool::open(dir.path(), 1 << 30, 1 << 20).unwrap();
            append(&s, &recs(0..3));
        }
        let seg = seg_path(dir.path(), 0);
        let mut data = fs::read(&seg).unwrap();
        let n = data.len();
        data[n - 2] ^= 0xff; // flip a byte of the last record
        fs::write(&seg, data).unwrap();
        let s = Spool::open(dir.path(), 1 << 30, 1 << 20).unwrap();
        let got = s.reader().read(100, usize::MAX).unwrap();
        assert_eq!(values(&got), ["value-0", "value-1"]);
    }
}
