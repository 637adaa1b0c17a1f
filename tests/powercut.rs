//! Power loss during an install and switch: a storage layer that "loses power" at its k-th
//! write (slot writes and environment copies alike), for every k of a whole install. After each
//! cut, the bootloader runs (the rules of board/uboot/boot.cmd), and then: the environment has a
//! valid copy, it boots a slot whose contents verify, and the agent, restarted, finishes the
//! install. Also: rollback after the boot budget, and refusals that leave everything untouched.

use std::collections::HashMap;
use std::io;
use std::path::{Path, PathBuf};

use wtpd::board::{Board, Slot};
use wtpd::image::bootenv::{
    read_with, write_with, ByteOrder, Env, EnvConfig, EnvLocation, EnvStorage,
};
use wtpd::image::install::{
    activate, hash_slot, install, install_chunked, mark_good, AbState, SlotStorage,
};
use wtpd::image::pack::{pack_image, PackSpec};
use wtpd::image::verify::TrustPolicy;
use wtpd::rng::Rng;
use wtpd_harness::bootloader::{boot_step, Boot};

const SLOT_SIZE: u64 = 512 * 1024;

/// Memory standing in for the flash (a fake: the real FileStorage/Disk are tested against
/// fw_printenv and in the demo). Writes after a power cut fail; the cut write is torn.
struct MemDisk {
    files: HashMap<PathBuf, Vec<u8>>,
    writes: usize,
    cut_at: Option<usize>,
    powered: bool,
    rng: Rng,
}

impl MemDisk {
    fn write(&mut self, path: &Path, offset: u64, data: &[u8]) -> io::Result<()> {
        if !self.powered {
            return Err(io::Error::other("power is off"));
        }
        self.writes += 1;
        let f = self.files.entry(path.to_path_buf()).or_default();
        let end = offset as usize + data.len();
        if f.len() < end {
            f.resize(end, 0xff);
        }
        if Some(self.writes) == self.cut_at {
            // Power fails in the middle of this write: a prefix lands, the rest does not.
            let keep = self.rng.below(data.len() as u64 + 1) as usize;
            f[offset as usize..offset as usize + keep].copy_from_slice(&data[..keep]);
            self.powered = false;
            return Err(io::Error::other("power lost"));
        }
        f[offset as usize..end].copy_from_slice(data);
        Ok(())
    }
    fn read(&self, path: &Path, offset: u64, len: usize) -> Vec<u8> {
        let f = self.files.get(path).map(Vec::as_slice).unwrap_or(&[]);
        let start = (offset as usize).min(f.len());
        let end = (offset as usize + len).min(f.len());
        let mut v = f[start..end].to_vec();
        v.resize(len, 0xff);
        v
    }
}

impl SlotStorage for MemDisk {
    fn write_at(&mut self, slot: &Slot, offset: u64, data: &[u8]) -> io::Result<()> {
        self.write(&slot.device, offset, data)
    }
    fn sync(&mut self, _slot: &Slot) -> io::Result<()> {
        if self.powered {
            Ok(())
        } else {
            Err(io::Error::other("power is off"))
        }
    }
    fn read_at(&mut self, slot: &Slot, offset: u64, buf: &mut [u8]) -> io::Result<usize> {
        let v = self.read(&slot.device, offset, buf.len());
        buf.copy_from_slice(&v);
        Ok(buf.len())
    }
}

impl EnvStorage for MemDisk {
    fn read_at(&mut self, loc: &EnvLocation) -> io::Result<Vec<u8>> {
        Ok(self.read(&loc.path, loc.offset, loc.size))
    }
    fn write_at(&mut self, loc: &EnvLocation, data: &[u8]) -> io::Result<()> {
        self.write(&loc.path, loc.offset, data)
    }
}

struct Lab {
    board: Board,
    env_cfg: EnvConfig,
    policy: TrustPolicy,
    image: Vec<u8>,
    payload_sha: [u8; 32],
    old_a: Vec<u8>,
    /// The image signer's key, to sign tampered manifests the way a signer could.
    signer: openssl::pkey::PKey<openssl::pkey::Private>,
}

fn lab(name: &str) -> Lab {
    let dir = std::env::temp_dir().join(format!("wtpd-powercut-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let pki = wtpd_harness::pki::generate_lab_pki(&dir.join("pki")).unwrap();
    let mut rng = Rng::new(7);
    let mut rootfs = vec![0u8; 300 * 1024 + 11];
    rng.fill(&mut rootfs);
    std::fs::write(dir.join("rootfs.img"), &rootfs).unwrap();
    let spec = PackSpec::new(
        "ap1g8",
        "17.9.4.27",
        &dir.join("rootfs.img"),
        &pki.image_signer_key,
        &[
            pki.image_signer_cert.clone(),
            pki.image_intermediate_cert.clone(),
        ],
    );
    pack_image(&spec, &dir.join("ap1g8")).unwrap();
    let (signer, _) = wtpd::image::pack::load_signer(&spec).unwrap();
    let image = std::fs::read(dir.join("ap1g8")).unwrap();
    let board = Board::parse(
        &format!(
            "name = \"sim\"\nimage_type = \"ap1g8\"\n[[slot]]\nname = \"a\"\ndevice = \"a.img\"\nsize = {SLOT_SIZE}\n[[slot]]\nname = \"b\"\ndevice = \"b.img\"\nsize = {SLOT_SIZE}\n[bootenv]\nconfig = \"fw_env.config\"\nboot_limit = 3\n"
        ),
        Path::new("/mem/board.toml"),
    )
    .unwrap();
    let env_cfg = EnvConfig::new(
        vec![
            EnvLocation {
                path: "/mem/env".into(),
                offset: 0,
                size: 0x2000,
                ..Default::default()
            },
            EnvLocation {
                path: "/mem/env".into(),
                offset: 0x2000,
                size: 0x2000,
                ..Default::default()
            },
        ],
        ByteOrder::Little,
    )
    .unwrap();
    let policy = TrustPolicy {
        anchors: TrustPolicy::anchors_from_files(std::slice::from_ref(&pki.image_root_cert))
            .unwrap(),
        hardware_type: "ap1g8".into(),
        board: "sim".into(),
        not_before_floor: 0,
        now: Some(
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap()
                .as_secs(),
        ),
        allow_downgrade: false,
        current_version: Some("17.3.3.26".into()),
        expected_version: None,
    };
    let mut old_a = vec![0u8; SLOT_SIZE as usize];
    rng.fill(&mut old_a);
    let _ = std::fs::remove_dir_all(&dir);
    Lab {
        board,
        env_cfg,
        policy,
        image,
        payload_sha: openssl::sha::sha256(&rootfs),
        old_a,
        signer,
    }
}

/// Installs the lab's image on `d`.
fn install_lab(
    l: &Lab,
    d: &mut MemDisk,
    activate: bool,
) -> Result<wtpd::image::install::InstallReport, wtpd::image::install::InstallError> {
    install(
        &l.board,
        &l.env_cfg,
        d,
        std::io::Cursor::new(&l.image[..]),
        &l.policy,
        activate,
    )
}

fn fresh_disk(l: &Lab, cut_at: Option<usize>, seed: u64) -> MemDisk {
    let mut d = MemDisk {
        files: HashMap::new(),
        writes: 0,
        cut_at: None,
        powered: true,
        rng: Rng::new(seed),
    };
    d.files.insert("/mem/a.img".into(), l.old_a.clone());
    d.files
        .insert("/mem/b.img".into(), vec![0u8; SLOT_SIZE as usize]);
    let env = Env::from_pairs([
        ("boot_slot", "a"),
        ("slot_a_version", "17.3.3.26"),
        ("slot_a_state", "good"),
        ("slot_b_version", "8.10.130.0"),
        ("slot_b_state", "good"),
    ])
    .unwrap();
    write_with(&mut d, &l.env_cfg, &env).unwrap();
    write_with(&mut d, &l.env_cfg, &env).unwrap();
    d.writes = 0;
    d.cut_at = cut_at;
    d
}

/// The bootloader: reads the environment, applies the boot rules, saves when they changed it.
fn boot(l: &Lab, d: &mut MemDisk) -> Boot {
    let (mut env, _) = read_with(d, &l.env_cfg).expect("a valid environment copy after any cut");
    let before = env.clone();
    let b = boot_step(&l.board, &mut env).unwrap();
    if env != before {
        write_with(d, &l.env_cfg, &env).unwrap();
    }
    b
}

/// The booted slot holds what its state promises.
fn assert_boots_a_verified_slot(l: &Lab, d: &mut MemDisk, k: usize) -> String {
    let b = boot(l, d);
    let name = match b {
        Boot::Slot { name, .. } => name,
        Boot::RolledBack { to, .. } => to,
    };
    let slot = l.board.slot(&name).unwrap().clone();
    let mut buf = vec![0u8; 64 * 1024];
    if name == "a" {
        let sha = hash_slot(d, &slot, SLOT_SIZE, &mut buf).unwrap();
        assert_eq!(
            sha,
            openssl::sha::sha256(&l.old_a),
            "cut {k}: slot a was modified"
        );
    } else {
        let len = l.image.len() as u64; // an upper bound; compare the payload's own length
        let _ = len;
        let payload_len = 300 * 1024 + 11;
        let sha = hash_slot(d, &slot, payload_len, &mut buf).unwrap();
        assert_eq!(
            sha, l.payload_sha,
            "cut {k}: booted slot b does not hold the verified payload"
        );
    }
    name
}

#[test]
fn power_cut_at_every_write_of_an_install_never_bricks() {
    let l = lab("every");
    // Count the writes of an uncut install and switch.
    let chunk = 16 * 1024;
    let mut d = fresh_disk(&l, None, 1);
    install_chunked(
        &l.board,
        &l.env_cfg,
        &mut d,
        std::io::Cursor::new(&l.image[..]),
        &l.policy,
        true,
        chunk,
    )
    .unwrap();
    let total = d.writes;
    assert!(
        total >= 20,
        "invalid mark + 19 payload chunks + switch: {total}"
    );
    let mut booted_new = 0;
    for k in 1..=total {
        let mut d = fresh_disk(&l, Some(k), k as u64);
        let r = install_chunked(
            &l.board,
            &l.env_cfg,
            &mut d,
            std::io::Cursor::new(&l.image[..]),
            &l.policy,
            true,
            chunk,
        );
        assert!(r.is_err(), "cut {k} of {total} must interrupt the install");
        d.powered = true;
        let name = assert_boots_a_verified_slot(&l, &mut d, k);
        if name == "b" {
            booted_new += 1;
        }
        // The agent restarts on what booted and finishes: install again, switch, boot, mark good.
        if name == "a" {
            install_lab(&l, &mut d, true).unwrap();
            assert_eq!(
                boot(&l, &mut d),
                Boot::Slot {
                    name: "b".into(),
                    trial: true
                }
            );
        }
        assert_eq!(
            mark_good(&l.board, &l.env_cfg, &mut d).unwrap().as_deref(),
            Some("b"),
            "cut {k}"
        );
        let (env, _) = read_with(&mut d, &l.env_cfg).unwrap();
        let ab = AbState::read(&l.board, &env).unwrap();
        assert_eq!(
            (ab.primary().as_deref(), ab.backup().as_deref()),
            (Some("17.9.4.27"), Some("17.3.3.26")),
            "cut {k}"
        );
    }
    // Only the last write (the switch itself) can leave the new slot booting.
    assert!(booted_new <= 1, "{booted_new}");
    eprintln!(
        "power cut at each of {total} writes of an install: every cut booted a verified slot"
    );
}

#[test]
fn a_slot_that_never_becomes_good_is_abandoned_after_the_boot_limit() {
    let l = lab("rollback");
    let mut d = fresh_disk(&l, None, 2);
    install_lab(&l, &mut d, true).unwrap();
    for _ in 0..3 {
        assert_eq!(
            boot(&l, &mut d),
            Boot::Slot {
                name: "b".into(),
                trial: true
            }
        );
    }
    assert_eq!(
        boot(&l, &mut d),
        Boot::RolledBack {
            failed: "b".into(),
            to: "a".into()
        }
    );
    assert_eq!(
        boot(&l, &mut d),
        Boot::Slot {
            name: "a".into(),
            trial: false
        }
    );
    let (env, _) = read_with(&mut d, &l.env_cfg).unwrap();
    let ab = AbState::read(&l.board, &env).unwrap();
    assert_eq!(ab.primary().as_deref(), Some("17.3.3.26"));
    assert_eq!(
        ab.backup(),
        None,
        "the failed slot is invalid, not a backup"
    );
    assert_boots_a_verified_slot(&l, &mut d, 0);
    // The same version is not installed again: the board would loop.
    let e = install_lab(&l, &mut d, true).unwrap_err();
    assert!(
        e.to_string()
            .contains("failed to boot on this board before"),
        "{e}"
    );
}

/// The tar members of an image: (name, header offset, size).
fn members(image: &[u8]) -> Vec<(String, usize, usize)> {
    let mut out = Vec::new();
    let mut off = 0;
    while off + 512 <= image.len() && image[off..off + 512].iter().any(|&b| b != 0) {
        let h = &image[off..off + 512];
        let name_end = h[..100].iter().position(|&b| b == 0).unwrap_or(100);
        let name = String::from_utf8_lossy(&h[..name_end]).into_owned();
        let size_txt = std::str::from_utf8(&h[124..135]).unwrap();
        let size = usize::from_str_radix(size_txt.trim_matches(['\0', ' ']), 8).unwrap();
        out.push((name, off, size));
        off += 512 + size.div_ceil(512) * 512;
    }
    out
}

/// Rewrites a tar header's checksum field after a change, as tar would.
fn fix_checksum(h: &mut [u8]) {
    h[148..156].fill(b' ');
    let sum: u32 = h[..512].iter().map(|&b| u32::from(b)).sum();
    h[148..156].copy_from_slice(format!("{sum:06o}\0 ").as_bytes());
}

/// The image with its manifest changed by `edit` and signed again with the real signer key:
/// a signed head whose body does not match it.
fn resigned(l: &Lab, edit: impl Fn(&mut wtpd::image::manifest::Manifest)) -> Vec<u8> {
    use wtpd::image::pack::{sign_manifest, ustar_header};
    let m = members(&l.image);
    let part = |i: usize| &l.image[m[i].1 + 512..m[i].1 + 512 + m[i].2];
    let mut manifest = wtpd::image::manifest::Manifest::parse(part(0)).unwrap();
    edit(&mut manifest);
    let text = manifest.to_text().into_bytes();
    let sig = sign_manifest(&text, &l.signer, manifest.signature_algorithm).unwrap();
    let mut out = Vec::new();
    for (name, data) in [("manifest", &text[..]), ("manifest.sig", &sig[..])] {
        out.extend_from_slice(&ustar_header(name, data.len() as u64, 0).unwrap());
        out.extend_from_slice(data);
        out.resize(out.len().div_ceil(512) * 512, 0);
    }
    out.extend_from_slice(&l.image[m[2].1..]);
    out
}

/// An image refused by the board, with the policy and environment it is tried under and a
/// word of the refusal.
type Case = (
    &'static str,
    Vec<u8>,
    TrustPolicy,
    &'static [(&'static str, &'static str)],
    &'static str,
);

const TRIAL: &[(&str, &str)] = &[
    ("upgrade_available", "1"),
    ("bootcount", "1"),
    ("bootlimit", "3"),
];
const NOT_GOOD: &[(&str, &str)] = &[("slot_a_state", "new")];

/// The refusals of issue 11: a signed head with a bad body (the first eleven), a head this
/// board refuses, and installs while the board has no spare good slot (the last five).
fn refusal_cases(l: &Lab) -> Vec<Case> {
    let m = members(&l.image);
    assert_eq!(
        m.iter().map(|x| x.0.as_str()).collect::<Vec<_>>(),
        ["manifest", "manifest.sig", "signer.pem", "rootfs.img"]
    );
    let (_, payload_hdr, payload_len) = m[3].clone();
    let payload_at = payload_hdr + 512;
    let end_of_payload = payload_at + payload_len.div_ceil(512) * 512;

    let mut flipped = l.image.clone();
    flipped[payload_at + payload_len / 2] ^= 1;
    let mut last_byte = l.image.clone();
    last_byte[payload_at + payload_len - 1] ^= 0x80;
    let truncated = l.image[..payload_at + payload_len / 2].to_vec();
    let mut trailing = l.image.clone();
    trailing.extend_from_slice(b"trailing data\n");
    let mut bad_checksum = l.image.clone();
    bad_checksum[payload_hdr + 136] ^= 1; // the mtime field; the checksum left as it was
    let mut symlink = l.image.clone();
    symlink[payload_hdr + 156] = b'2';
    fix_checksum(&mut symlink[payload_hdr..payload_hdr + 512]);
    // A `../` member after the payload, before the end-of-archive blocks.
    let mut dotdot = l.image[..end_of_payload].to_vec();
    let mut evil = wtpd::image::pack::ustar_header("x", 5, 0).unwrap();
    evil[..9].copy_from_slice(b"../x\0\0\0\0\0");
    fix_checksum(&mut evil);
    dotdot.extend_from_slice(&evil);
    dotdot.extend_from_slice(b"evil\n");
    dotdot.resize(dotdot.len().div_ceil(512) * 512 + 1024, 0);
    // An extra regular member after the payload (not in the manifest).
    let mut extra = l.image[..end_of_payload].to_vec();
    extra.extend_from_slice(&wtpd::image::pack::ustar_header("extra.img", 5, 0).unwrap());
    extra.extend_from_slice(b"extra");
    extra.resize(extra.len().div_ceil(512) * 512 + 1024, 0);
    let size_plus = resigned(l, |m| m.payloads[0].size += 1);
    let size_minus = resigned(l, |m| m.payloads[0].size -= 1);
    let other_digest = resigned(l, |m| m.payloads[0].sha256[0] ^= 1);

    let announced_other = TrustPolicy {
        expected_version: Some("17.9.4.28".into()),
        ..l.policy.clone()
    };
    vec![
        ("payload byte", flipped, l.policy.clone(), &[], "SHA-256"),
        (
            "last payload byte",
            last_byte,
            l.policy.clone(),
            &[],
            "SHA-256",
        ),
        (
            "truncated payload",
            truncated,
            l.policy.clone(),
            &[],
            "ends at byte",
        ),
        (
            "trailing data",
            trailing,
            l.policy.clone(),
            &[],
            "after the end-of-archive",
        ),
        (
            "payload header checksum",
            bad_checksum,
            l.policy.clone(),
            &[],
            "checksum",
        ),
        (
            "payload as a symlink",
            symlink,
            l.policy.clone(),
            &[],
            "only regular files",
        ),
        (
            "../ member after the payload",
            dotdot,
            l.policy.clone(),
            &[],
            "`..` are refused",
        ),
        (
            "member outside the manifest",
            extra,
            l.policy.clone(),
            &[],
            "expected the end",
        ),
        (
            "manifest size +1",
            size_plus,
            l.policy.clone(),
            &[],
            "the manifest says",
        ),
        (
            "manifest size -1",
            size_minus,
            l.policy.clone(),
            &[],
            "the manifest says",
        ),
        (
            "manifest digest",
            other_digest,
            l.policy.clone(),
            &[],
            "SHA-256",
        ),
        (
            "wrong hardware type",
            l.image.clone(),
            TrustPolicy {
                hardware_type: "ap3g3".into(),
                ..l.policy.clone()
            },
            &[],
            "hardware type",
        ),
        (
            "downgrade",
            l.image.clone(),
            TrustPolicy {
                current_version: Some("18.0".into()),
                ..l.policy.clone()
            },
            &[],
            "older than the running",
        ),
        (
            "version not announced",
            l.image.clone(),
            announced_other,
            &[],
            "the controller announced 17.9.4.28",
        ),
        (
            "booted slot on trial",
            l.image.clone(),
            l.policy.clone(),
            TRIAL,
            "on trial",
        ),
        (
            "booted slot not good",
            l.image.clone(),
            l.policy.clone(),
            NOT_GOOD,
            "is new, not good",
        ),
    ]
}

/// The cases of [`refusal_cases`] refused at the signed head or the A/B rules, before a byte
/// of the payload.
const HEAD_REFUSALS: [&str; 5] = [
    "wrong hardware type",
    "downgrade",
    "version not announced",
    "booted slot on trial",
    "booted slot not good",
];

/// Every kind of bad image of issue 11 (a signed head with a bad body, a version the
/// controller did not announce), and installs while the board has no spare good slot: the
/// install is refused before the first write, and both slots and the environment are
/// byte-identical afterwards.
#[test]
fn refused_images_leave_slots_and_environment_untouched() {
    let l = lab("refused");
    let cases = refusal_cases(&l);
    for (what, image, policy, env_vars, why) in cases {
        let mut d = fresh_disk(&l, None, 3);
        if !env_vars.is_empty() {
            let (mut env, _) = read_with(&mut d, &l.env_cfg).unwrap();
            for (k, v) in env_vars {
                env.set(*k, *v).unwrap();
            }
            write_with(&mut d, &l.env_cfg, &env).unwrap();
            d.writes = 0;
        }
        let before = d.files.clone();
        for activate in [true, false] {
            let e = install(
                &l.board,
                &l.env_cfg,
                &mut d,
                std::io::Cursor::new(&image[..]),
                &policy,
                activate,
            )
            .unwrap_err();
            let text = e.to_string();
            assert!(text.contains(why), "{what}: {text}");
            assert!(!text.contains("image: image:"), "{what}: {text}");
            assert_eq!(d.writes, 0, "{what}: refused before the first write");
            for (path, bytes) in &before {
                assert!(
                    d.files[path] == *bytes,
                    "{what}: {} changed",
                    path.display()
                );
            }
        }
        // Nor does a predownloaded backup get activated while the booted slot is on trial.
        if what == "booted slot on trial" {
            let e = activate(&l.board, &l.env_cfg, &mut d, "8.10.130.0").unwrap_err();
            assert!(e.to_string().contains("on trial"), "{e}");
            assert_eq!(d.writes, 0);
        }
    }
}

#[test]
fn predownload_stages_then_activates_with_one_write() {
    let l = lab("stage");
    let mut d = fresh_disk(&l, None, 4);
    let r = install_lab(&l, &mut d, false).unwrap();
    assert!(!r.activated);
    let (env, _) = read_with(&mut d, &l.env_cfg).unwrap();
    let ab = AbState::read(&l.board, &env).unwrap();
    assert_eq!(
        (ab.primary().as_deref(), ab.backup().as_deref()),
        (Some("17.3.3.26"), Some("17.9.4.27"))
    );
    let writes = d.writes;
    assert_eq!(
        activate(&l.board, &l.env_cfg, &mut d, "17.9.4.27").unwrap(),
        "b"
    );
    assert_eq!(d.writes, writes + 1, "the switch is one environment write");
    assert!(activate(&l.board, &l.env_cfg, &mut d, "99.0").is_err());
    assert_eq!(
        boot(&l, &mut d),
        Boot::Slot {
            name: "b".into(),
            trial: true
        }
    );
}

// ---- Slot mode (`download.mode = "slot"`): the image streamed into the slot as it arrives.

use wtpd::image::install::verify_image;
use wtpd::image::stream::{commit, stream_install, SlotStream};

/// The environment's variables other than the target slot's state, and that state.
fn env_but_b_state(l: &Lab, d: &mut MemDisk) -> (Vec<(String, String)>, Option<String>) {
    let (env, _) = read_with(d, &l.env_cfg).unwrap();
    let mut vars: Vec<(String, String)> = env
        .iter()
        .filter(|(k, _)| *k != "slot_b_state")
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    vars.sort();
    (vars, env.get("slot_b_state").map(str::to_string))
}

#[test]
fn slot_mode_streams_in_any_piece_size_and_switches_in_one_write() {
    let l = lab("stream");
    for piece in [1, 511, 1024, 5000, 1 << 20] {
        let mut d = fresh_disk(&l, None, 5);
        let r = stream_install(
            &l.board, &l.env_cfg, &mut d, &l.image, &l.policy, true, piece,
        )
        .unwrap_or_else(|e| panic!("pieces of {piece}: {e}"));
        assert_eq!((r.slot.as_str(), r.sha256), ("b", l.payload_sha));
        assert_eq!(
            boot(&l, &mut d),
            Boot::Slot {
                name: "b".into(),
                trial: true
            }
        );
        assert_boots_a_verified_slot(&l, &mut d, 0);
    }
}

/// Every refusal of the whole-image verifier, on the stream: a bad body is found after the
/// slot was marked invalid (and partly written), and then the boot variables and slot a are
/// byte-identical and slot b is `invalid`; a head this board refuses writes nothing at all.
#[test]
fn slot_mode_refuses_tampered_images_leaving_the_booted_slot_and_boot_variables() {
    let l = lab("stream-refused");
    for (what, image, policy, env_vars, why) in refusal_cases(&l) {
        for piece in [1000, 4096] {
            let mut d = fresh_disk(&l, None, 3);
            if !env_vars.is_empty() {
                let (mut env, _) = read_with(&mut d, &l.env_cfg).unwrap();
                for (k, v) in env_vars {
                    env.set(*k, *v).unwrap();
                }
                write_with(&mut d, &l.env_cfg, &env).unwrap();
                d.writes = 0;
            }
            let before = d.files.clone();
            let (vars, _) = env_but_b_state(&l, &mut d);
            let e = stream_install(&l.board, &l.env_cfg, &mut d, &image, &policy, true, piece)
                .unwrap_err();
            let text = e.to_string();
            assert!(text.contains(why), "{what}: {text}");
            let a = Path::new("/mem/a.img");
            assert!(d.files[a] == before[a], "{what}: slot a changed");
            if HEAD_REFUSALS.contains(&what) {
                assert_eq!(d.writes, 0, "{what}: refused before the first write");
                assert!(d.files == before, "{what}: something changed");
                continue;
            }
            let (after, b_state) = env_but_b_state(&l, &mut d);
            assert_eq!(after, vars, "{what}: boot variables changed");
            assert_eq!(b_state.as_deref(), Some("invalid"), "{what}");
            assert_eq!(
                boot(&l, &mut d),
                Boot::Slot {
                    name: "a".into(),
                    trial: false
                },
                "{what}"
            );
            assert_boots_a_verified_slot(&l, &mut d, 0);
        }
    }
}

/// The stream and the whole-image verifier agree on single-byte changes (every 97th byte of
/// the head, the payload's header and the end of the archive; every 4999th of the payload's
/// own bytes) and every 997th truncation: both refuse.
#[test]
fn slot_mode_refuses_exactly_what_the_whole_image_verifier_refuses() {
    let l = lab("stream-diff");
    let mut d = fresh_disk(&l, None, 6);
    let snapshot = d.files.clone();
    verify_image(&l.board, &l.env_cfg, &mut d, &l.image[..], &l.policy).unwrap();
    let m = members(&l.image);
    let payload = m[3].1 + 512..m[3].1 + 512 + m[3].2;
    let mut flips = 0;
    for at in (0..l.image.len()).step_by(97) {
        if payload.contains(&at) && (at - payload.start) % 4999 > 96 {
            continue;
        }
        let mut bad = l.image.clone();
        bad[at] ^= 0x10;
        assert!(
            verify_image(&l.board, &l.env_cfg, &mut d, &bad[..], &l.policy).is_err(),
            "verifier took byte {at}"
        );
        d.files = snapshot.clone();
        d.writes = 0;
        let r = stream_install(&l.board, &l.env_cfg, &mut d, &bad, &l.policy, true, 1024);
        assert!(r.is_err(), "stream took a change at byte {at}");
        let (env, _) = read_with(&mut d, &l.env_cfg).unwrap();
        assert_eq!(env.get("boot_slot"), Some("a"), "byte {at}");
        flips += 1;
    }
    for len in (0..l.image.len()).step_by(997) {
        d.files = snapshot.clone();
        let mut s = SlotStream::new(&l.board, &l.env_cfg, l.policy.clone());
        let r = s
            .push(&mut d, &l.image[..len])
            .and_then(|_| s.finish(&mut d));
        assert!(r.is_err(), "truncated at {len}");
    }
    eprintln!("{flips} single-byte changes refused by the stream and the verifier alike");
}

/// Power lost at every write of a slot-mode install (the invalid mark, every payload piece,
/// the switch), torn: every cut boots a slot that verifies, and the agent, restarted,
/// streams the image again and switches.
#[test]
fn power_cut_at_every_write_of_a_slot_mode_install_never_bricks() {
    let l = lab("stream-cut");
    let piece = 5000;
    let mut d = fresh_disk(&l, None, 1);
    stream_install(
        &l.board, &l.env_cfg, &mut d, &l.image, &l.policy, true, piece,
    )
    .unwrap();
    let total = d.writes;
    assert!(
        total >= 60,
        "invalid mark + payload pieces + switch: {total}"
    );
    let mut booted_new = 0;
    for k in 1..=total {
        let mut d = fresh_disk(&l, Some(k), k as u64);
        let r = stream_install(
            &l.board, &l.env_cfg, &mut d, &l.image, &l.policy, true, piece,
        );
        assert!(r.is_err(), "cut {k} of {total} must interrupt the install");
        d.powered = true;
        let name = assert_boots_a_verified_slot(&l, &mut d, k);
        if name == "b" {
            booted_new += 1;
        } else {
            let (env, _) = read_with(&mut d, &l.env_cfg).unwrap();
            let ab = AbState::read(&l.board, &env).unwrap();
            assert!(
                k == 1 || ab.backup().is_none(),
                "cut {k}: a half-written slot b offered as backup"
            );
            stream_install(
                &l.board, &l.env_cfg, &mut d, &l.image, &l.policy, true, piece,
            )
            .unwrap_or_else(|e| panic!("cut {k}: the retried install: {e}"));
            assert_boots_a_verified_slot(&l, &mut d, k);
        }
        assert_eq!(
            mark_good(&l.board, &l.env_cfg, &mut d).unwrap().as_deref(),
            Some("b"),
            "cut {k}"
        );
    }
    assert!(booted_new <= 1, "{booted_new}");
    eprintln!("slot mode: power cut at each of {total} writes, every cut booted a verified slot");
}

/// A predownload in slot mode writes the slot and stages it as a good backup; the activation
/// is the one environment write that switches.
#[test]
fn slot_mode_predownload_stages_then_activates_with_one_write() {
    let l = lab("stream-stage");
    let mut d = fresh_disk(&l, None, 4);
    let mut s = SlotStream::new(&l.board, &l.env_cfg, l.policy.clone());
    for p in l.image.chunks(1024) {
        s.push(&mut d, p).unwrap();
    }
    let streamed = s.finish(&mut d).unwrap();
    let writes = d.writes;
    let r = commit(&l.board, &l.env_cfg, &mut d, &streamed, false).unwrap();
    assert!(!r.activated);
    assert_eq!(d.writes, writes + 1, "staging is one environment write");
    let (env, _) = read_with(&mut d, &l.env_cfg).unwrap();
    let ab = AbState::read(&l.board, &env).unwrap();
    assert_eq!(
        (ab.primary().as_deref(), ab.backup().as_deref()),
        (Some("17.3.3.26"), Some("17.9.4.27"))
    );
    // Committing twice is refused: the slot is no longer the one the stream marked invalid.
    assert!(commit(&l.board, &l.env_cfg, &mut d, &streamed, true).is_err());
    let writes = d.writes;
    activate(&l.board, &l.env_cfg, &mut d, "17.9.4.27").unwrap();
    assert_eq!(d.writes, writes + 1, "the switch is one environment write");
    assert_eq!(
        boot(&l, &mut d),
        Boot::Slot {
            name: "b".into(),
            trial: true
        }
    );
    assert_boots_a_verified_slot(&l, &mut d, 0);
}

// ---- Slots on raw flash: the real `Disk` over simulated MTD partitions (SimFlash, a fake
// named as one), the environment on a simulated NOR device through the same DeviceStorage code
// the board's /dev/mtdN goes through (SimOpener instead of MtdOpener). ----

use wtpd::flash::sim::{Cut, SimFlash};
use wtpd::flash::writer::FlashError;
use wtpd::image::bootenv::{DeviceStorage, SimOpener};
use wtpd::image::install::{Disk, InstallError};

/// The environment's NOR device: 64 KiB erase blocks, one 8 KiB copy in each of the first two.
fn env_flash_info() -> wtpd::flash::FlashInfo {
    SimFlash::nor(4 * 0x10000, 0x10000)
}

/// The real Disk for the slots and the environment on simulated NOR, with one power supply:
/// once any device is dead (a cut), no other can be written either.
struct FlashDisk {
    disk: Disk,
    env: DeviceStorage<SimOpener>,
    env_dev: PathBuf,
    slots: Vec<Slot>,
}

impl FlashDisk {
    fn env_flash(&mut self) -> &mut SimFlash {
        self.env
            .opener()
            .device(&self.env_dev)
            .expect("the env device")
    }

    fn dead(&mut self) -> bool {
        let slots = self.slots.clone();
        self.env_flash().is_dead()
            || slots.iter().any(|s| {
                self.disk
                    .simulated(s)
                    .ok()
                    .flatten()
                    .is_some_and(|f| f.is_dead())
            })
    }

    fn powered(&mut self) -> io::Result<()> {
        if self.dead() {
            return Err(io::Error::other("power is off"));
        }
        Ok(())
    }
}

impl SlotStorage for FlashDisk {
    fn check_fit(&mut self, slot: &Slot, len: u64) -> io::Result<()> {
        self.disk.check_fit(slot, len)
    }
    fn begin(&mut self, slot: &Slot, len: u64) -> io::Result<()> {
        self.powered()?;
        self.disk.begin(slot, len)
    }
    fn write_at(&mut self, slot: &Slot, offset: u64, data: &[u8]) -> io::Result<()> {
        self.powered()?;
        SlotStorage::write_at(&mut self.disk, slot, offset, data)
    }
    fn sync(&mut self, slot: &Slot) -> io::Result<()> {
        self.powered()?;
        self.disk.sync(slot)
    }
    fn read_at(&mut self, slot: &Slot, offset: u64, buf: &mut [u8]) -> io::Result<usize> {
        SlotStorage::read_at(&mut self.disk, slot, offset, buf)
    }
}

impl EnvStorage for FlashDisk {
    fn read_at(&mut self, loc: &EnvLocation) -> io::Result<Vec<u8>> {
        EnvStorage::read_at(&mut self.env, loc)
    }
    fn write_at(&mut self, loc: &EnvLocation, data: &[u8]) -> io::Result<()> {
        self.powered()?;
        EnvStorage::write_at(&mut self.env, loc, data)
    }
    fn medium(&mut self, loc: &EnvLocation) -> io::Result<wtpd::image::bootenv::Medium> {
        self.env.medium(loc)
    }
    fn mark_obsolete(&mut self, loc: &EnvLocation) -> io::Result<()> {
        self.powered()?;
        self.env.mark_obsolete(loc)
    }
}

/// A board whose two slots are simulated MTD partitions, with the lab's image and trust.
struct FlashLab {
    lab: Lab,
    dir: PathBuf,
    board: Board,
    env_cfg: EnvConfig,
    old: Vec<u8>,
    payload_len: u64,
}

const PAYLOAD_LEN: u64 = 300 * 1024 + 11;

/// `sim_a` and `sim_b` are the slots' `sim = { ... }` tables; both slots are `size` bytes.
fn flash_lab(name: &str, size: u64, sim_a: &str, sim_b: &str) -> FlashLab {
    let lab = lab(name);
    let dir =
        std::env::temp_dir().join(format!("wtpd-powercut-flash-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(dir.join("template")).unwrap();
    let board = Board::parse(
        &format!(
            "name = \"sim\"\nimage_type = \"ap1g8\"\n\
             [[slot]]\nname = \"a\"\ndevice = \"a.img\"\nsize = {size}\nkind = \"mtd\"\nsim = {sim_a}\n\
             [[slot]]\nname = \"b\"\ndevice = \"b.img\"\nsize = {size}\nkind = \"mtd\"\nsim = {sim_b}\n\
             [bootenv]\nconfig = \"fw_env.config\"\nboot_limit = 3\n"
        ),
        &dir.join("template/board.toml"),
    )
    .unwrap();
    let env_path = dir.join("template/env.bin");
    SimFlash::create(&env_path, env_flash_info()).unwrap();
    let env_cfg = EnvConfig::new(
        vec![
            EnvLocation {
                path: env_path.clone(),
                offset: 0,
                size: 0x2000,
                sector_size: 0x10000,
                sectors: 1,
            },
            EnvLocation {
                path: env_path,
                offset: 0x10000,
                size: 0x2000,
                sector_size: 0x10000,
                sectors: 1,
            },
        ],
        ByteOrder::Little,
    )
    .unwrap();
    // Slot a holds the running image, written the way the agent writes (so its bad blocks are
    // skipped); slot b holds an old backup the install replaces.
    let mut rng = Rng::new(11);
    let mut old = vec![0u8; 200 * 1024 + 5];
    rng.fill(&mut old);
    for s in &board.slots {
        let sim = s.sim.as_ref().unwrap();
        wtpd::flash::sim::SimFlash::create(&s.device, sim.info(s.size)).unwrap();
    }
    let mut d = FlashDisk {
        disk: Disk::new(),
        env: env_storage(&dir),
        env_dev: dir.join("template/env.bin"),
        slots: board.slots.clone(),
    };
    for s in &board.slots {
        d.begin(s, old.len() as u64).unwrap();
        SlotStorage::write_at(&mut d, s, 0, &old).unwrap();
        d.sync(s).unwrap();
    }
    let env = Env::from_pairs([
        ("boot_slot", "a"),
        ("slot_a_version", "17.3.3.26"),
        ("slot_a_state", "good"),
        ("slot_b_version", "8.10.130.0"),
        ("slot_b_state", "good"),
    ])
    .unwrap();
    write_with(&mut d, &env_cfg, &env).unwrap();
    write_with(&mut d, &env_cfg, &env).unwrap();
    FlashLab {
        lab,
        dir,
        board,
        env_cfg,
        old,
        payload_len: PAYLOAD_LEN,
    }
}

/// The environment's device after a (re)boot: reopened, no cut armed.
fn env_storage(dir: &Path) -> DeviceStorage<SimOpener> {
    let dev = dir.join("template/env.bin");
    let flash = SimFlash::open(&dev, env_flash_info(), &[]).unwrap();
    DeviceStorage::with_opener(SimOpener::new().with(dev, flash))
}

/// How an install gets its image: verified whole from a file, then written (`tmp`), or
/// streamed into the slot as it arrives (`slot`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Mode {
    Tmp,
    Slot,
}

impl FlashLab {
    /// A copy of the template board in `run/` (slots and environment), and a Disk on it:
    /// the paths stay the template's, so the copy goes back over them.
    fn fresh(&self) -> FlashDisk {
        for f in ["a.img", "b.img", "env.bin"] {
            let t = self.dir.join("template").join(f);
            let saved = self.dir.join(format!("saved-{f}"));
            if !saved.exists() {
                std::fs::copy(&t, &saved).unwrap();
            }
            std::fs::copy(&saved, &t).unwrap();
        }
        self.reboot()
    }

    /// The next boot: the devices reopened (no cut armed).
    fn reboot(&self) -> FlashDisk {
        FlashDisk {
            disk: Disk::new(),
            env: env_storage(&self.dir),
            env_dev: self.dir.join("template/env.bin"),
            slots: self.board.slots.clone(),
        }
    }

    fn install(&self, d: &mut FlashDisk, chunk: usize) -> Result<(), InstallError> {
        self.install_in(Mode::Tmp, d, chunk)
    }

    fn install_in(&self, mode: Mode, d: &mut FlashDisk, chunk: usize) -> Result<(), InstallError> {
        if mode == Mode::Slot {
            return stream_install(
                &self.board,
                &self.env_cfg,
                d,
                &self.lab.image,
                &self.lab.policy,
                true,
                chunk,
            )
            .map(drop);
        }
        install_chunked(
            &self.board,
            &self.env_cfg,
            d,
            std::io::Cursor::new(&self.lab.image[..]),
            &self.lab.policy,
            true,
            chunk,
        )
        .map(drop)
    }

    fn slot(&self, name: &str) -> Slot {
        self.board.slot(name).unwrap().clone()
    }

    /// The bootloader, then the booted slot's contents against what the environment promises.
    fn boot_and_check(&self, d: &mut FlashDisk, what: &str) -> String {
        let (mut env, _) =
            read_with(d, &self.env_cfg).expect("a valid environment copy after any cut");
        let before = env.clone();
        let b = boot_step(&self.board, &mut env).unwrap();
        if env != before {
            write_with(d, &self.env_cfg, &env).unwrap();
        }
        let name = match b {
            Boot::Slot { name, .. } => name,
            Boot::RolledBack { to, .. } => to,
        };
        let mut buf = vec![0u8; 64 * 1024];
        let (len, want) = if name == "a" {
            (self.old.len() as u64, openssl::sha::sha256(&self.old))
        } else {
            (self.payload_len, self.lab.payload_sha)
        };
        let got = hash_slot(d, &self.slot(&name), len, &mut buf).unwrap();
        assert_eq!(
            got, want,
            "{what}: booted slot {name} does not hold its image"
        );
        name
    }
}

/// Power lost after and during every erase and page write of an install: those of slot b and
/// those of the environment's NOR device (the invalid mark before the slot is written, the
/// switch after it: each an erase of the copy's sector, its writes and the old copy's flag
/// marked obsolete). After each cut the board boots a slot whose contents match its image,
/// slot b is never offered as a good backup while it holds a partial write, and the agent's
/// next install succeeds. Returns the cuts of the slot and of the environment.
fn every_cut(fl: &FlashLab, mode: Mode, chunk: usize) -> (u64, u64) {
    let b = fl.slot("b");
    let mut d = fl.fresh();
    fl.install_in(mode, &mut d, chunk).unwrap();
    let slot_total = d.disk.simulated(&b).unwrap().unwrap().ops();
    let env_total = d.env_flash().ops();
    assert!(slot_total > 10, "{slot_total}");
    assert!(
        env_total >= 4,
        "two environment writes, erases included: {env_total}"
    );
    let mut cuts = (0, 0);
    for (on_env, total) in [(false, slot_total), (true, env_total)] {
        for k in 1..=total {
            for cut in [Cut::After(k), Cut::During(k)] {
                let device = if on_env { "environment" } else { "slot b" };
                let what = format!("{mode:?} mode, {device}: {cut:?} of {total}");
                let mut d = fl.fresh();
                if on_env {
                    d.env_flash().cut(cut);
                } else {
                    d.disk.simulated(&b).unwrap().unwrap().cut(cut);
                }
                let r = fl.install_in(mode, &mut d, chunk);
                let completed = cut == Cut::After(total);
                assert_eq!(r.is_ok(), completed, "{what}: {r:?}");
                if !completed {
                    assert!(d.dead(), "{what}: the cut must have happened");
                }
                let mut d = fl.reboot();
                let booted = fl.boot_and_check(&mut d, &what);
                let (env, _) = read_with(&mut d, &fl.env_cfg).unwrap();
                let ab = AbState::read(&fl.board, &env).unwrap();
                if completed {
                    assert_eq!(booted, "b", "{what}");
                } else if booted == "a" {
                    if ab.backup().is_some() {
                        // Only while the invalid mark has not landed: slot b is untouched.
                        let mut buf = vec![0u8; 64 * 1024];
                        let got = hash_slot(&mut d, &b, fl.old.len() as u64, &mut buf).unwrap();
                        assert_eq!(
                            got,
                            openssl::sha::sha256(&fl.old),
                            "{what}: a half-written slot b offered as backup"
                        );
                    }
                    fl.install_in(mode, &mut d, chunk)
                        .unwrap_or_else(|e| panic!("{what}: retried install: {e}"));
                    assert_eq!(fl.boot_and_check(&mut d, &what), "b");
                } else {
                    // A cut inside the switch's environment write after the new copy was
                    // complete: the switch took, and slot b verified above.
                    assert!(
                        on_env,
                        "{what}: slot b booted after a cut in the slot write"
                    );
                }
                assert_eq!(
                    mark_good(&fl.board, &fl.env_cfg, &mut d)
                        .unwrap()
                        .as_deref(),
                    Some("b"),
                    "{what}"
                );
                if on_env {
                    cuts.1 += 1;
                } else {
                    cuts.0 += 1;
                }
            }
        }
    }
    cuts
}

#[test]
fn power_cut_at_every_erase_and_page_write_of_a_nand_slot_never_bricks() {
    // 128 KiB erase blocks of 2 KiB pages; slot b has a bad block among those the image takes,
    // slot a one before its image's end.
    let fl = flash_lab(
        "nand",
        8 * 128 * 1024,
        "{ type = \"nand\", page = 2048, bad_blocks = [1] }",
        "{ type = \"nand\", page = 2048, bad_blocks = [2, 6] }",
    );
    // Chunks that split pages, so the writer's page buffer is cut too.
    let (slot, env) = every_cut(&fl, Mode::Tmp, 5000);
    eprintln!(
        "NAND: {slot} cuts in the slot and {env} in the environment (after and during every \
         erase and write), all booted"
    );
    let _ = std::fs::remove_dir_all(&fl.dir);
}

#[test]
fn power_cut_at_every_erase_and_write_of_a_nor_slot_never_bricks() {
    let fl = flash_lab(
        "nor",
        8 * 65536,
        "{ type = \"nor\", erase_size = 65536 }",
        "{ type = \"nor\", erase_size = 65536 }",
    );
    let (slot, env) = every_cut(&fl, Mode::Tmp, install_chunk());
    eprintln!(
        "NOR: {slot} cuts in the slot and {env} in the environment (after and during every \
         erase and write), all booted"
    );
    let _ = std::fs::remove_dir_all(&fl.dir);
}

#[test]
fn power_cut_at_every_erase_and_page_write_of_a_slot_mode_install_on_nand_never_bricks() {
    let fl = flash_lab(
        "nand-slot-mode",
        8 * 128 * 1024,
        "{ type = \"nand\", page = 2048, bad_blocks = [1] }",
        "{ type = \"nand\", page = 2048, bad_blocks = [2, 6] }",
    );
    // Image Data blocks of 1024 bytes, pushed as they arrive: pages are filled across pieces.
    let (slot, env) = every_cut(&fl, Mode::Slot, 1024);
    eprintln!("NAND, slot mode: {slot} cuts in the slot and {env} in the environment, all booted");
    let _ = std::fs::remove_dir_all(&fl.dir);
}

fn install_chunk() -> usize {
    wtpd::image::install::CHUNK
}

#[test]
fn a_bad_block_in_the_middle_is_skipped_and_the_read_back_matches() {
    let fl = flash_lab(
        "badmid",
        8 * 128 * 1024,
        "{ type = \"nand\", page = 2048 }",
        "{ type = \"nand\", page = 2048, bad_blocks = [1] }",
    );
    let b = fl.slot("b");
    let mut d = fl.fresh();
    // What the bad block held before (it is never erased nor written).
    let es = 128 * 1024usize;
    let raw = |f: &mut wtpd::flash::sim::SimFlash, at: usize, len: usize| {
        let mut v = vec![0u8; len];
        wtpd::flash::Flash::read_at(f, at as u64, &mut v).unwrap();
        v
    };
    let bad_before = raw(d.disk.simulated(&b).unwrap().unwrap(), es, es);
    fl.install(&mut d, install_chunk()).unwrap();
    let f = d.disk.simulated(&b).unwrap().unwrap();
    assert_eq!(f.stats().erases, 3, "blocks 0, 2 and 3");
    assert!(raw(f, es, es) == bad_before, "the bad block was touched");
    // The payload sits in blocks 0, 2, 3 of the device, its tail page padded with 0xFF.
    let rootfs_at = {
        let m = members(&fl.lab.image);
        m[3].1 + 512
    };
    let payload = &fl.lab.image[rootfs_at..rootfs_at + PAYLOAD_LEN as usize];
    assert!(raw(f, 0, es) == payload[..es]);
    assert!(raw(f, 2 * es, 2 * es)[..PAYLOAD_LEN as usize - es] == payload[es..]);
    let tail = raw(
        f,
        2 * es + PAYLOAD_LEN as usize - es,
        2048 - (PAYLOAD_LEN as usize % 2048),
    );
    assert!(
        tail.iter().all(|&x| x == 0xFF),
        "the tail page is padded with 0xFF"
    );
    let mut d = fl.reboot();
    assert_eq!(fl.boot_and_check(&mut d, "bad block in the middle"), "b");
    let _ = std::fs::remove_dir_all(&fl.dir);
}

#[test]
fn an_image_too_large_for_the_good_blocks_is_refused_before_any_erase() {
    // Eight 128 KiB blocks (the slot's 1 MiB takes the payload on paper), six of them bad.
    let fl = flash_lab(
        "toolarge",
        8 * 128 * 1024,
        "{ type = \"nand\", page = 2048 }",
        "{ type = \"nand\", page = 2048, bad_blocks = [1, 2, 3, 4, 5, 6] }",
    );
    let b = fl.slot("b");
    let mut d = fl.fresh();
    let before: Vec<Vec<u8>> = ["a.img", "b.img", "env.bin"]
        .iter()
        .map(|f| std::fs::read(fl.dir.join("template").join(f)).unwrap())
        .collect();
    // Any erase or write would kill the device.
    d.disk.simulated(&b).unwrap().unwrap().cut(Cut::After(0));
    let e = fl.install(&mut d, install_chunk()).unwrap_err();
    match &e {
        InstallError::Flash {
            error:
                FlashError::TooLarge {
                    needed_blocks: 3,
                    good_blocks: 2,
                    bad_blocks: 6,
                    ..
                },
            ..
        } => {}
        other => panic!("not the good-block refusal: {other}"),
    }
    assert!(e.to_string().contains("nothing was erased"), "{e}");
    let f = d.disk.simulated(&b).unwrap().unwrap();
    assert_eq!((f.ops(), f.is_dead()), (0, false), "no erase, no write");
    for (name, bytes) in ["a.img", "b.img", "env.bin"].iter().zip(&before) {
        assert!(
            std::fs::read(fl.dir.join("template").join(name)).unwrap() == *bytes,
            "{name} changed"
        );
    }
    let _ = std::fs::remove_dir_all(&fl.dir);
}
