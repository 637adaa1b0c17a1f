//! The fleet bench (docs/fleet.md, README "Speed"): 2 sites, each with `WTPD_FLEET_PER_MODEL`
//! (5) APs of each of 2 hardware types, real release `wtpd` processes, each site's traffic to
//! the controller through its own emulated WAN link (`harness/src/wan.rs`: one-way delay 25 ms,
//! 1 Mbit/s per direction shared by the site, optional loss `WTPD_FLEET_LOSS`). Three methods
//! in one run, same image: every AP by CAPWAP (the baseline), efficient upgrade (primaries by
//! CAPWAP, subordinates by TFTP from them), efficient upgrade with HTTPS primaries. For each:
//! the time from `predownload all` until every AP has the image staged, the WAN bytes, and the
//! ideal time computed from the link, so the figure is also a ratio to the physical limit.
//! Then one AP alone over a delay-only link: CAPWAP against HTTPS throughput.
//!
//!     cargo build --release --bins && cargo bench --bench fleet
//!
//! Knobs: WTPD_FLEET_IMAGE (bytes of each image's rootfs, default 1048576), WTPD_FLEET_PER_MODEL,
//! WTPD_FLEET_LOSS, WTPD_FLEET_SINGLE_IMAGE (the single-AP image, default 524288).

use std::time::{Duration, Instant};

use wtpd_harness::fleet::{FleetLab, FleetMethod, FleetOptions};
use wtpd_harness::wan::WanConfig;

const DELAY: Duration = Duration::from_millis(25);
const RATE_BPS: u64 = 1_000_000;
/// CAPWAP Image Data block (acsim's default) and its wire overhead: IPv4 + UDP (28), CAPWAP
/// header (8) and control header (8), Image Data element header (4 + 1 data type), DTLS
/// record (13 + 16 IV + 16 tag + padding, about 45 at AES-GCM).
const BLOCK: f64 = 1024.0;
const BLOCK_WIRE: f64 = 1024.0 + 28.0 + 16.0 + 5.0 + 45.0;
/// The WTP's Image Data Response: headers and a Result Code.
const ACK_WIRE: f64 = 28.0 + 16.0 + 8.0 + 45.0;

fn env(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

struct Outcome {
    name: &'static str,
    secs: f64,
    ideal: f64,
    wan_down: u64,
    from_controller: usize,
    groups: usize,
}

/// One stop-and-wait block's round trip over the link: the two delays and both directions'
/// serialization.
fn block_rtt(rate: Option<u64>) -> f64 {
    let ser = |b: f64| rate.map_or(0.0, |r| b * 8.0 / r as f64);
    2.0 * DELAY.as_secs_f64() + ser(BLOCK_WIRE) + ser(ACK_WIRE)
}

/// Bytes of the image file of one hardware type (rootfs + signed head).
fn image_bytes(lab: &FleetLab, model: &str) -> u64 {
    std::fs::metadata(lab.opts.dir.join("images").join(model))
        .map(|m| m.len())
        .unwrap_or(0)
}

fn run(method: FleetMethod, name: &'static str, per_model: usize, size: u64, loss: f64) -> Outcome {
    let opts = FleetOptions {
        dir: std::env::temp_dir().join(format!("wtpd-fleet-bench-{name}")),
        per_model,
        image_size: size,
        method,
        wan: Some(WanConfig {
            delay: DELAY,
            rate_bps: Some(RATE_BPS),
            loss,
            seed: 7,
        }),
        backoff: (0.2, 0.6),
        ..FleetOptions::default()
    };
    let mut lab = FleetLab::start(opts).expect("fleet lab");
    let n = lab.aps.len() as u32;
    assert!(
        lab.wait_joined(Duration::from_secs(180)),
        "not all joined:\n{}",
        lab.status()
    );
    let base: u64 = lab.wan_bytes().iter().map(|(_, d, _)| d).sum();
    let start = Instant::now();
    lab.control("predownload all").expect("predownload");
    let done = lab.wait(Duration::from_secs(900), |lab| {
        lab.counter("Completed predownloading") == Some(n)
    });
    let secs = start.elapsed().as_secs_f64();
    assert!(
        done,
        "{name}: not every AP predownloaded:\n{}",
        lab.status()
    );
    let wan_down = lab.wan_bytes().iter().map(|(_, d, _)| d).sum::<u64>() - base;
    let rows = lab.rows();
    // Without a fleet configured acsim prints no fleet table: every AP is served by CAPWAP.
    let from_controller = if method == FleetMethod::Capwap {
        n as usize
    } else {
        rows.iter()
            .filter(|r| r.method == "CAPWAP" || r.method == "HTTPS")
            .count()
    };
    let models = lab.opts.models.clone();
    let sites = lab.opts.sites.len();
    let img = models
        .iter()
        .map(|m| image_bytes(&lab, m))
        .max()
        .unwrap_or(0) as f64;
    let rate = RATE_BPS as f64 / 8.0;
    let blocks = (img / BLOCK).ceil();
    let per_site_aps = (models.len() * per_model) as f64;
    // The physical limit: a stop-and-wait AP does one block per round trip; a site moves
    // its rate; the LAN stage (TFTP from the primary, loopback here) is taken as free.
    let ideal = match method {
        FleetMethod::Capwap => {
            (blocks * block_rtt(Some(RATE_BPS))).max(per_site_aps * blocks * BLOCK_WIRE / rate)
        }
        FleetMethod::Efficient => (blocks * block_rtt(Some(RATE_BPS)))
            .max(models.len() as f64 * blocks * BLOCK_WIRE / rate),
        FleetMethod::EfficientHttps | FleetMethod::Https => {
            models.len() as f64 * img / rate + 4.0 * DELAY.as_secs_f64()
        }
    };
    drop(lab);
    Outcome {
        name,
        secs,
        ideal,
        wan_down,
        from_controller,
        groups: sites * models.len(),
    }
}

/// One AP alone over a delay-only link: bytes per second by CAPWAP and by HTTPS.
fn single(method: FleetMethod, size: u64) -> f64 {
    let opts = FleetOptions {
        dir: std::env::temp_dir().join(format!("wtpd-fleet-bench-single-{method:?}")),
        sites: vec!["solo".into()],
        models: vec!["ap1g8".into()],
        per_model: 1,
        image_size: size,
        method,
        wan: Some(WanConfig {
            delay: DELAY,
            ..WanConfig::default()
        }),
        ..FleetOptions::default()
    };
    let mut lab = FleetLab::start(opts).expect("fleet lab");
    assert!(lab.wait_joined(Duration::from_secs(60)), "{}", lab.status());
    let bytes = image_bytes(&lab, "ap1g8") as f64;
    let start = Instant::now();
    lab.control("predownload all").expect("predownload");
    assert!(
        lab.wait(Duration::from_secs(900), |lab| {
            lab.counter("Completed predownloading") == Some(1)
        }),
        "{}",
        lab.status()
    );
    bytes / start.elapsed().as_secs_f64()
}

fn main() {
    if !std::env::args().any(|a| a == "--bench") {
        println!("fleet bench: skipped (run it with `cargo bench --bench fleet`)");
        return;
    }
    let size = env("WTPD_FLEET_IMAGE", 1024 * 1024);
    let per_model = env("WTPD_FLEET_PER_MODEL", 5) as usize;
    let loss = std::env::var("WTPD_FLEET_LOSS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(0.0);
    println!(
        "fleet bench: 2 sites x 2 types x {per_model} APs, {size}-byte rootfs, WAN {} ms one way, {} bit/s per site, loss {loss}",
        DELAY.as_millis(),
        RATE_BPS
    );
    let results = [
        run(FleetMethod::Capwap, "capwap", per_model, size, loss),
        run(FleetMethod::Efficient, "efficient", per_model, size, loss),
        run(
            FleetMethod::EfficientHttps,
            "efficient-https",
            per_model,
            size,
            loss,
        ),
    ];
    let base = results[0].secs;
    println!(
        "\n{:<16} {:>9} {:>9} {:>13} {:>14} {:>16} {:>12}",
        "method",
        "time s",
        "ideal s",
        "ideal/time",
        "vs baseline",
        "WAN bytes down",
        "APs from AC/groups"
    );
    for r in &results {
        println!(
            "{:<16} {:>9.1} {:>9.1} {:>13.2} {:>14.2} {:>16} {:>15}/{}",
            r.name,
            r.secs,
            r.ideal,
            r.ideal / r.secs,
            r.secs / base,
            r.wan_down,
            r.from_controller,
            r.groups
        );
    }
    let single_size = env("WTPD_FLEET_SINGLE_IMAGE", 512 * 1024);
    let capwap = single(FleetMethod::Capwap, single_size);
    let https = single(FleetMethod::Https, single_size);
    println!(
        "\none AP over a {} ms delay-only link, {single_size}-byte rootfs: CAPWAP {:.0} B/s, HTTPS {:.0} B/s: HTTPS/CAPWAP {:.1}x",
        DELAY.as_millis(),
        capwap,
        https,
        https / capwap
    );
}
