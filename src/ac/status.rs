//! The table `acsim status` prints: the seed's `show ap image`, a block of counters above one
//! row per AP (connected, or gone and last seen).
//!
//! The counters and the Image Status column are both computed from [`ImageStatus::of`], one
//! classification of each row, and "Total number of APs" counts the rows themselves: a
//! reader who adds up the table gets the numbers above it. (They used to be counted apart:
//! the total counted connected APs only, so an AP that had left showed under a total of 0.)

use std::fmt::Write as _;

use super::{Ac, AcDownload, WtpSession};
use crate::time::Instant;

/// The column titles of the AP table, in order (readers of the table find its columns by
/// them: it is fixed-width).
pub const COLUMNS: [&str; 9] = [
    "AP Name",
    "Address",
    "State",
    "Primary",
    "Backup",
    "Image Status",
    "Version",
    "ETA/Percent",
    "Echoes",
];

/// What one AP's image transfer amounts to, as a counter and as the Image Status column.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ImageStatus {
    /// No transfer in this session (or the last one, for an AP that left).
    None,
    Initiated,
    Downloading,
    Predownloading,
    /// A download at Join (RFC 5415 Figure 6) finished.
    Downloaded,
    /// A predownload in Run (Figure 8) finished: the image waits in the AP's backup slot.
    Predownloaded,
    /// The AP answered the predownload request with an error.
    NotSupported,
    DownloadFailed,
    PredownloadFailed,
}

impl ImageStatus {
    /// Every kind that has a counter, in the seed's order.
    pub const COUNTED: [ImageStatus; 8] = [
        ImageStatus::Initiated,
        ImageStatus::Downloading,
        ImageStatus::Predownloading,
        ImageStatus::Downloaded,
        ImageStatus::Predownloaded,
        ImageStatus::NotSupported,
        ImageStatus::DownloadFailed,
        ImageStatus::PredownloadFailed,
    ];

    /// Reads the AC's record of a transfer (its `status` words are set in `ac::image`).
    pub fn of(d: Option<&AcDownload>) -> ImageStatus {
        let Some(d) = d else {
            return ImageStatus::None;
        };
        match d.status.as_str() {
            "Initiated" => ImageStatus::Initiated,
            "Downloading" => ImageStatus::Downloading,
            "Predownloading" => ImageStatus::Predownloading,
            "Complete" if d.predownload => ImageStatus::Predownloaded,
            "Complete" => ImageStatus::Downloaded,
            "Not Supported" => ImageStatus::NotSupported,
            s if s.starts_with("Failed") && d.predownload => ImageStatus::PredownloadFailed,
            s if s.starts_with("Failed") => ImageStatus::DownloadFailed,
            // A word this table does not know yet: shown as no transfer rather than miscounted.
            _ => ImageStatus::None,
        }
    }

    /// The word in the Image Status column (15 characters at most).
    pub fn column(self) -> &'static str {
        match self {
            ImageStatus::None => "None",
            ImageStatus::Initiated => "Initiated",
            ImageStatus::Downloading => "Downloading",
            ImageStatus::Predownloading => "Predownloading",
            ImageStatus::Downloaded => "Downloaded",
            ImageStatus::Predownloaded => "Predownloaded",
            ImageStatus::NotSupported => "Not Supported",
            ImageStatus::DownloadFailed => "Failed",
            ImageStatus::PredownloadFailed => "Predl. Failed",
        }
    }

    /// The counter's name, in the seed's words where the seed has the counter.
    pub fn counter(self) -> &'static str {
        match self {
            ImageStatus::None => "None",
            ImageStatus::Initiated => "Initiated",
            ImageStatus::Downloading => "Downloading",
            ImageStatus::Predownloading => "Predownloading",
            ImageStatus::Downloaded => "Completed downloading",
            ImageStatus::Predownloaded => "Completed predownloading",
            ImageStatus::NotSupported => "Not Supported",
            ImageStatus::DownloadFailed => "Failed to Download",
            ImageStatus::PredownloadFailed => "Failed to Predownload",
        }
    }
}

/// The table for the APs `ac` has now: connected ones first, then those that left.
pub fn table(ac: &Ac, now: Instant) -> String {
    let rows: Vec<(&WtpSession, bool)> = ac
        .sessions()
        .map(|w| (w, true))
        .chain(ac.departed().map(|w| (w, false)))
        .collect();
    let mut out = render(&rows, now);
    if ac.config().fleet.active() {
        fleet_table(ac, &rows, now, &mut out);
    }
    if let Some(r) = ac.rollout() {
        let _ = writeln!(out, "\n{}", r.describe());
    }
    out
}

/// The column titles of the fleet table, the seed's (its second `show ap image` table and
/// its first's retry columns), tab-separated as the seed prints them.
pub const FLEET_COLUMNS: [&str; 11] = [
    "AP Name",
    "Site",
    "Primary Image (AP/Controller)",
    "Backup Image (AP/Controller)",
    "Predownload Status",
    "AP Image Type",
    "Role",
    "ETA/Percent Complete(AP)",
    "ETA/Percent Complete(Controller)",
    "Retry Count",
    "Method",
];

/// The fleet view: each AP's site, hardware type, role, progress and method.
fn fleet_table(ac: &Ac, rows: &[(&WtpSession, bool)], now: Instant, s: &mut String) {
    let f = &ac.config().fleet;
    let _ = writeln!(
        s,
        "\nEfficient upgrade: {}; out-of-band HTTPS: {}",
        if f.efficient { "on" } else { "off" },
        f.https.as_ref().map(|h| h.base.as_str()).unwrap_or("off")
    );
    let _ = writeln!(s, "{}", FLEET_COLUMNS.join("\t"));
    for (w, _) in rows {
        let d = w.download.as_ref();
        let kind = ImageStatus::of(d);
        let status = match kind {
            ImageStatus::Predownloaded | ImageStatus::Downloaded => "Complete",
            k => k.column(),
        };
        let ap_eta = d.map_or_else(|| "NA NA".into(), |d| eta_percent(d, now));
        let image_type = w
            .fleet
            .offer
            .as_ref()
            .and_then(|o| o.image_type.clone())
            .or_else(|| d.map(|d| d.image.clone()).filter(|i| !i.is_empty()))
            .unwrap_or_else(|| "-".into());
        let method = if d.is_some() {
            w.fleet.method.column()
        } else {
            "-"
        };
        let _ = writeln!(
            s,
            "{}\t{}\t{} / NA\t{} / NA\t{}\t{}\t{}\t{}\tNA NA\t{}\t{}",
            dash(&w.info.name),
            ac.site_of(w),
            dash(&w.info.primary_version),
            dash(&w.info.backup_version),
            status,
            image_type,
            w.fleet.role.column(),
            ap_eta,
            w.fleet.retry,
            method
        );
    }
}

/// Renders rows of (session, still connected).
fn render(rows: &[(&WtpSession, bool)], now: Instant) -> String {
    let kinds: Vec<ImageStatus> = rows
        .iter()
        .map(|(w, _)| ImageStatus::of(w.download.as_ref()))
        .collect();
    let mut s = String::new();
    let _ = writeln!(s, "Total number of APs : {}", rows.len());
    let _ = writeln!(s, "Number of APs");
    for k in ImageStatus::COUNTED {
        let n = kinds.iter().filter(|&&x| x == k).count();
        let _ = writeln!(s, "  {:<26}: {n}", k.counter());
    }
    let in_progress = rows.iter().zip(&kinds).any(|((w, connected), k)| {
        *connected
            && w.download.as_ref().is_some_and(|d| d.predownload)
            && matches!(k, ImageStatus::Initiated | ImageStatus::Predownloading)
    });
    let _ = writeln!(
        s,
        "  {:<26}: {}",
        "Predownload in progress",
        if in_progress { "Yes" } else { "No" }
    );
    let _ = writeln!(s);
    let _ = writeln!(
        s,
        "{:<18} {:<21} {:<10} {:<12} {:<12} {:<15} {:<12} {:<14} {:>6}",
        COLUMNS[0],
        COLUMNS[1],
        COLUMNS[2],
        COLUMNS[3],
        COLUMNS[4],
        COLUMNS[5],
        COLUMNS[6],
        COLUMNS[7],
        COLUMNS[8]
    );
    let _ = writeln!(s, "{}", "-".repeat(128));
    for ((w, connected), kind) in rows.iter().zip(&kinds) {
        let d = w.download.as_ref();
        let eta_pct = d.map_or_else(|| "-".into(), |d| eta_percent(d, now));
        let _ = writeln!(
            s,
            "{:<18} {:<21} {:<10} {:<12} {:<12} {:<15} {:<12} {:<14} {:>6}",
            dash(&w.info.name),
            w.peer.to_string(),
            if *connected { w.state.name() } else { "Gone" },
            dash(&w.info.primary_version),
            dash(&w.info.backup_version),
            kind.column(),
            d.map(|d| dash(&d.version)).unwrap_or_else(|| "-".into()),
            eta_pct,
            w.info.echoes
        );
        let err = d.and_then(|d| {
            d.status
                .strip_prefix("Failed: ")
                .or(d.last_error.as_deref())
        });
        if let Some(err) = err {
            let _ = writeln!(s, "{:<18} last error: {err}", "");
        }
    }
    s
}

/// The ETA/Percent cell of a transfer: `00:01:23 45%`, with `--:--:--` and `-` where unknown.
fn eta_percent(d: &AcDownload, now: Instant) -> String {
    format!(
        "{} {}",
        d.eta(now)
            .map(|e| crate::status::format_eta(e.as_secs()))
            .unwrap_or_else(|| "--:--:--".into()),
        d.percent()
            .map(|p| format!("{p}%"))
            .unwrap_or_else(|| "-".into())
    )
}

fn dash(v: &str) -> String {
    if v.is_empty() {
        "-".to_string()
    } else {
        v.to_string()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ac::{SessionState, WtpInfo};
    use crate::reliable::{Requester, Responder};
    use std::time::Duration;

    fn session(name: &str, port: u16, download: Option<AcDownload>) -> WtpSession {
        WtpSession {
            peer: ([127, 0, 0, 1], port).into(),
            state: SessionState::Run,
            info: WtpInfo {
                name: name.into(),
                primary_version: "17.3.3.26".into(),
                backup_version: "8.10.130.0".into(),
                ..WtpInfo::default()
            },
            requester: Requester::new(Duration::from_secs(3), 5, Duration::from_secs(30), 0),
            responder: Responder::new(),
            deadline: None,
            data_addr: None,
            download,
            fleet: Default::default(),
        }
    }

    fn download(status: &str, predownload: bool) -> Option<AcDownload> {
        Some(AcDownload {
            status: status.into(),
            predownload,
            version: "17.9.4.27".into(),
            ..AcDownload::default()
        })
    }

    /// The counter block's value for `name`.
    fn counter(table: &str, name: &str) -> String {
        table
            .lines()
            .find(|l| l.trim_start().starts_with(name) && l.contains(':'))
            .and_then(|l| l.rsplit(':').next())
            .map(|v| v.trim().to_string())
            .unwrap_or_else(|| panic!("no counter {name} in\n{table}"))
    }

    #[test]
    fn counters_add_up_to_the_rows_below_them() {
        let sessions = [
            session("a", 1, None),
            session("b", 2, download("Complete", true)),
            session("c", 3, download("Complete", false)),
            session("d", 4, download("Failed: stalled", true)),
            session("e", 5, download("Failed: gone", false)),
            session("f", 6, download("Predownloading", true)),
            session("g", 7, download("Not Supported", true)),
        ];
        // The last two left: they still count, as they are still listed.
        let rows: Vec<(&WtpSession, bool)> = sessions
            .iter()
            .enumerate()
            .map(|(i, w)| (w, i < 5))
            .collect();
        let t = render(&rows, Instant::from_duration(Duration::from_secs(9)));
        assert_eq!(counter(&t, "Total number of APs"), "7", "{t}");
        for (name, want) in [
            ("Initiated", "0"),
            ("Downloading", "0"),
            ("Predownloading", "1"),
            ("Completed downloading", "1"),
            ("Completed predownloading", "1"),
            ("Not Supported", "1"),
            ("Failed to Download", "1"),
            ("Failed to Predownload", "1"),
            // Only a connected AP can be predownloading.
            ("Predownload in progress", "No"),
        ] {
            assert_eq!(counter(&t, name), want, "{name} in\n{t}");
        }
        let body: Vec<&str> = t.lines().skip_while(|l| !l.starts_with("---")).collect();
        for (word, n) in [
            (" None ", 1),
            (" Predownloaded ", 1),
            (" Downloaded ", 1),
            (" Predl. Failed ", 1),
            // The download at Join's, and the predownload's.
            (" Failed ", 2),
            (" Gone ", 2),
        ] {
            assert_eq!(
                body.iter().filter(|l| l.contains(word)).count(),
                n,
                "{word} in\n{t}"
            );
        }
    }

    #[test]
    fn a_predownload_under_way_says_so() {
        let w = session("f", 6, download("Predownloading", true));
        let t = render(&[(&w, true)], Instant::from_duration(Duration::ZERO));
        assert_eq!(counter(&t, "Predownload in progress"), "Yes", "{t}");
        assert_eq!(counter(&t, "Total number of APs"), "1", "{t}");
    }
}
