//! Where the `log` facade's records go: stderr, syslog, or a file.
//!
//! Stderr and file lines look like the AP logs operators know:
//! `[*01/30/2024 21:41:35.1120] message` — UTC, month/day/year, 1/10000 s. Syslog messages are
//! RFC 3164, facility daemon, sent to `/dev/log`, with the syslog daemon adding its own time.
//! The binaries choose the target; nothing here guesses.

use std::fmt;
use std::fs::{File, OpenOptions};
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::{SystemTime, UNIX_EPOCH};

use log::{Level, LevelFilter, Log, Metadata, Record};
use syslog::{Facility, Formatter3164, LoggerBackend};

/// Where log records are written.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LogTarget {
    /// Standard error, one `[*timestamp] message` line per record.
    Stderr,
    /// The local syslog daemon through `/dev/log` (RFC 3164, facility daemon), as `ident[pid]`.
    Syslog { ident: String },
    /// Appended to this file (created if missing), in the stderr format. Nothing goes to stderr.
    File(PathBuf),
}

/// Why logging could not be set up.
#[derive(Debug)]
pub enum LogError {
    /// A logger was already installed in this process.
    AlreadyInitialized,
    /// The syslog socket could not be reached.
    Syslog(syslog::Error),
    /// The log file could not be opened.
    File { path: PathBuf, err: io::Error },
}

impl fmt::Display for LogError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            LogError::AlreadyInitialized => write!(f, "a logger is already installed"),
            LogError::Syslog(e) => write!(f, "cannot connect to syslog: {e}"),
            LogError::File { path, err } => {
                write!(f, "cannot open log file {}: {err}", path.display())
            }
        }
    }
}

impl std::error::Error for LogError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            LogError::AlreadyInitialized => None,
            LogError::Syslog(e) => Some(e),
            LogError::File { err, .. } => Some(err),
        }
    }
}

/// The syslog socket.
pub const SYSLOG_PATH: &str = "/dev/log";

/// Installs the process-wide logger for `target`, passing records up to `level`.
/// Can succeed once per process.
pub fn init(target: LogTarget, level: LevelFilter) -> Result<(), LogError> {
    let logger = build(target, level)?;
    log::set_boxed_logger(logger).map_err(|_| LogError::AlreadyInitialized)?;
    log::set_max_level(level);
    Ok(())
}

/// Builds the logger for `target` without installing it.
pub fn build(target: LogTarget, level: LevelFilter) -> Result<Box<dyn Log>, LogError> {
    Ok(match target {
        LogTarget::Stderr => Box::new(LineLogger {
            level,
            out: Mutex::new(Box::new(io::stderr()) as Box<dyn Write + Send>),
        }),
        LogTarget::File(path) => {
            let file = open_append(&path).map_err(|err| LogError::File { path, err })?;
            Box::new(LineLogger {
                level,
                out: Mutex::new(Box::new(file) as Box<dyn Write + Send>),
            })
        }
        LogTarget::Syslog { ident } => Box::new(SyslogLogger::connect(
            Path::new(SYSLOG_PATH),
            &ident,
            level,
        )?),
    })
}

fn open_append(path: &Path) -> io::Result<File> {
    OpenOptions::new().create(true).append(true).open(path)
}

/// Writes `[*MM/DD/YYYY HH:MM:SS.ffff]` for `t` in UTC (times before 1970 print as the epoch).
pub fn write_timestamp(out: &mut impl fmt::Write, t: SystemTime) -> fmt::Result {
    let since = t.duration_since(UNIX_EPOCH).unwrap_or_default();
    let secs = since.as_secs();
    let frac = since.subsec_nanos() / 100_000; // 1/10000 s, truncated
    let (year, month, day) = civil_from_days((secs / 86_400) as i64);
    let sod = secs % 86_400;
    write!(
        out,
        "[*{month:02}/{day:02}/{year:04} {:02}:{:02}:{:02}.{frac:04}]",
        sod / 3600,
        sod / 60 % 60,
        sod % 60
    )
}

/// [`write_timestamp`] into a new string.
pub fn format_timestamp(t: SystemTime) -> String {
    let mut s = String::with_capacity(28);
    write_timestamp(&mut s, t).expect("writing to a String");
    s
}

/// Days since 1970-01-01 to (year, month 1-12, day 1-31) in the proleptic Gregorian calendar
/// (H. Hinnant's `civil_from_days`).
fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097); // [0, 146096]
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365; // [0, 399]
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100); // [0, 365]
    let mp = (5 * doy + 2) / 153; // [0, 11], March-based
    let day = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let month = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let year = yoe + era * 400 + i64::from(month <= 2);
    (year, month, day)
}

/// One whole line per record: `[*timestamp] message\n`.
fn format_line(t: SystemTime, record: &Record<'_>) -> String {
    use fmt::Write as _;
    let mut line = String::with_capacity(96);
    let _ = write_timestamp(&mut line, t);
    let _ = writeln!(line, " {}", record.args());
    line
}

/// Stderr and file logger. Each line goes out in one `write_all`, so lines from several threads
/// (and, for a file opened in append mode, several processes) do not interleave.
struct LineLogger {
    level: LevelFilter,
    out: Mutex<Box<dyn Write + Send>>,
}

impl Log for LineLogger {
    fn enabled(&self, metadata: &Metadata<'_>) -> bool {
        metadata.level() <= self.level
    }

    fn log(&self, record: &Record<'_>) {
        if !self.enabled(record.metadata()) {
            return;
        }
        let line = format_line(SystemTime::now(), record);
        if let Ok(mut out) = self.out.lock() {
            let _ = out.write_all(line.as_bytes());
        }
    }

    fn flush(&self) {
        if let Ok(mut out) = self.out.lock() {
            let _ = out.flush();
        }
    }
}

/// RFC 3164 over a Unix datagram socket; reconnects once when a send fails (syslogd restarted).
struct SyslogLogger {
    level: LevelFilter,
    path: PathBuf,
    formatter: Formatter3164,
    inner: Mutex<Option<syslog::Logger<LoggerBackend, Formatter3164>>>,
}

impl SyslogLogger {
    fn connect(path: &Path, ident: &str, level: LevelFilter) -> Result<Self, LogError> {
        let formatter = Formatter3164 {
            facility: Facility::LOG_DAEMON,
            hostname: None,
            process: ident.to_owned(),
            pid: std::process::id(),
        };
        let logger = syslog::unix_custom(formatter.clone(), path).map_err(LogError::Syslog)?;
        Ok(SyslogLogger {
            level,
            path: path.to_owned(),
            formatter,
            inner: Mutex::new(Some(logger)),
        })
    }

    fn send(
        logger: &mut syslog::Logger<LoggerBackend, Formatter3164>,
        level: Level,
        msg: &str,
    ) -> syslog::Result<()> {
        match level {
            Level::Error => logger.err(msg),
            Level::Warn => logger.warning(msg),
            Level::Info => logger.info(msg),
            Level::Debug | Level::Trace => logger.debug(msg),
        }
    }
}

impl Log for SyslogLogger {
    fn enabled(&self, metadata: &Metadata<'_>) -> bool {
        metadata.level() <= self.level
    }

    fn log(&self, record: &Record<'_>) {
        if !self.enabled(record.metadata()) {
            return;
        }
        let msg = record.args().to_string();
        let Ok(mut inner) = self.inner.lock() else {
            return;
        };
        if let Some(logger) = inner.as_mut() {
            if Self::send(logger, record.level(), &msg).is_ok() {
                return;
            }
        }
        // Not connected, or the send failed: try once to reconnect, else drop the record.
        *inner = syslog::unix_custom(self.formatter.clone(), &self.path).ok();
        if let Some(logger) = inner.as_mut() {
            let _ = Self::send(logger, record.level(), &msg);
        }
    }

    fn flush(&self) {}
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn at(secs: u64, nanos: u32) -> SystemTime {
        UNIX_EPOCH + Duration::new(secs, nanos)
    }

    #[test]
    fn timestamp_matches_ap_log_format() {
        assert_eq!(
            format_timestamp(at(1_706_650_895, 112_000_000)),
            "[*01/30/2024 21:41:35.1120]"
        );
        assert_eq!(format_timestamp(at(0, 0)), "[*01/01/1970 00:00:00.0000]");
        // Truncated, not rounded.
        assert_eq!(
            format_timestamp(at(86_399, 999_999_999)),
            "[*01/01/1970 23:59:59.9999]"
        );
        // Leap days, century rule, end of year.
        assert_eq!(
            format_timestamp(at(951_782_400, 0)),
            "[*02/29/2000 00:00:00.0000]"
        );
        assert_eq!(
            format_timestamp(at(1_709_251_199, 500_000)),
            "[*02/29/2024 23:59:59.0005]"
        );
        assert_eq!(
            format_timestamp(at(4_107_542_399, 0)),
            "[*02/28/2100 23:59:59.0000]"
        );
        assert_eq!(
            format_timestamp(at(4_107_542_400, 0)),
            "[*03/01/2100 00:00:00.0000]"
        );
        assert_eq!(
            format_timestamp(at(1_735_689_599, 0)),
            "[*12/31/2024 23:59:59.0000]"
        );
        // Past 2038 (32-bit time_t boards must still print this right).
        assert_eq!(
            format_timestamp(at(2_147_483_648, 0)),
            "[*01/19/2038 03:14:08.0000]"
        );
        // Before the epoch: clamped.
        assert_eq!(
            format_timestamp(UNIX_EPOCH - Duration::from_secs(5)),
            "[*01/01/1970 00:00:00.0000]"
        );
    }

    #[test]
    fn civil_from_days_agrees_with_a_day_by_day_walk() {
        let (mut y, mut m, mut d) = (1970i64, 1u32, 1u32);
        for z in 0..(366 * 200) {
            assert_eq!(civil_from_days(z), (y, m, d), "day {z}");
            let leap = (y % 4 == 0 && y % 100 != 0) || y % 400 == 0;
            let len = [
                31,
                if leap { 29 } else { 28 },
                31,
                30,
                31,
                30,
                31,
                31,
                30,
                31,
                30,
                31,
            ];
            d += 1;
            if d > len[m as usize - 1] {
                d = 1;
                m += 1;
                if m > 12 {
                    m = 1;
                    y += 1;
                }
            }
        }
    }

    fn record_at(level: Level, args: fmt::Arguments<'_>, f: impl FnOnce(&Record<'_>)) {
        f(&Record::builder()
            .level(level)
            .args(args)
            .target("t")
            .build());
    }

    fn temp_path(name: &str) -> PathBuf {
        std::env::temp_dir().join(format!("wtpd-logging-{}-{name}", std::process::id()))
    }

    #[test]
    fn line_format() {
        record_at(Level::Info, format_args!("CAPWAP State: Join"), |r| {
            assert_eq!(
                format_line(at(1_706_650_895, 113_000_000), r),
                "[*01/30/2024 21:41:35.1130] CAPWAP State: Join\n"
            );
        });
    }

    #[test]
    fn file_target_appends_lines_at_or_above_level() {
        let path = temp_path("file.log");
        std::fs::write(&path, "earlier line\n").unwrap();
        let logger = build(LogTarget::File(path.clone()), LevelFilter::Info).unwrap();
        record_at(Level::Info, format_args!("hello {}", 42), |r| logger.log(r));
        record_at(Level::Debug, format_args!("not shown"), |r| logger.log(r));
        record_at(Level::Error, format_args!("bad"), |r| logger.log(r));
        logger.flush();
        let text = std::fs::read_to_string(&path).unwrap();
        std::fs::remove_file(&path).ok();
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines.len(), 3, "{text:?}");
        assert_eq!(lines[0], "earlier line");
        for (line, msg) in lines[1..].iter().zip(["hello 42", "bad"]) {
            assert!(line.starts_with("[*"), "{line}");
            assert_eq!(&line[26..], &format!("] {msg}"), "{line}");
        }
    }

    #[test]
    fn file_target_reports_unopenable_path() {
        let path = PathBuf::from("/nonexistent-dir-for-wtpd-test/x.log");
        match build(LogTarget::File(path.clone()), LevelFilter::Info) {
            Err(LogError::File { path: p, .. }) => assert_eq!(p, path),
            other => panic!("expected a File error, got {:?}", other.err()),
        }
    }

    #[test]
    fn syslog_sends_rfc3164_daemon_messages() {
        use std::os::unix::net::UnixDatagram;
        let path = temp_path("syslog.sock");
        let _ = std::fs::remove_file(&path);
        let server = UnixDatagram::bind(&path).unwrap();
        server
            .set_read_timeout(Some(Duration::from_secs(5)))
            .unwrap();
        let logger = SyslogLogger::connect(&path, "wtpd", LevelFilter::Info).unwrap();
        record_at(Level::Info, format_args!("joined AC"), |r| logger.log(r));
        record_at(Level::Debug, format_args!("filtered"), |r| logger.log(r));
        record_at(Level::Error, format_args!("lost AC"), |r| logger.log(r));
        let mut buf = [0u8; 512];
        let mut recv = || {
            let n = server.recv(&mut buf).unwrap();
            String::from_utf8_lossy(&buf[..n]).into_owned()
        };
        let pid = std::process::id();
        // <facility daemon (3) * 8 + severity>: info 6 -> 30, err 3 -> 27.
        let first = recv();
        assert!(first.starts_with("<30>"), "{first}");
        assert!(
            first.ends_with(&format!(" wtpd[{pid}]: joined AC")),
            "{first}"
        );
        let second = recv();
        assert!(second.starts_with("<27>"), "{second}");
        assert!(second.ends_with(": lost AC"), "{second}");
        std::fs::remove_file(&path).ok();
    }

    #[test]
    fn syslog_target_without_socket_is_an_error() {
        let path = temp_path("no-such.sock");
        assert!(matches!(
            SyslogLogger::connect(&path, "wtpd", LevelFilter::Info),
            Err(LogError::Syslog(_))
        ));
    }
}
