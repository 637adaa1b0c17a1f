//! Deterministic simulation: the WTP and AC state machines in one process, a virtual clock, and
//! a seeded network that drops, duplicates, delays and reorders datagrams. DTLS is a transparent
//! channel here (its own tests use real OpenSSL); its setup and teardown notices travel with the
//! same delays and losses as packets.
//!
//! Every seed must end with the WTP in Run and the AC agreeing, once the network heals. A failing
//! seed is printed; `WTPD_SIM_SEED=N cargo test --test sim -- --nocapture` replays it alone.

mod common;

use std::cmp::Reverse;
use std::net::SocketAddr;
use std::time::Duration;

use std::cell::RefCell;
use std::rc::Rc;

use common::net::{Msg, Net};
use wtpd::ac::{Ac, AcAction, AcConfig, AcTimers, SessionState};
use wtpd::image::source::SyntheticSource;
use wtpd::image::store::{ImageStore, MemStore, Space, StoreError};
use wtpd::rng::Rng;
use wtpd::time::Instant;
use wtpd::wtp::{
    Action, Channel, DownloadPolicy, HookStage, Identity, RetryState, State, Target, TargetKind,
    Timers, Versions, Wtp, WtpConfig,
};

const AC: &str = "10.0.0.1:5246";
const AC_DATA: &str = "10.0.0.1:5247";
const WTP: &str = "10.0.0.2:40000";
const WTP_DATA: &str = "10.0.0.2:40001";

struct Outcome {
    reboots: u32,
    aborts: u32,
    installed_sha: Option<[u8; 32]>,
    primary: String,
    retransmissions: u64,
    teardowns: u64,
    duplicates: u64,
    wtp_state: State,
    ac_state: Option<SessionState>,
    dtls_sessions: u64,
    joins_accepted: u64,
    wtp_malformed: u64,
    ac_malformed: u64,
    echoes: u64,
}

fn addr(s: &str) -> SocketAddr {
    s.parse().unwrap()
}

/// The network a seed draws: loss and duplication rates, and when the network heals.
fn knobs(seed: u64) -> (f64, f64, Instant) {
    let mut knobs = Rng::new(seed ^ 0x5eed);
    let loss = [0.0, 0.05, 0.15, 0.3][knobs.below(4) as usize];
    let dup = [0.0, 0.05, 0.2][knobs.below(3) as usize];
    let heal_at = Instant::from_duration(Duration::from_secs(120 + knobs.below(300)));
    (loss, dup, heal_at)
}

fn run_seed(seed: u64, end: Duration) -> Outcome {
    let (loss, dup, heal_at) = knobs(seed);
    run_net(seed, loss, dup, heal_at, end, None)
}

/// The fake store the simulated WTP writes to, shared so the test can inspect it.
#[derive(Clone)]
struct Shared(Rc<RefCell<MemStore>>);

impl ImageStore for Shared {
    fn precheck(&mut self, required: u64) -> Result<Space, StoreError> {
        self.0.borrow_mut().precheck(required)
    }
    fn open(&mut self) -> Result<(), StoreError> {
        self.0.borrow_mut().open()
    }
    fn write(&mut self, data: &[u8]) -> Result<(), StoreError> {
        self.0.borrow_mut().write(data)
    }
    fn finish(&mut self) -> Result<(), StoreError> {
        self.0.borrow_mut().finish()
    }
    fn abort(&mut self) {
        self.0.borrow_mut().abort()
    }
    fn location(&self) -> String {
        "sim".into()
    }
}

const IMAGE: &str = "sim";

fn new_wtp(seed: u64, primary: &str, store: &Shared) -> Wtp {
    Wtp::new(
        WtpConfig {
            identity: Identity {
                name: "wtp-sim".into(),
                image_type: IMAGE.into(),
                ..Identity::default()
            },
            versions: Versions {
                primary: primary.into(),
                backup: None,
            },
            timers: Timers {
                discovery_interval: Duration::from_secs(2),
                ..Timers::default()
            },
            download: DownloadPolicy {
                required_bytes: 1024,
                retry_base: Duration::from_secs(5),
                retry_max: Duration::from_secs(60),
            },
            retry: RetryState::default(),
            can_switch: false,
            hold: None,
            seed,
            fleet: Default::default(),
            // Half the seeds run with an upgrade hook whose PRECHECK says yes at once.
            hooks: seed % 2 == 0,
        },
        Box::new(store.clone()),
    )
}

fn run_net(
    seed: u64,
    loss: f64,
    dup: f64,
    heal_at: Instant,
    end: Duration,
    image: Option<u64>,
) -> Outcome {
    let mut net = Net::new(seed, loss, dup, heal_at);

    let store = Shared(Rc::new(RefCell::new(MemStore::new(1 << 30))));
    let mut wtp = new_wtp(seed, "1.0", &store);
    let mut source = SyntheticSource {
        sizes: Default::default(),
    };
    if let Some(size) = image {
        source.sizes.insert(IMAGE.into(), size);
    }
    let mut ac = Ac::new(
        AcConfig {
            timers: AcTimers {
                echo_interval: Duration::from_secs(5),
                ..AcTimers::default()
            },
            image_version: image.map(|_| "2.0".to_string()),
            ..AcConfig::default()
        },
        Box::new(source),
    );
    let mut reboots = 0u32;
    let mut installed_sha: Option<[u8; 32]> = None;
    let (ac_addr, wtp_addr) = (addr(AC), addr(WTP));
    let mut now = Instant::ZERO;
    let end = Instant::from_duration(end);
    let mut buf = Vec::new();
    let mut dtls_sessions = 0;
    let mut dtls_pending = false;
    wtp.start(now);

    loop {
        // Drain both ends.
        loop {
            let mut busy = false;
            while let Some(a) = wtp.poll_action() {
                busy = true;
                match a {
                    Action::FindControllers => wtp.set_targets(
                        vec![Target {
                            addr: ac_addr,
                            kind: TargetKind::Static,
                        }],
                        now,
                    ),
                    Action::DtlsConnect { peer } => {
                        assert_eq!(peer, ac_addr);
                        dtls_pending = true;
                        net.send(now, Msg::DtlsUp);
                    }
                    Action::DtlsClose => {
                        dtls_pending = false;
                        net.send(now, Msg::WtpClosed);
                    }
                    Action::VerifyImage { .. } => {
                        let st = store.0.borrow();
                        assert!(st.finished, "seed {seed}: verify of an unfinished file");
                        drop(st);
                        wtp.image_verified(Ok(()), now);
                    }
                    Action::InstallImage { .. } => {
                        let st = store.0.borrow();
                        assert!(st.finished, "seed {seed}: install of an unfinished file");
                        installed_sha = st.sha256;
                        drop(st);
                        wtp.install_done(Ok(()), now);
                    }
                    Action::Reboot { .. } => {
                        // The simulated board reboots into the installed image.
                        reboots += 1;
                        assert!(
                            installed_sha.is_some(),
                            "seed {seed}: reboot without an install"
                        );
                        wtp = new_wtp(seed.wrapping_add(reboots as u64), "2.0", &store);
                        dtls_pending = false;
                        wtp.start(now);
                    }
                    Action::Hook(call) => {
                        if call.stage == HookStage::Precheck {
                            wtp.precheck_done(Ok(()), now);
                        }
                    }
                    // The simulated WTP has fleet upgrades off: no out-of-band fetch, no serving.
                    Action::ActivateImage { .. }
                    | Action::Exit
                    | Action::FetchImage { .. }
                    | Action::CancelFetch
                    | Action::ServeImage { .. } => {
                        panic!("seed {seed}: unexpected {a:?}")
                    }
                }
            }
            while let Some(t) = wtp.poll_transmit(&mut buf) {
                busy = true;
                let from = if t.channel == Channel::Data {
                    addr(WTP_DATA)
                } else {
                    wtp_addr
                };
                net.send(
                    now,
                    Msg::ToAc {
                        channel: t.channel,
                        from,
                        bytes: buf.clone(),
                    },
                );
            }
            while let Some(AcAction::DtlsClose { .. }) = ac.poll_action() {
                busy = true;
                net.send(now, Msg::AcClosed);
            }
            while let Some(t) = ac.poll_transmit(&mut buf) {
                busy = true;
                let from = if t.channel == Channel::Data {
                    addr(AC_DATA)
                } else {
                    ac_addr
                };
                net.send(
                    now,
                    Msg::ToWtp {
                        channel: t.channel,
                        from,
                        bytes: buf.clone(),
                    },
                );
            }
            if !busy {
                break;
            }
        }
        let next_net = net.queue.peek().map(|Reverse(e)| e.at);
        let next = [next_net, wtp.poll_timeout(), ac.poll_timeout()]
            .into_iter()
            .flatten()
            .min();
        let Some(next) = next else { break };
        if next > end {
            break;
        }
        now = now.max(next);
        if next_net == Some(next) {
            let Reverse(ev) = net.queue.pop().unwrap();
            net.delivered += 1;
            match ev.msg {
                Msg::ToAc {
                    channel: Channel::Data,
                    from,
                    bytes,
                } => ac.handle_data(from, &bytes, now),
                Msg::ToAc {
                    channel,
                    from,
                    bytes,
                } => ac.handle_control(from, &bytes, channel == Channel::ControlSecure, now),
                Msg::ToWtp {
                    channel: Channel::Data,
                    from,
                    bytes,
                } => wtp.handle_data(from, &bytes, now),
                Msg::ToWtp {
                    channel,
                    from,
                    bytes,
                } => wtp.handle_control(from, &bytes, channel == Channel::ControlSecure, now),
                Msg::DtlsUp => {
                    // The handshake completes for both ends only if the WTP still wants it.
                    if dtls_pending && wtp.state() == State::DtlsSetup {
                        dtls_pending = false;
                        dtls_sessions += 1;
                        ac.dtls_established(wtp_addr, now);
                        wtp.dtls_established("simulated DTLS", now);
                    }
                }
                Msg::WtpClosed => ac.dtls_closed(wtp_addr, "close_notify"),
                Msg::AcClosed => wtp.dtls_closed(now),
            }
        } else {
            wtp.handle_timeout(now);
            ac.handle_timeout(now);
        }
    }
    let _ = (net.delivered, net.dropped);
    let aborts = store.0.borrow().aborts;
    Outcome {
        reboots,
        installed_sha,
        aborts,
        primary: wtp.config().versions.primary.clone(),
        retransmissions: wtp.stats().retransmissions,
        teardowns: wtp.stats().teardowns,
        duplicates: wtp.stats().duplicate_requests + ac.stats().duplicate_requests,
        wtp_state: wtp.state(),
        ac_state: ac.session(wtp_addr).map(|s| s.state),
        dtls_sessions,
        joins_accepted: ac.stats().joins_accepted,
        wtp_malformed: wtp.stats().malformed.values().sum(),
        ac_malformed: ac.stats().malformed.values().sum(),
        echoes: ac.session(wtp_addr).map(|s| s.info.echoes).unwrap_or(0),
    }
}

fn check(seed: u64, o: &Outcome) -> Result<(), String> {
    if o.wtp_state != State::Run {
        return Err(format!("WTP ended in {} instead of Run", o.wtp_state));
    }
    if o.ac_state != Some(SessionState::Run) {
        return Err(format!(
            "AC sees the WTP in {:?} instead of Run",
            o.ac_state
        ));
    }
    if o.joins_accepted > o.dtls_sessions {
        return Err(format!(
            "AC processed {} Join Requests over {} DTLS sessions: a duplicate was processed twice",
            o.joins_accepted, o.dtls_sessions
        ));
    }
    if o.wtp_malformed + o.ac_malformed != 0 {
        return Err(format!(
            "malformed packets: WTP {}, AC {}",
            o.wtp_malformed, o.ac_malformed
        ));
    }
    if o.echoes == 0 {
        return Err("no Echo reached the AC in Run".into());
    }
    let _ = seed;
    Ok(())
}

#[test]
fn a_thousand_seeds_reach_run_and_agree() {
    // Lossy for up to 7 minutes, then 13 minutes of clean network to settle.
    let end = Duration::from_secs(20 * 60);
    let seeds: Vec<u64> = match std::env::var("WTPD_SIM_SEED") {
        Ok(s) => {
            let _ = log::set_logger(&StderrLog);
            log::set_max_level(log::LevelFilter::Debug);
            vec![s.parse().expect("WTPD_SIM_SEED is a number")]
        }
        Err(_) => (0..1000).collect(),
    };
    let mut failures = Vec::new();
    let (mut retransmissions, mut teardowns, mut duplicates) = (0, 0, 0);
    for &seed in &seeds {
        let o = run_seed(seed, end);
        retransmissions += o.retransmissions;
        teardowns += o.teardowns;
        duplicates += o.duplicates;
        if let Err(why) = check(seed, &o) {
            failures.push(format!("seed {seed}: {why}"));
        }
    }
    eprintln!(
        "{} seeds: {retransmissions} retransmissions, {teardowns} teardowns, {duplicates} duplicate requests answered from the cache",
        seeds.len()
    );
    if seeds.len() > 1 {
        // The seeds must really exercise the recovery paths, or passing them means little.
        assert!(
            retransmissions > 1000,
            "only {retransmissions} retransmissions"
        );
        assert!(teardowns > 10, "only {teardowns} teardowns");
        assert!(duplicates > 100, "only {duplicates} duplicates");
    }
    assert!(
        failures.is_empty(),
        "{} of {} seeds failed (replay one with WTPD_SIM_SEED=N):\n{}",
        failures.len(),
        seeds.len(),
        failures.join("\n")
    );
}

#[test]
fn clean_network_reaches_run_in_the_rfc_time() {
    // No loss: Discovery waits DiscoveryInterval (2 s here), then one round trip per exchange.
    let o = run_net(7, 0.0, 0.0, Instant::ZERO, Duration::from_secs(4), None);
    assert_eq!(o.wtp_state, State::Run);
    assert_eq!(o.dtls_sessions, 1);
    assert_eq!(o.joins_accepted, 1);
    assert_eq!(o.retransmissions, 0);
    assert_eq!(o.teardowns, 0);
}

/// With WTPD_SIM_SEED set, both state machines' logs go to stderr (run with --nocapture).
struct StderrLog;

impl log::Log for StderrLog {
    fn enabled(&self, _: &log::Metadata) -> bool {
        true
    }
    fn log(&self, r: &log::Record) {
        eprintln!("{:5} {}", r.level(), r.args());
    }
    fn flush(&self) {}
}

#[test]
fn image_downloads_survive_lossy_networks_and_end_in_the_new_version() {
    // A 100 KiB image in 1024-byte blocks, over the same lossy networks: every seed ends in Run
    // on the new version, having installed exactly the bytes the AC served.
    let size = 100 * 1024 + 377;
    let want = openssl::sha::sha256(&SyntheticSource::content(IMAGE, size));
    let seeds: Vec<u64> = match std::env::var("WTPD_SIM_SEED") {
        Ok(s) => vec![s.parse().expect("WTPD_SIM_SEED is a number")],
        Err(_) => (0..300).collect(),
    };
    let mut failures = Vec::new();
    let mut aborted = 0;
    for &seed in &seeds {
        let (loss, dup, heal_at) = knobs(seed);
        let o = run_net(
            seed,
            loss,
            dup,
            heal_at,
            Duration::from_secs(40 * 60),
            Some(size),
        );
        aborted += o.aborts;
        let problem = if let Err(why) = check(seed, &o) {
            Some(why)
        } else if o.primary != "2.0" || o.reboots != 1 {
            Some(format!("primary {} after {} reboots", o.primary, o.reboots))
        } else if o.installed_sha != Some(want) {
            Some("installed bytes differ from the served image".into())
        } else {
            None
        };
        if let Some(p) = problem {
            failures.push(format!("seed {seed}: {p}"));
        }
    }
    assert!(
        failures.is_empty(),
        "{} seeds failed:\n{}",
        failures.len(),
        failures.join("\n")
    );
    eprintln!(
        "{} download seeds: {aborted} aborted downloads retried to completion",
        seeds.len()
    );
    if seeds.len() > 1 {
        assert!(
            aborted > 10,
            "the lossy seeds must abort some downloads: {aborted}"
        );
    }
}
