//! Slot mode's streaming install (`image::stream::SlotStream`): the image pushed in pieces the
//! fuzzer chooses, straight into an in-memory inactive slot, against the in-memory reference
//! verifier of fuzz/src/image.rs (a differential check).
//!
//! Input: one byte `k`, then `k % 8` piece-size bytes, then the image (the `bundle` target's
//! seeds: small images signed by the lab PKI, for a board of type ap1g8).
//!
//! Properties, beyond "never panics":
//! 1. Nothing is written, to the slot or the environment, before the signed head verified.
//! 2. The stream accepts (push and finish succeed) exactly the images the reference accepts
//!    and the A/B rules allow (`install::check_manifest`: one rootfs payload that fits).
//! 3. What it accepts, the slot holds: the rootfs payload's bytes, byte for byte.
//! 4. Whatever happens, the environment keeps every variable but `slot_b_state`, and slot a
//!    (the booted one) is never written.

#![no_main]

use std::collections::HashMap;
use std::io;
use std::path::Path;
use std::sync::OnceLock;

use libfuzzer_sys::fuzz_target;
use wtpd::board::{Board, Slot};
use wtpd::image::bootenv::{
    read_with, write_with, ByteOrder, Env, EnvConfig, EnvLocation, EnvStorage,
};
use wtpd::image::bundle::BundleReader;
use wtpd::image::install::{check_manifest, AbState, SlotStorage};
use wtpd::image::stream::SlotStream;
use wtpd_fuzz::image::{policy, reference_verify, verify_cached};

const SLOT_SIZE: usize = 64 << 10;

/// Slots and the environment in memory (a fake medium: the target checks the stream's logic,
/// not a device), counting writes.
struct MemDisk {
    slots: HashMap<String, Vec<u8>>,
    env: Vec<u8>,
    slot_writes: u32,
    env_writes: u32,
}

impl SlotStorage for MemDisk {
    fn write_at(&mut self, slot: &Slot, offset: u64, data: &[u8]) -> io::Result<()> {
        self.slot_writes += 1;
        let s = self
            .slots
            .get_mut(&slot.name)
            .ok_or_else(|| io::Error::other("no such slot"))?;
        let end = offset as usize + data.len();
        if end > s.len() {
            return Err(io::Error::other("write past the slot"));
        }
        s[offset as usize..end].copy_from_slice(data);
        Ok(())
    }
    fn sync(&mut self, _slot: &Slot) -> io::Result<()> {
        Ok(())
    }
    fn read_at(&mut self, slot: &Slot, offset: u64, buf: &mut [u8]) -> io::Result<usize> {
        let s = &self.slots[&slot.name];
        let start = (offset as usize).min(s.len());
        let n = buf.len().min(s.len() - start);
        buf[..n].copy_from_slice(&s[start..start + n]);
        Ok(n)
    }
}

impl EnvStorage for MemDisk {
    fn read_at(&mut self, loc: &EnvLocation) -> io::Result<Vec<u8>> {
        let o = loc.offset as usize;
        Ok(self.env[o..o + loc.size].to_vec())
    }
    fn write_at(&mut self, loc: &EnvLocation, data: &[u8]) -> io::Result<()> {
        self.env_writes += 1;
        let o = loc.offset as usize;
        self.env[o..o + loc.size].copy_from_slice(data);
        Ok(())
    }
}

struct Fixture {
    board: Board,
    env_cfg: EnvConfig,
    /// The environment both copies start with.
    env: Vec<u8>,
}

fn fixture() -> &'static Fixture {
    static F: OnceLock<Fixture> = OnceLock::new();
    F.get_or_init(|| {
        let board = Board::parse(
            &format!(
                "name = \"ap1g8-a\"\nimage_type = \"ap1g8\"\n\
                 [[slot]]\nname = \"a\"\ndevice = \"a.img\"\nsize = {SLOT_SIZE}\n\
                 [[slot]]\nname = \"b\"\ndevice = \"b.img\"\nsize = {SLOT_SIZE}\n\
                 [bootenv]\nconfig = \"fw_env.config\"\n"
            ),
            Path::new("/mem/board.toml"),
        )
        .expect("board");
        let loc = |offset| EnvLocation {
            path: "/mem/env".into(),
            offset,
            size: 0x1000,
            ..Default::default()
        };
        let env_cfg = EnvConfig::new(vec![loc(0), loc(0x1000)], ByteOrder::Little).expect("cfg");
        let mut d = MemDisk {
            slots: HashMap::new(),
            env: vec![0xFF; 0x2000],
            slot_writes: 0,
            env_writes: 0,
        };
        let env = Env::from_pairs([
            ("boot_slot", "a"),
            ("slot_a_version", "17.3.3.26"),
            ("slot_a_state", "good"),
            ("slot_b_version", "8.10.130.0"),
            ("slot_b_state", "good"),
        ])
        .expect("env");
        write_with(&mut d, &env_cfg, &env).expect("env write");
        Fixture {
            board,
            env_cfg,
            env: d.env,
        }
    })
}

/// Whether the A/B rules take this image, and its rootfs payload's name (the reference's view
/// of the head, verified through the cache).
fn ab_allows(f: &Fixture, img: &[u8], env: &Env) -> Option<String> {
    let b = BundleReader::new(img).ok()?;
    let v = verify_cached(b.manifest_bytes(), b.signature(), b.chain_pem())?;
    let ab = AbState::read(&f.board, env).ok()?;
    check_manifest(&f.board, &ab, v.manifest())
        .ok()
        .map(|(_, p)| p.name.clone())
}

fuzz_target!(|input: &[u8]| {
    let Some((&k, rest)) = input.split_first() else {
        return;
    };
    let k = usize::from(k % 8).min(rest.len());
    let (sizes, img) = rest.split_at(k);
    let f = fixture();
    let mut d = MemDisk {
        slots: HashMap::from([
            ("a".to_string(), vec![0xAA; SLOT_SIZE]),
            ("b".to_string(), vec![0xBB; SLOT_SIZE]),
        ]),
        env: f.env.clone(),
        slot_writes: 0,
        env_writes: 0,
    };
    let (env_before, _) = read_with(&mut d, &f.env_cfg).expect("fixture env");
    let mut s = SlotStream::new(&f.board, &f.env_cfg, policy());

    let mut result = Ok(());
    let mut at = 0usize;
    let mut turn = 0usize;
    while at < img.len() {
        let n = sizes
            .get(turn % sizes.len().max(1))
            .map_or(img.len(), |&s| usize::from(s.max(1)) * 97)
            .min(img.len() - at);
        turn += 1;
        let head_passed = s.slot().is_some();
        result = s.push(&mut d, &img[at..at + n]);
        // Property 1: no write until the head passed (the push that completes it may write).
        if !head_passed && s.slot().is_none() {
            assert_eq!(
                (d.slot_writes, d.env_writes),
                (0, 0),
                "a write before the head verified"
            );
        }
        at += n;
        if result.is_err() {
            break;
        }
    }
    let streamed = result.and_then(|()| s.finish(&mut d));

    let (_, reference) = reference_verify(img);
    let rootfs = ab_allows(f, img, &env_before);
    let expected = match (&reference, &rootfs) {
        (Ok(payloads), Some(name)) => payloads.iter().find(|(n, _)| n == name).cloned(),
        _ => None,
    };
    // Property 2.
    match (&streamed, &expected) {
        (Ok(_), Some((_, bytes))) => {
            // Property 3.
            assert_eq!(&d.slots["b"][..bytes.len()], &bytes[..], "slot b holds the payload");
        }
        (Err(_), None) => {}
        _ => panic!(
            "stream and reference disagree: stream {:?}, reference {:?}, A/B rootfs {rootfs:?}",
            streamed.as_ref().map(|s| s.version().to_string()),
            reference.as_ref().map(|p| p.len())
        ),
    }
    // Property 4.
    assert!(d.slots["a"].iter().all(|&b| b == 0xAA), "slot a written");
    let (env_after, _) = read_with(&mut d, &f.env_cfg).expect("a valid environment");
    for (name, value) in env_before.iter() {
        if name != "slot_b_state" {
            assert_eq!(env_after.get(name), Some(value), "{name} changed");
        }
    }
    assert_eq!(env_before.iter().count(), env_after.iter().count());
});
