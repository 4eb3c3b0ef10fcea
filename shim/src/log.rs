//! The CRI container log: every line of the container's output becomes one record
//! `<RFC3339Nano UTC> <stdout|stderr> <F|P> <content>\n`, as kubelet reads it.
//!
//! Like containerd's CRI logger: a line longer than [`MAX_LINE`] is cut into `P`
//! (partial) records of `MAX_LINE` bytes followed by an `F` record with the rest; a
//! `\r\n` ending loses its `\r`; output that ends without a newline at EOF is written
//! as a `P` record.

use std::fs::{File, OpenOptions};
use std::io::{self, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use chrono::{DateTime, SecondsFormat, Utc};

/// The longest content of one log record (kubelet's limit); longer lines are split.
pub const MAX_LINE: usize = 16 * 1024;

/// The stream a record came from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Stream {
    /// The container's standard output (and its terminal, with a tty).
    Stdout,
    /// The container's standard error.
    Stderr,
}

impl Stream {
    fn as_str(self) -> &'static str {
        match self {
            Stream::Stdout => "stdout",
            Stream::Stderr => "stderr",
        }
    }
}

/// Whether a record ends its line (`F`) or the line goes on in the next record (`P`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Tag {
    /// A chunk of a line that continues in the next record.
    Partial,
    /// The end of a line.
    Full,
}

impl Tag {
    fn as_str(self) -> &'static str {
        match self {
            Tag::Partial => "P",
            Tag::Full => "F",
        }
    }
}

/// Cuts one stream's bytes into log records, holding the unfinished line between reads.
#[derive(Debug)]
pub struct LineSplitter {
    pending: Vec<u8>,
    max: usize,
}

impl Default for LineSplitter {
    fn default() -> Self {
        Self::with_max(MAX_LINE)
    }
}

impl LineSplitter {
    /// A splitter that cuts lines longer than `max` bytes.
    pub fn with_max(max: usize) -> Self {
        Self {
            pending: Vec::new(),
            max: max.max(1),
        }
    }

    /// Feeds bytes read from the stream; `emit` gets each complete record.
    pub fn push(&mut self, mut data: &[u8], emit: &mut impl FnMut(Tag, &[u8])) {
        while let Some(i) = data.iter().position(|&b| b == b'\n') {
            self.pending.extend_from_slice(&data[..i]);
            data = &data[i + 1..];
            if self.pending.last() == Some(&b'\r') {
                self.pending.pop();
            }
            let mut line = self.pending.as_slice();
            while line.len() > self.max {
                emit(Tag::Partial, &line[..self.max]);
                line = &line[self.max..];
            }
            emit(Tag::Full, line);
            self.pending.clear();
        }
        self.pending.extend_from_slice(data);
        if self.pending.len() > self.max {
            let mut rest = self.pending.as_slice();
            while rest.len() > self.max {
                emit(Tag::Partial, &rest[..self.max]);
                rest = &rest[self.max..];
            }
            let kept = rest.len();
            let start = self.pending.len() - kept;
            self.pending.drain(..start);
        }
    }

    /// Ends the stream: an unfinished line is emitted as a partial record.
    pub fn finish(&mut self, emit: &mut impl FnMut(Tag, &[u8])) {
        if !self.pending.is_empty() {
            emit(Tag::Partial, &self.pending);
            self.pending.clear();
        }
    }
}

/// Appends one record to `out`.
pub fn format_record(
    out: &mut Vec<u8>,
    time: DateTime<Utc>,
    stream: Stream,
    tag: Tag,
    content: &[u8],
) {
    out.extend_from_slice(time.to_rfc3339_opts(SecondsFormat::Nanos, true).as_bytes());
    out.push(b' ');
    out.extend_from_slice(stream.as_str().as_bytes());
    out.push(b' ');
    out.extend_from_slice(tag.as_str().as_bytes());
    out.push(b' ');
    out.extend_from_slice(content);
    out.push(b'\n');
}

/// The container's log file, reopened on request so that kubelet can rotate it.
/// Without a path, output is read and dropped.
#[derive(Debug)]
pub struct LogFile {
    path: Option<PathBuf>,
    file: Option<File>,
    buf: Vec<u8>,
}

impl LogFile {
    /// Opens (creates, appends to) the log file at `path`; an empty path discards.
    pub fn open(path: &Path) -> io::Result<Self> {
        let path = (!path.as_os_str().is_empty()).then(|| path.to_path_buf());
        let file = path.as_deref().map(open_append).transpose()?;
        Ok(Self {
            path,
            file,
            buf: Vec::new(),
        })
    }

    /// Closes and opens the file again at its path (after kubelet renamed it).
    pub fn reopen(&mut self) -> io::Result<()> {
        if let Some(path) = &self.path {
            self.file = None;
            self.file = Some(open_append(path)?);
        }
        Ok(())
    }

    /// Writes one record in a single write, so records never interleave.
    pub fn write_record(&mut self, stream: Stream, tag: Tag, content: &[u8]) {
        let Some(file) = &mut self.file else { return };
        self.buf.clear();
        format_record(&mut self.buf, Utc::now(), stream, tag, content);
        if let Err(err) = file.write_all(&self.buf) {
            // Keep draining the container's output even when the disk is full.
            tracing::warn!(path = ?self.path, %err, "write container log");
        }
        if self.buf.capacity() > 4 * MAX_LINE {
            self.buf = Vec::new();
        }
    }
}

fn open_append(path: &Path) -> io::Result<File> {
    OpenOptions::new()
        .create(true)
        .append(true)
        .mode(0o640)
        .open(path)
}

#[cfg(test)]
mod tests {
    use chrono::TimeZone;

    use super::*;

    fn split(max: usize, reads: &[&[u8]], finish: bool) -> Vec<(Tag, String)> {
        let mut s = LineSplitter::with_max(max);
        let mut out = Vec::new();
        let mut emit = |t: Tag, c: &[u8]| out.push((t, String::from_utf8_lossy(c).into_owned()));
        for r in reads {
            s.push(r, &mut emit);
        }
        if finish {
            s.finish(&mut emit);
        }
        out
    }

    #[test]
    fn formats_record_with_nanoseconds_in_utc() {
        let t = Utc.timestamp_opt(1_475_713_029, 669_794_202).unwrap();
        let mut out = Vec::new();
        format_record(&mut out, t, Stream::Stderr, Tag::Full, b"hello");
        assert_eq!(out, b"2016-10-06T00:17:09.669794202Z stderr F hello\n");
        out.clear();
        let t = Utc.timestamp_opt(1_475_713_029, 0).unwrap();
        format_record(&mut out, t, Stream::Stdout, Tag::Partial, b"");
        assert_eq!(out, b"2016-10-06T00:17:09.000000000Z stdout P \n");
    }

    #[test]
    fn lines_across_reads() {
        let got = split(16, &[b"hel", b"lo\nwor", b"ld\n\n"], true);
        let want = [(Tag::Full, "hello"), (Tag::Full, "world"), (Tag::Full, "")];
        assert_eq!(got, want.map(|(t, s)| (t, s.to_owned())));
    }

    #[test]
    fn crlf_loses_cr() {
        let got = split(16, &[b"a\r", b"\nb\r\n"], true);
        assert_eq!(got, vec![(Tag::Full, "a".into()), (Tag::Full, "b".into())]);
    }

    #[test]
    fn long_line_is_split_into_partials_then_full() {
        let line = "x".repeat(40 * 1024) + "\n";
        let got = split(MAX_LINE, &[line.as_bytes()], true);
        let tags: Vec<_> = got.iter().map(|(t, c)| (*t, c.len())).collect();
        assert_eq!(
            tags,
            [
                (Tag::Partial, MAX_LINE),
                (Tag::Partial, MAX_LINE),
                (Tag::Full, 8192)
            ]
        );
    }

    #[test]
    fn long_line_in_small_reads() {
        let got = split(4, &[b"abc", b"defgh", b"ij", b"\n"], true);
        let want = [
            (Tag::Partial, "abcd"),
            (Tag::Partial, "efgh"),
            (Tag::Full, "ij"),
        ];
        assert_eq!(got, want.map(|(t, s)| (t, s.to_owned())));
    }

    #[test]
    fn line_of_exactly_max_is_full() {
        let got = split(4, &[b"abcd", b"\nabcdefgh\n"], true);
        let want = [
            (Tag::Full, "abcd"),
            (Tag::Partial, "abcd"),
            (Tag::Full, "efgh"),
        ];
        assert_eq!(got, want.map(|(t, s)| (t, s.to_owned())));
    }

    #[test]
    fn unfinished_line_at_eof_is_partial() {
        let got = split(16, &[b"one\ntwo"], true);
        assert_eq!(
            got,
            vec![(Tag::Full, "one".into()), (Tag::Partial, "two".into())]
        );
        assert_eq!(
            split(16, &[b"one\n"], true),
            vec![(Tag::Full, "one".into())]
        );
    }

    #[test]
    fn log_file_reopens_after_rename() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("0.log");
        let mut log = LogFile::open(&path).unwrap();
        log.write_record(Stream::Stdout, Tag::Full, b"first");
        std::fs::rename(&path, dir.path().join("0.log.1")).unwrap();
        log.reopen().unwrap();
        log.write_record(Stream::Stderr, Tag::Full, b"second");
        let now = std::fs::read_to_string(&path).unwrap();
        assert!(now.ends_with(" stderr F second\n"), "{now}");
        let old = std::fs::read_to_string(dir.path().join("0.log.1")).unwrap();
        assert!(old.ends_with(" stdout F first\n"), "{old}");
    }

    #[test]
    fn empty_path_discards() {
        let mut log = LogFile::open(Path::new("")).unwrap();
        log.write_record(Stream::Stdout, Tag::Full, b"gone");
        log.reopen().unwrap();
    }
}
