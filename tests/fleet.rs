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

#[test]
fn a_primary_killed_mid_transfer_is_replaced_and_nothing_is_half_installed() {
    let mut opts = options("kill", FleetMethod::Efficient);
    opts.per_model = 3;
    opts.image_size = 4 << 20;
    let mut lab = FleetLab::start(opts).unwrap();
    assert!(lab.wait_joined(Duration::from_secs(60)), "{}", lab.status());
    lab.control("predownload all").unwrap();
    // The first primary downloads from the controller; kill it once it is under way.
    let primary = "branch-1-ap1g8-1";
    let started = lab.wait(Duration::from_secs(60), |lab| {
        lab.rows()
            .iter()
            .any(|r| r.name == primary && r.status == "Predownloading")
    });
    assert!(started, "{}", lab.status());
    lab.kill(primary);
    // Another is elected, downloads from the controller and serves the last one.
    let done = lab.wait(Duration::from_secs(180), |lab| {
        lab.rows()
            .iter()
            .filter(|r| r.name != primary && r.status == "Complete")
            .count()
            == 2
    });
    let status = lab.status();
    assert!(done, "{status}");
    let acsim = std::fs::read_to_string(lab.opts.dir.join("acsim.log")).unwrap();
    assert!(
        acsim.contains(&format!("(was {primary}, gone)")),
        "no re-election in acsim's log"
    );
    let rows = lab.rows();
    let survivors: Vec<&FleetRow> = rows.iter().filter(|r| r.name != primary).collect();
    assert_eq!(
        survivors.iter().filter(|r| r.role == "Master").count(),
        1,
        "{status}"
    );
    assert_images(&lab, &survivors.into_iter().cloned().collect::<Vec<_>>());
    // The killed AP wrote nothing to its slot b: its environment still boots a with b good.
    let killed = lab.aps.iter().find(|a| a.name == primary).unwrap();
    let env = std::process::Command::new("fw_printenv")
        .args(["-c", "fw_env.config"])
        .current_dir(&killed.dir)
        .output()
        .unwrap();
    let env = String::from_utf8_lossy(&env.stdout);
    assert!(env.contains("boot_slot=a"), "{env}");
    assert!(!env.contains("slot_b_version=17.9.4.27"), "{env}");
}

#[test]
fn primaries_fetch_over_https_and_subordinates_from_them() {
    let mut opts = options("https", FleetMethod::EfficientHttps);
    opts.per_model = 3;
    let mut lab = FleetLab::start(opts).unwrap();
    assert!(lab.wait_joined(Duration::from_secs(60)), "{}", lab.status());
    let rows = predownload(&mut lab, Duration::from_secs(120));
    let master: Vec<_> = rows.iter().filter(|r| r.role == "Master").collect();
    assert_eq!(master.len(), 1, "{rows:?}");
    assert_eq!(master[0].method, "HTTPS");
    assert!(rows
        .iter()
        .filter(|r| r.role == "Slave")
        .all(|r| r.method == "TFTP from primary"));
    assert_images(&lab, &rows);
    let acsim = std::fs::read_to_string(lab.opts.dir.join("acsim.log")).unwrap();
    assert!(acsim.contains("HTTPS: GET /ap1g8"), "acsim served no HTTPS");
}

#[test]
fn a_rolling_activation_halts_on_an_image_that_never_commits() {
    let mut opts = options("rolling", FleetMethod::Efficient);
    opts.per_model = 4;
    // The second wave's first AP (names sort: -1, -2 in wave 1; -3, -4 in wave 2).
    opts.never_commit = vec!["branch-1-ap1g8-3".into()];
    let mut lab = FleetLab::start(opts).unwrap();
    assert!(lab.wait_joined(Duration::from_secs(60)), "{}", lab.status());
    predownload(&mut lab, Duration::from_secs(120));
    let answer = lab.control("activate-rolling 50").unwrap();
    assert!(answer.contains("in 2 waves"), "{answer}");
    let halted = lab.wait(Duration::from_secs(180), |lab| {
        lab.status().contains("Rolling activation: HALTED")
    });
    let status = lab.status();
    assert!(halted, "{status}");
    assert!(
        status.contains("branch-1-ap1g8-3 rejoined on 17.3.3.26, not 17.9.4.27"),
        "{status}"
    );
    let rows = lab.rows();
    let version = |n: &str| rows.iter().find(|r| r.name == n).unwrap().primary.clone();
    // Wave 1 runs the new image; the AP that rolled back runs the old one again.
    assert_eq!(version("branch-1-ap1g8-1"), CONTROLLER_VERSION);
    assert_eq!(version("branch-1-ap1g8-2"), CONTROLLER_VERSION);
    assert_eq!(version("branch-1-ap1g8-3"), "17.3.3.26");
    let ap = lab
        .aps
        .iter()
        .find(|a| a.name == "branch-1-ap1g8-3")
        .unwrap();
    assert!(
        ap.reboots >= 4,
        "trial boots then the rollback: {}",
        ap.reboots
    );
}

#[test]
fn a_subordinate_whose_primary_hangs_falls_back_to_the_controller_after_its_retries() {
    let mut opts = options("fallback", FleetMethod::Efficient);
    opts.per_model = 2;
    opts.max_retries = 2;
    opts.fetch_timeout = 0.5;
    opts.fetch_retries = 1;
    opts.backoff = (0.2, 0.4);
    let mut lab = FleetLab::start(opts).unwrap();
    assert!(lab.wait_joined(Duration::from_secs(60)), "{}", lab.status());
    let (primary, sub) = ("branch-1-ap1g8-1", "branch-1-ap1g8-2");
    // The primary alone first; once it serves, it hangs.
    let answer = lab.control(&format!("predownload {primary}")).unwrap();
    assert!(answer.contains(": sent"), "{answer}");
    assert!(lab.wait(Duration::from_secs(60), |lab| {
        lab.rows()
            .iter()
            .any(|r| r.name == primary && r.status == "Complete")
    }));
    lab.freeze(primary);
    lab.control(&format!("predownload {sub}")).unwrap();
    let done = lab.wait(Duration::from_secs(90), |lab| {
        lab.rows()
            .iter()
            .any(|r| r.name == sub && r.status == "Complete")
    });
    let status = lab.status();
    assert!(done, "{status}");
    let row = lab.rows().into_iter().find(|r| r.name == sub).unwrap();
    assert_eq!(row.method, "CAPWAP", "{status}");
    assert_eq!(row.retry, 2, "{status}");
    let ap = lab.aps.iter().find(|a| a.name == sub).unwrap();
    let log = std::fs::read_to_string(ap.dir.join("wtpd.log")).unwrap();
    assert!(log.contains("retry 2 of 2 in"), "{log}");
    assert!(log.contains("then from the controller"), "{log}");
    assert_images(&lab, &[row]);
}
