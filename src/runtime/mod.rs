//! The thin tokio layer: sockets, the clock, signals. It feeds datagrams to DTLS and the state
//! machines and carries out what they decide; it decides nothing itself.

#[macro_use]
mod warnings;
pub mod ac;
mod fetch;
pub mod hooks;
mod hw_watchdog;
pub mod notify;
mod udp;
pub mod wtp;

use std::time::Duration;

use crate::time::Instant;

/// Maps tokio's clock onto the core's [`Instant`], with the origin at start-up.
#[derive(Debug, Clone, Copy)]
pub struct Clock {
    origin: tokio::time::Instant,
}

impl Clock {
    pub fn new() -> Self {
        Clock {
            origin: tokio::time::Instant::now(),
        }
    }

    pub fn now(&self) -> Instant {
        Instant::from_duration(self.origin.elapsed())
    }

    /// The tokio instant of a core instant.
    pub fn to_tokio(&self, at: Instant) -> tokio::time::Instant {
        self.origin + at.as_duration()
    }
}

impl Default for Clock {
    fn default() -> Self {
        Self::new()
    }
}

/// The earliest of some optional deadlines, or a far one when there are none.
pub(crate) fn earliest(clock: &Clock, deadlines: &[Option<Instant>]) -> tokio::time::Instant {
    deadlines
        .iter()
        .flatten()
        .min()
        .map(|d| clock.to_tokio(*d))
        .unwrap_or_else(|| tokio::time::Instant::now() + Duration::from_secs(3600))
}

/// Errors that stop a program before or while it runs.
#[derive(Debug)]
pub enum RuntimeError {
    Config(crate::config::ConfigError),
    Dtls(crate::dtls::DtlsError),
    Io { what: String, error: std::io::Error },
}

impl std::fmt::Display for RuntimeError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            RuntimeError::Config(e) => write!(f, "{e}"),
            RuntimeError::Dtls(e) => write!(f, "{e}"),
            RuntimeError::Io { what, error } => write!(f, "{what}: {error}"),
        }
    }
}

impl std::error::Error for RuntimeError {}

impl From<crate::config::ConfigError> for RuntimeError {
    fn from(e: crate::config::ConfigError) -> Self {
        RuntimeError::Config(e)
    }
}

impl From<crate::dtls::DtlsError> for RuntimeError {
    fn from(e: crate::dtls::DtlsError) -> Self {
        RuntimeError::Dtls(e)
    }
}

pub(crate) fn io_err(what: impl Into<String>) -> impl FnOnce(std::io::Error) -> RuntimeError {
    let what = what.into();
    move |error| RuntimeError::Io { what, error }
}

pub use crate::fsio::write_atomic;

/// The process's peak resident memory so far, in KiB (`VmHWM` of /proc/self/status): the figure
/// a board's memory budget is about. `None` where /proc is missing or says something else.
pub fn peak_rss_kib() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    parse_vm_hwm(&status)
}

fn parse_vm_hwm(status: &str) -> Option<u64> {
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    let mut words = line["VmHWM:".len()..].split_whitespace();
    let kib = words.next()?.parse().ok()?;
    (words.next() == Some("kB")).then_some(kib)
}

#[cfg(test)]
mod tests {
    #[test]
    fn atomic_write_replaces_whole_file() {
        let dir = std::env::temp_dir().join(format!("wtpd-atomic-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let p = dir.join("status");
        super::write_atomic(&p, b"first version, long").unwrap();
        super::write_atomic(&p, b"second").unwrap();
        assert_eq!(std::fs::read(&p).unwrap(), b"second");
        let leftovers: Vec<_> = std::fs::read_dir(&dir)
            .unwrap()
            .filter_map(|e| e.ok())
            .collect();
        assert_eq!(leftovers.len(), 1, "no temporary file left behind");
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn peak_memory_is_read_from_proc() {
        assert_eq!(
            super::parse_vm_hwm(
                "Name:\twtpd\nVmPeak:\t  12000 kB\nVmHWM:\t    7812 kB\nVmRSS:\t 7000 kB\n"
            ),
            Some(7812)
        );
        assert_eq!(super::parse_vm_hwm("VmRSS:\t 7000 kB\n"), None);
        assert_eq!(super::parse_vm_hwm("VmHWM:\t 7 MB\n"), None);
        assert_eq!(super::parse_vm_hwm("VmHWM:\t x kB\n"), None);
        // This process has touched memory, so its own figure is there and not zero.
        assert!(super::peak_rss_kib().is_some_and(|k| k > 0));
    }
}
