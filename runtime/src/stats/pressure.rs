//! A cgroup v2's pressure stall information (PSI): `cpu.pressure`, `memory.pressure`
//! and `io.pressure`, which kubelet reports in its summary (feature KubeletPSI) from
//! the CRI stats, as containerd sends them.
//!
//! Read directly: libcgroups's PSI figures have no `total` (the one kubelet's memory
//! check reads), and a missing file there fails the whole sample. Here a file that is
//! missing or unreadable (a kernel without PSI, `psi=0`, cgroup v1) leaves that
//! resource without PSI and costs nothing else.

use std::path::Path;

/// One line of a pressure file: the share of wall time (in %) tasks stalled over the
/// last 10, 60 and 300 s, and the total stall time.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct PsiLine {
    /// Average over 10 s, in %.
    pub avg10: f64,
    /// Average over 60 s, in %.
    pub avg60: f64,
    /// Average over 300 s, in %.
    pub avg300: f64,
    /// Total stall time since the cgroup was created, in microseconds (the kernel's
    /// unit).
    pub total_micros: u64,
}

/// One pressure file: `some` (at least one task stalled) and `full` (all stalled;
/// the kernel reports no `full` for CPU before 5.13).
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Psi {
    /// At least one task stalled.
    pub some: PsiLine,
    /// Every non-idle task stalled at once.
    pub full: Option<PsiLine>,
}

/// A cgroup's pressure per resource; `None` where its file is not there.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Pressure {
    /// `cpu.pressure`.
    pub cpu: Option<Psi>,
    /// `memory.pressure`.
    pub memory: Option<Psi>,
    /// `io.pressure`.
    pub io: Option<Psi>,
}

/// Reads the pressure files of the cgroup v2 directory `dir`.
pub fn read(dir: &Path) -> Pressure {
    let file = |name: &str| {
        std::fs::read_to_string(dir.join(name))
            .ok()
            .and_then(|text| parse(&text))
    };
    Pressure {
        cpu: file("cpu.pressure"),
        memory: file("memory.pressure"),
        io: file("io.pressure"),
    }
}

/// Parses a pressure file: `some avg10=0.12 avg60=0.05 avg300=0.01 total=12345` and
/// the same for `full`. `None` without a well-formed `some` line.
fn parse(text: &str) -> Option<Psi> {
    let mut some = None;
    let mut full = None;
    for line in text.lines() {
        let Some((kind, fields)) = line.split_once(' ') else {
            continue;
        };
        match kind {
            "some" => some = Some(parse_line(fields)?),
            "full" => full = Some(parse_line(fields)?),
            _ => {}
        }
    }
    Some(Psi { some: some?, full })
}

fn parse_line(fields: &str) -> Option<PsiLine> {
    let mut line = PsiLine::default();
    let (mut avgs, mut total) = (0, false);
    for field in fields.split_ascii_whitespace() {
        let (key, value) = field.split_once('=')?;
        match key {
            "avg10" => (line.avg10, avgs) = (value.parse().ok()?, avgs + 1),
            "avg60" => (line.avg60, avgs) = (value.parse().ok()?, avgs + 1),
            "avg300" => (line.avg300, avgs) = (value.parse().ok()?, avgs + 1),
            "total" => (line.total_micros, total) = (value.parse().ok()?, true),
            _ => {}
        }
    }
    (avgs == 3 && total).then_some(line)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_some_and_full() {
        let psi = parse(
            "some avg10=54.70 avg60=54.25 avg300=40.29 total=2096549586\n\
             full avg10=0.00 avg60=1.50 avg300=0.00 total=7\n",
        )
        .unwrap();
        assert_eq!(
            psi.some,
            PsiLine {
                avg10: 54.70,
                avg60: 54.25,
                avg300: 40.29,
                total_micros: 2_096_549_586,
            }
        );
        let full = psi.full.unwrap();
        assert_eq!((full.avg60, full.total_micros), (1.5, 7));
    }

    #[test]
    fn cpu_without_full_and_bad_files() {
        let psi = parse("some avg10=0.00 avg60=0.00 avg300=0.00 total=0\n").unwrap();
        assert_eq!(psi.full, None);
        assert_eq!(parse(""), None, "empty");
        assert_eq!(
            parse("full avg10=0.00 avg60=0.00 avg300=0.00 total=0"),
            None
        );
        assert_eq!(
            parse("some avg10=0.00 avg60=0.00 total=0"),
            None,
            "an average missing"
        );
        assert_eq!(parse("some avg10=x avg60=0.00 avg300=0.00 total=0"), None);
        assert_eq!(
            parse("some avg10=0.00 avg60=0.00 avg300=0.00"),
            None,
            "no total"
        );
    }

    #[test]
    fn reads_the_files_there_are() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(
            dir.path().join("memory.pressure"),
            "some avg10=1.00 avg60=2.00 avg300=3.00 total=40\n\
             full avg10=0.50 avg60=1.00 avg300=1.50 total=20\n",
        )
        .unwrap();
        std::fs::write(dir.path().join("io.pressure"), "not psi\n").unwrap();
        let p = read(dir.path());
        assert_eq!(p.cpu, None, "no file");
        assert_eq!(p.io, None, "unparsable");
        let m = p.memory.unwrap();
        assert_eq!(
            (m.some.total_micros, m.full.unwrap().total_micros),
            (40, 20)
        );
    }
}
