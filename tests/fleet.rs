//! A fleet of real wtpd processes of mixed types against acsim (docs/fleet.md): roles and
//! directions, TFTP from the primary, a primary killed mid-transfer, out-of-band HTTPS, and a
//! rolling activation halted by an image that never commits.

use std::collections::BTreeMap;
use std::time::Duration;

use wtpd_harness::demo::{sha256_file, CONTROLLER_VERSION};
use wtpd_harness::fleet::{FleetLab, FleetMethod, FleetOptions, FleetRow};

fn options(test: &str, method: FleetMethod) -> FleetOptions {
    FleetOptions {
        dir: std::env::temp_dir().join(format!("wtpd-fleet-{test}-{}", std::process::id())),
        sites: vec!["branch-1".into()],
        models: vec!["ap1g8".into()],
        per_model: 3,
        image_size: 512 * 1024,
        method,
        ..FleetOptions::default()
    }
}

/// Predownloads to every AP and waits until all have it (or one failed for good).
fn predownload(lab: &mut FleetLab, limit: Duration) -> Vec<FleetRow> {
    let answer = lab.control("predownload all").unwrap();
    assert!(answer.contains("predownload queued"), "{answer}");
    let n = lab.aps.iter().filter(|a| !lab_down(lab, &a.name)).count() as u32;
    let done = lab.wait(limit, |lab| {
        lab.counter("Completed predownloading").unwrap_or(0) >= n
    });
    let rows = lab.rows();
    assert!(done, "not every AP predownloaded:\n{}", lab.status());
    rows
}

fn lab_down(_lab: &FleetLab, _name: &str) -> bool {
    false
}

/// Every AP's download file is the image of its type, byte for byte.
fn assert_images(lab: &FleetLab, rows: &[FleetRow]) {
    for r in rows {
        let ap = lab.aps.iter().find(|a| a.name == r.name).unwrap();
        let want = sha256_file(&lab.opts.dir.join("images").join(&ap.model)).unwrap();
        let got = sha256_file(&ap.dir.join("tmp/part.tar")).unwrap();
        assert_eq!(
            got, want,
            "{}: part.tar differs from the served image",
            r.name
        );
    }
}

#[test]
fn efficient_upgrade_sends_one_image_per_site_and_model_over_the_controller() {
    let mut opts = options("efficient", FleetMethod::Efficient);
    opts.sites = vec!["branch-1".into(), "branch-2".into()];
    opts.models = vec!["ap1g8".into(), "ap3g3".into()];
    opts.per_model = 2;
    let mut lab = FleetLab::start(opts).unwrap();
    assert!(lab.wait_joined(Duration::from_secs(60)), "{}", lab.status());
    let rows = predownload(&mut lab, Duration::from_secs(120));
    assert_eq!(rows.len(), 8);
    // Per site and model: one Master by CAPWAP, the other a Slave by TFTP from it.
    let mut groups: BTreeMap<(String, String), Vec<&FleetRow>> = BTreeMap::new();
    for r in &rows {
        assert_eq!(r.status, "Complete", "{r:?}");
        assert_eq!(r.backup, CONTROLLER_VERSION, "{r:?}");
        groups
            .entry((r.site.clone(), r.image_type.clone()))
            .or_default()
            .push(r);
    }
    assert_eq!(groups.len(), 4);
    for (k, g) in &groups {
        let masters: Vec<_> = g.iter().filter(|r| r.role == "Master").collect();
        assert_eq!(masters.len(), 1, "{k:?}: {g:?}");
        assert_eq!(masters[0].method, "CAPWAP", "{k:?}");
        // The lowest base MAC of the group: its first AP.
        assert!(masters[0].name.ends_with("-1"), "{k:?}: {g:?}");
        for r in g.iter().filter(|r| r.role != "Master") {
            assert_eq!(r.role, "Slave", "{r:?}");
            assert_eq!(r.method, "TFTP from primary", "{r:?}");
        }
    }
    assert_images(&lab, &rows);
    // Every AP verified what it got: the primaries' TFTP servers served the staged file.
    for ap in &lab.aps {
        let log = std::fs::read_to_string(ap.dir.join("wtpd.log")).unwrap();
        assert!(log.contains("Image Data Request sent to"), "{}", ap.name);
        if ap.name.ends_with("-1") {
            assert!(log.contains("replicaStatus 1"), "{}: {log}", ap.name);
            assert!(log.contains("TFTP: sent "), "{}", ap.name);
        } else {
            assert!(log.contains("slaveStatus 1"), "{}", ap.name);
        }
    }
    let status = lab.status();
    for line in [
        "Initiated",
        "Downloading",
        "Predownloading",
        "Completed downloading",
        "Completed predownloading",
        "Not Supported",
        "Failed to Predownload",
        "Predownload in progress",
    ] {
        assert!(
            lab.counter(line).is_some() || status.contains(line),
            "{line}: {status}"
        );
    }
}
