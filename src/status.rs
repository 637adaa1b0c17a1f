//! The agent's state file and what `wtpd status` prints from it: the seed's `show ap image`
//! for one AP. The file is TOML, rewritten atomically on every change, and also carries what
//! must survive a restart (retry count, last error, next retry time).

use std::fmt::Write as _;
use std::path::Path;

use serde::{Deserialize, Serialize};

/// The name of the file in the state directory.
pub const STATUS_FILE: &str = "status.toml";

/// One AP's status.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct WtpStatus {
    pub name: String,
    pub state: String,
    pub controller: String,
    pub primary: String,
    pub backup: String,
    pub download_state: String,
    pub download_version: String,
    pub percent: Option<u8>,
    pub bytes: u64,
    pub size: Option<u64>,
    pub eta_secs: Option<u64>,
    pub retry_count: u32,
    /// Unix time of the next retry.
    pub next_retry_unix: Option<u64>,
    pub last_error: String,
    pub method: String,
}

impl WtpStatus {
    /// The saved status; a file that is not one is logged, naming it and why, and ignored
    /// (the agent then starts with no retry history).
    pub fn load(dir: &Path) -> Option<WtpStatus> {
        let path = dir.join(STATUS_FILE);
        let text = match std::fs::read_to_string(&path) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return None,
            Err(e) => {
                log::warn!("{}: unreadable ({e}); saved status ignored", path.display());
                return None;
            }
        };
        match toml::from_str(&text) {
            Ok(s) => Some(s),
            Err(e) => {
                let why = e.to_string();
                log::warn!(
                    "{}: not a status file ({}); saved status (retry count, last error, next \
                     retry) ignored",
                    path.display(),
                    why.lines().next().unwrap_or("").trim()
                );
                None
            }
        }
    }

    pub fn save(&self, dir: &Path) -> std::io::Result<()> {
        std::fs::create_dir_all(dir)?;
        let text = toml::to_string(self).map_err(std::io::Error::other)?;
        crate::fsio::write_atomic(&dir.join(STATUS_FILE), text.as_bytes())
    }

    /// The `show ap image` view.
    pub fn table(&self) -> String {
        let mut s = String::new();
        let opt = |v: &str| {
            if v.is_empty() {
                "-".to_string()
            } else {
                v.to_string()
            }
        };
        let _ = writeln!(s, "AP Name              : {}", opt(&self.name));
        let _ = writeln!(s, "CAPWAP State         : {}", opt(&self.state));
        let _ = writeln!(s, "Controller           : {}", opt(&self.controller));
        let _ = writeln!(s, "Primary Image        : {}", opt(&self.primary));
        let _ = writeln!(s, "Backup Image         : {}", opt(&self.backup));
        let _ = writeln!(s, "Download Status      : {}", opt(&self.download_state));
        let _ = writeln!(s, "Download Version     : {}", opt(&self.download_version));
        let pct = self
            .percent
            .map(|p| format!("{p}%"))
            .unwrap_or_else(|| "-".into());
        let eta = self.eta_secs.map(format_eta).unwrap_or_else(|| "-".into());
        let _ = writeln!(s, "ETA/Percent Complete : {eta} {pct}");
        let _ = writeln!(
            s,
            "Bytes                : {} of {}",
            self.bytes,
            self.size
                .map(|n| n.to_string())
                .unwrap_or_else(|| "?".into())
        );
        let next = self
            .next_retry_unix
            .map(format_unix)
            .unwrap_or_else(|| "-".into());
        let _ = writeln!(s, "Next Retry Time      : {next}");
        let _ = writeln!(s, "Retry Count          : {}", self.retry_count);
        let _ = writeln!(s, "Last Error           : {}", opt(&self.last_error));
        let _ = writeln!(s, "Method               : {}", opt(&self.method));
        s
    }

    /// The same as JSON (flat object; strings escaped).
    pub fn to_json(&self) -> String {
        let mut o = JsonObject::default();
        o.str("name", &self.name);
        o.str("state", &self.state);
        o.str("controller", &self.controller);
        o.str("primary_image", &self.primary);
        o.str("backup_image", &self.backup);
        o.str("download_status", &self.download_state);
        o.str("download_version", &self.download_version);
        o.num("percent", self.percent.map(u64::from));
        o.num("bytes", Some(self.bytes));
        o.num("size", self.size);
        o.num("eta_secs", self.eta_secs);
        o.num("retry_count", Some(self.retry_count as u64));
        o.num("next_retry_unix", self.next_retry_unix);
        o.str("last_error", &self.last_error);
        o.str("method", &self.method);
        o.finish()
    }
}

/// `hh:mm:ss`.
pub fn format_eta(secs: u64) -> String {
    format!("{:02}:{:02}:{:02}", secs / 3600, secs / 60 % 60, secs % 60)
}

/// UTC `MM/DD/YYYY HH:MM:SS`, as the logs write times.
pub fn format_unix(secs: u64) -> String {
    let t = std::time::UNIX_EPOCH + std::time::Duration::from_secs(secs);
    let stamp = crate::logging::format_timestamp(t);
    // "[*MM/DD/YYYY HH:MM:SS.ffff]" -> "MM/DD/YYYY HH:MM:SS"
    stamp
        .trim_start_matches("[*")
        .split('.')
        .next()
        .unwrap_or("")
        .to_string()
}

#[derive(Default)]
struct JsonObject {
    out: String,
}

impl JsonObject {
    fn key(&mut self, k: &str) {
        self.out.push(if self.out.is_empty() { '{' } else { ',' });
        let _ = write!(self.out, "\"{k}\":");
    }
    fn str(&mut self, k: &str, v: &str) {
        self.key(k);
        self.out.push('"');
        for c in v.chars() {
            match c {
                '"' => self.out.push_str("\\\""),
                '\\' => self.out.push_str("\\\\"),
                c if (c as u32) < 0x20 => {
                    let _ = write!(self.out, "\\u{:04x}", c as u32);
                }
                c => self.out.push(c),
            }
        }
        self.out.push('"');
    }
    fn num(&mut self, k: &str, v: Option<u64>) {
        self.key(k);
        match v {
            Some(n) => {
                let _ = write!(self.out, "{n}");
            }
            None => self.out.push_str("null"),
        }
    }
    fn finish(mut self) -> String {
        if self.out.is_empty() {
            self.out.push('{');
        }
        self.out.push('}');
        self.out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_table_and_json() {
        let s = WtpStatus {
            name: "ap \"1\"".into(),
            state: "Image Data".into(),
            primary: "17.3.3.26".into(),
            backup: "8.10.130.0".into(),
            download_state: "Downloading".into(),
            percent: Some(42),
            bytes: 42,
            size: Some(100),
            eta_secs: Some(3725),
            retry_count: 2,
            next_retry_unix: Some(1706650895),
            last_error: "image download cannot start".into(),
            method: "CAPWAP".into(),
            ..Default::default()
        };
        let dir = std::env::temp_dir().join(format!("wtpd-status-{}", std::process::id()));
        s.save(&dir).unwrap();
        assert_eq!(WtpStatus::load(&dir).unwrap(), s);
        let t = s.table();
        assert!(t.contains("ETA/Percent Complete : 01:02:05 42%"), "{t}");
        assert!(
            t.contains("Next Retry Time      : 01/30/2024 21:41:35"),
            "{t}"
        );
        let j = s.to_json();
        assert!(j.starts_with("{\"name\":\"ap \\\"1\\\"\""), "{j}");
        assert!(
            j.contains("\"percent\":42,")
                && j.contains("\"controller\":\"\"")
                && j.ends_with("\"method\":\"CAPWAP\"}"),
            "{j}"
        );
        std::fs::remove_dir_all(dir).unwrap();
    }
}
