//! The shim's own log, `<state>/shim.log`: a minimal `tracing` subscriber that writes
//! one line per event (time, level, target, message and fields). Spans are ignored.
//! It is far lighter than tracing-subscriber, and it holds its lock only while writing
//! a line on the shim's single thread, so processes cloned by libcontainer never
//! inherit it held.

use std::fmt::{self, Write as _};
use std::fs::File;
use std::io::Write;
use std::sync::Mutex;

use tracing::field::{Field, Visit};
use tracing::span::{Attributes, Id, Record};
use tracing::{Event, Level, Metadata, Subscriber};

/// Writes events at `level` or more severe (libcgroups: errors only, its v1 manager
/// warns about every controller this host lacks) to a file.
pub struct FileLog {
    file: Mutex<File>,
    level: Level,
}

impl FileLog {
    /// Logs to `file`.
    pub fn new(file: File, level: Level) -> Self {
        Self {
            file: Mutex::new(file),
            level,
        }
    }
}

struct Line(String);

impl Visit for Line {
    fn record_debug(&mut self, field: &Field, value: &dyn fmt::Debug) {
        if field.name() == "message" {
            let _ = write!(self.0, " {value:?}");
        } else {
            let _ = write!(self.0, " {}={value:?}", field.name());
        }
    }

    fn record_str(&mut self, field: &Field, value: &str) {
        if field.name() == "message" {
            let _ = write!(self.0, " {value}");
        } else {
            let _ = write!(self.0, " {}={value:?}", field.name());
        }
    }
}

impl Subscriber for FileLog {
    fn enabled(&self, meta: &Metadata<'_>) -> bool {
        let max = if meta.target().starts_with("libcgroups") {
            Level::ERROR
        } else {
            self.level
        };
        *meta.level() <= max
    }

    fn new_span(&self, _: &Attributes<'_>) -> Id {
        Id::from_u64(1)
    }

    fn record(&self, _: &Id, _: &Record<'_>) {}

    fn record_follows_from(&self, _: &Id, _: &Id) {}

    fn event(&self, event: &Event<'_>) {
        let meta = event.metadata();
        let now = chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Micros, true);
        let mut line = Line(format!("{now} {} {}:", meta.level(), meta.target()));
        event.record(&mut line);
        line.0.push('\n');
        if let Ok(mut f) = self.file.lock() {
            let _ = f.write_all(line.0.as_bytes());
        }
    }

    fn enter(&self, _: &Id) {}

    fn exit(&self, _: &Id) {}
}
