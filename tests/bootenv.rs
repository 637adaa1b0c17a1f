//! The U-Boot environment module against the real tools: libubootenv's `fw_printenv` and
//! `fw_setenv` (Debian: libubootenv-tool) and `mkenvimage` (u-boot-tools), plus power cuts
//! through an in-memory storage. A missing tool fails the test: CI installs both packages.

use std::collections::{BTreeMap, HashMap};
use std::io;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicUsize, Ordering};

use wtpd::flash::sim::{Cut, SimFlash};
use wtpd::flash::{Flash, FlashInfo};
use wtpd::image::bootenv::{
    self, crc32, current_copy, decode, encode, read_with, write_with, ByteOrder, DeviceStorage,
    Env, EnvConfig, EnvError, EnvLocation, EnvStorage, FileStorage, FlagScheme, OtherCopy,
    SimOpener,
};

// ---------------------------------------------------------------------------------------------
// Helpers

/// A scratch folder, removed on drop.
struct TempDir(PathBuf);

impl TempDir {
    fn new(name: &str) -> Self {
        static N: AtomicUsize = AtomicUsize::new(0);
        let n = N.fetch_add(1, Ordering::SeqCst);
        let p =
            std::env::temp_dir().join(format!("wtpd-bootenv-{}-{n}-{name}", std::process::id()));
        let _ = std::fs::remove_dir_all(&p);
        std::fs::create_dir_all(&p).unwrap();
        TempDir(p)
    }
    fn path(&self, name: &str) -> PathBuf {
        self.0.join(name)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// A file of `len` bytes of 0xFF (erased flash).
fn erased_file(path: &Path, len: usize) {
    std::fs::write(path, vec![0xFF; len]).unwrap();
}

fn env(pairs: &[(&str, &str)]) -> Env {
    Env::from_pairs(pairs.iter().copied()).unwrap()
}

fn map(env: &Env) -> BTreeMap<String, String> {
    env.iter()
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .collect()
}

/// Runs a tool; a missing tool or a failure fails the test.
fn run(tool: &str, args: &[&str]) -> String {
    let out = Command::new(tool).args(args).output().unwrap_or_else(|e| {
        panic!("cannot run {tool} ({e}): install libubootenv-tool and u-boot-tools")
    });
    assert!(
        out.status.success(),
        "{tool} {args:?} failed ({}): {}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

/// What `fw_printenv -c CONFIG` prints, as a map.
fn fw_printenv(cfg: &Path) -> BTreeMap<String, String> {
    let text = run("fw_printenv", &["-c", cfg.to_str().unwrap()]);
    text.lines()
        .map(|l| {
            let (k, v) = l.split_once('=').expect("fw_printenv line without '='");
            (k.to_owned(), v.to_owned())
        })
        .collect()
}

/// `fw_setenv -c CONFIG -f EMPTY NAME [VALUE]` (the empty default environment lets it start
/// from erased copies).
fn fw_setenv(dir: &TempDir, cfg: &Path, name: &str, value: Option<&str>) {
    let def = dir.path("default-env.txt");
    if !def.exists() {
        std::fs::write(&def, "").unwrap();
    }
    let mut args = vec![
        "-c",
        cfg.to_str().unwrap(),
        "-f",
        def.to_str().unwrap(),
        name,
    ];
    args.extend(value);
    run("fw_setenv", &args);
}

/// A config file with the given lines, parsed with the host's byte order (the one Debian's
/// tools use).
fn config(dir: &TempDir, lines: &str) -> (PathBuf, EnvConfig) {
    let p = dir.path("fw_env.config");
    std::fs::write(&p, lines).unwrap();
    let cfg = EnvConfig::from_file(&p, ByteOrder::native()).unwrap();
    (p, cfg)
}

/// One 0x2000-byte copy at offset 0x1000 of a 0x4000-byte file.
fn single_setup(dir: &TempDir) -> (PathBuf, EnvConfig) {
    let f = dir.path("env.bin");
    erased_file(&f, 0x4000);
    config(dir, &format!("{} 0x1000 0x2000\n", f.display()))
}

/// Two 0x2000-byte copies in one file (offsets 0 and 0x2000), or in two files.
fn redundant_setup(dir: &TempDir, two_files: bool) -> (PathBuf, EnvConfig) {
    if two_files {
        let (a, b) = (dir.path("env-a.bin"), dir.path("env-b.bin"));
        erased_file(&a, 0x2000);
        erased_file(&b, 0x2000);
        let text = format!(
            "# two files\n{} 0 0x2000\n{} 0 0x2000\n",
            a.display(),
            b.display()
        );
        config(dir, &text)
    } else {
        let f = dir.path("env.bin");
        erased_file(&f, 0x4000);
        let text = format!(
            "{} 0x0 0x2000\n{} 0x2000 0x2000\n",
            f.display(),
            f.display()
        );
        config(dir, &text)
    }
}

/// A small deterministic PRNG (xorshift64*).
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }
    fn bytes(&mut self, n: usize) -> Vec<u8> {
        (0..n).map(|_| self.next() as u8).collect()
    }
}

/// In-memory storage that can cut power: the write numbered `cut_at` (0-based, counted over the
/// storage's life) writes only `tear` bytes and fails, and every later write fails.
#[derive(Default)]
struct MemStorage {
    files: HashMap<PathBuf, Vec<u8>>,
    writes: usize,
    cut_at: Option<usize>,
    tear: usize,
    dead: bool,
}

impl MemStorage {
    fn with_file(path: &str, len: usize) -> Self {
        let mut s = MemStorage::default();
        s.files.insert(PathBuf::from(path), vec![0xFF; len]);
        s
    }
    /// Power comes back: writes work again.
    fn reboot(&mut self) {
        self.dead = false;
        self.cut_at = None;
    }
    fn cut(&mut self, after_writes: usize, tear: usize) {
        self.cut_at = Some(self.writes + after_writes);
        self.tear = tear;
    }
    fn copy_mut(&mut self, loc: &EnvLocation) -> &mut [u8] {
        let off = loc.offset as usize;
        &mut self.files.get_mut(&loc.path).unwrap()[off..off + loc.size]
    }
}

impl EnvStorage for MemStorage {
    fn read_at(&mut self, loc: &EnvLocation) -> io::Result<Vec<u8>> {
        let f = self
            .files
            .get(&loc.path)
            .ok_or_else(|| io::Error::from(io::ErrorKind::NotFound))?;
        let off = loc.offset as usize;
        f.get(off..off + loc.size)
            .map(<[u8]>::to_vec)
            .ok_or_else(|| io::Error::from(io::ErrorKind::UnexpectedEof))
    }

    fn write_at(&mut self, loc: &EnvLocation, data: &[u8]) -> io::Result<()> {
        if self.dead {
            return Err(io::Error::other("power is off"));
        }
        let n = if self.cut_at == Some(self.writes) {
            self.dead = true;
            self.tear.min(data.len())
        } else {
            data.len()
        };
        self.writes += 1;
        self.copy_mut(loc)[..n].copy_from_slice(&data[..n]);
        if self.dead {
            return Err(io::Error::other("power cut mid-write"));
        }
        Ok(())
    }
}

const MEM: &str = "/mem/env";

fn mem_redundant() -> (MemStorage, EnvConfig) {
    let cfg = EnvConfig::parse_fw_env_config(
        &format!("{MEM} 0 0x1000\n{MEM} 0x1000 0x1000\n"),
        ByteOrder::Big,
    )
    .unwrap();
    (MemStorage::with_file(MEM, 0x2000), cfg)
}

fn mem_single() -> (MemStorage, EnvConfig) {
    let cfg = EnvConfig::parse_fw_env_config(&format!("{MEM} 0 0x1000\n"), ByteOrder::Big).unwrap();
    (MemStorage::with_file(MEM, 0x1000), cfg)
}

/// A redundant in-memory environment with copy contents set directly (`None`: erased).
fn mem_copies(c0: Option<(u8, &Env)>, c1: Option<(u8, &Env)>) -> (MemStorage, EnvConfig) {
    let (mut s, cfg) = mem_redundant();
    for (i, c) in [c0, c1].into_iter().enumerate() {
        if let Some((flag, e)) = c {
            let bytes = encode(e, 0x1000, ByteOrder::Big, Some(flag)).unwrap();
            s.copy_mut(&cfg.copies[i]).copy_from_slice(&bytes);
        }
    }
    (s, cfg)
}

// ---------------------------------------------------------------------------------------------
// 1. Our writes, read by fw_printenv

#[test]
fn our_single_copy_writes_are_read_by_fw_printenv() {
    let dir = TempDir::new("single-ours");
    let (cfg_path, cfg) = single_setup(&dir);
    let mut e = env(&[
        ("bootcmd", "run distro_bootcmd"),
        ("bootargs", "console=ttyS0,115200 root=/dev/mmcblk0p2 rw"),
        ("spaces", "  two  spaces  "),
    ]);
    for round in 0..4 {
        e.set("round", round.to_string()).unwrap();
        if round == 2 {
            e.remove("spaces");
        }
        let info = bootenv::write(&cfg, &e).unwrap();
        assert_eq!((info.copy, info.flag, info.fallback), (0, None, None));
        assert_eq!(info.used, e.serialized_len());
        assert_eq!(info.available, 0x2000 - 4);
        assert_eq!(fw_printenv(&cfg_path), map(&e), "round {round}");
    }
    // Only the copy's bytes changed.
    let file = std::fs::read(dir.path("env.bin")).unwrap();
    assert!(file[..0x1000].iter().all(|&b| b == 0xFF));
    assert!(file[0x3000..].iter().all(|&b| b == 0xFF));
}

#[test]
fn our_redundant_writes_are_read_by_fw_printenv_and_flags_advance() {
    for two_files in [false, true] {
        let dir = TempDir::new("redundant-ours");
        let (cfg_path, cfg) = redundant_setup(&dir, two_files);
        let mut e = env(&[("bootcmd", "bootm 0x9f050000"), ("eq", "a=b=c")]);
        let mut last_flag = None;
        for round in 0..5u8 {
            e.set("round", format!("round {round}")).unwrap();
            let info = bootenv::write(&cfg, &e).unwrap();
            // Erased start: copy 0 with flag 1, then alternating, flag + 1 each time.
            let want_flag = last_flag.map_or(1, |f: u8| f + 1);
            assert_eq!(info.flag, Some(want_flag), "round {round}");
            assert_eq!(info.copy, usize::from(round % 2), "round {round}");
            assert_eq!(
                info.fallback,
                (round > 0).then(|| 1 - info.copy),
                "round {round}"
            );
            last_flag = info.flag;
            assert_eq!(fw_printenv(&cfg_path), map(&e), "round {round}");
            let (back, rinfo) = bootenv::read(&cfg).unwrap();
            assert_eq!(back, e);
            assert_eq!((rinfo.current, rinfo.flag), (info.copy, info.flag));
        }
        // The flag bytes on disk.
        let loc = &cfg.copies[0];
        let raw = std::fs::read(&loc.path).unwrap();
        assert_eq!(raw[loc.offset as usize + 4], 5); // copy 0 written in rounds 0, 2, 4
    }
}

// ---------------------------------------------------------------------------------------------
// 2. What fw_setenv writes, read by us

#[test]
fn fw_setenv_single_copy_is_read_by_us() {
    let dir = TempDir::new("single-fwsetenv");
    let (cfg_path, cfg) = single_setup(&dir);
    let mut want = BTreeMap::new();
    let steps: &[(&str, Option<&str>)] = &[
        ("zeta", Some("last letter")),
        ("alpha", Some("x=y  z")),
        ("bootargs", Some("console=ttyS0,115200 quiet")),
        ("zeta", None), // delete: fw_setenv leaves old bytes after the terminator
        ("mid", Some("m")),
    ];
    for &(k, v) in steps {
        fw_setenv(&dir, &cfg_path, k, v);
        match v {
            Some(v) => want.insert(k.to_owned(), v.to_owned()),
            None => want.remove(k),
        };
        let (e, info) = bootenv::read(&cfg).unwrap();
        assert_eq!(map(&e), want, "after setting {k}");
        assert_eq!((info.current, info.flag), (0, None));
        assert!(info.other.is_none());
    }
}

#[test]
fn fw_setenv_redundant_is_read_by_us() {
    for two_files in [false, true] {
        let dir = TempDir::new("redundant-fwsetenv");
        let (cfg_path, cfg) = redundant_setup(&dir, two_files);
        let mut want = BTreeMap::new();
        let mut prev: Option<(usize, u8)> = None;
        for i in 0..6 {
            let (k, v) = (format!("var{}", i % 4), format!("value {i} = {}", i * i));
            fw_setenv(&dir, &cfg_path, &k, Some(&v));
            want.insert(k, v);
            let (e, info) = bootenv::read(&cfg).unwrap();
            assert_eq!(map(&e), want, "step {i}");
            let flag = info.flag.unwrap();
            if let Some((cur, f)) = prev {
                assert_eq!(info.current, 1 - cur, "step {i}: copies alternate");
                assert_eq!(flag, f.wrapping_add(1), "step {i}: flag + 1");
                assert!(matches!(info.other, Some(OtherCopy::Valid { flag: o }) if o == f));
            }
            prev = Some((info.current, flag));
        }
    }
}

#[test]
fn fw_setenv_and_our_writes_interleave() {
    let dir = TempDir::new("interleave");
    let (cfg_path, cfg) = redundant_setup(&dir, false);
    fw_setenv(&dir, &cfg_path, "from", Some("fw_setenv 0"));
    let mut flag = bootenv::read(&cfg).unwrap().1.flag.unwrap();
    for i in 0..4 {
        let (mut e, _) = bootenv::read(&cfg).unwrap();
        e.set("from", format!("wtpd {i}")).unwrap();
        e.set(format!("ours{i}"), "x").unwrap();
        let w = bootenv::write(&cfg, &e).unwrap();
        flag = flag.wrapping_add(1);
        assert_eq!(w.flag, Some(flag));
        assert_eq!(fw_printenv(&cfg_path), map(&e));

        fw_setenv(
            &dir,
            &cfg_path,
            "from",
            Some(&format!("fw_setenv {}", i + 1)),
        );
        e.set("from", format!("fw_setenv {}", i + 1)).unwrap();
        let (back, info) = bootenv::read(&cfg).unwrap();
        flag = flag.wrapping_add(1);
        assert_eq!(info.flag, Some(flag), "fw_setenv advanced the flag by one");
        assert_eq!(
            info.current,
            1 - w.copy,
            "fw_setenv wrote the copy we did not"
        );
        assert_eq!(back, e);
    }
}

// ---------------------------------------------------------------------------------------------
// 3. Byte for byte against mkenvimage, both byte orders

/// `mkenvimage [flags] -s SIZE` of the variables, listed in our serialization order.
fn mkenvimage(dir: &TempDir, e: &Env, size: usize, flags: &[&str]) -> Vec<u8> {
    let (txt, out) = (dir.path("vars.txt"), dir.path("out.bin"));
    let mut text = String::new();
    for (k, v) in e.iter() {
        text.push_str(&format!("{k}={v}\n"));
    }
    std::fs::write(&txt, text).unwrap();
    let size = format!("{size:#x}");
    let mut args = flags.to_vec();
    args.extend([
        "-s",
        &size,
        "-o",
        out.to_str().unwrap(),
        txt.to_str().unwrap(),
    ]);
    run("mkenvimage", &args);
    std::fs::read(&out).unwrap()
}

#[test]
fn encode_equals_mkenvimage_in_both_byte_orders() {
    let dir = TempDir::new("mkenvimage");
    let envs = [
        env(&[]),
        env(&[("a", "1")]),
        env(&[
            ("zeta", "1"),
            ("alpha", "two words"),
            ("beta", "a=b"),
            ("bootcmd", "run boot_${boot_slot}"),
            ("boot_slot", "b"),
            ("upgrade_available", "1"),
            ("bootcount", "0"),
        ]),
    ];
    for e in &envs {
        for size in [0x1000, 0x2000, 0x10000] {
            for (bo, b_flag) in [(ByteOrder::Big, Some("-b")), (ByteOrder::Little, None)] {
                let flags: Vec<&str> = b_flag.into_iter().collect();
                let tool = mkenvimage(&dir, e, size, &flags);
                assert_eq!(encode(e, size, bo, None).unwrap(), tool, "{bo:?} {size:#x}");
                assert_eq!(decode(&tool, bo, false).unwrap(), (e.clone(), None));

                let mut r = flags.clone();
                r.push("-r");
                let tool = mkenvimage(&dir, e, size, &r);
                assert_eq!(encode(e, size, bo, Some(1)).unwrap(), tool, "{bo:?} -r");
                assert_eq!(decode(&tool, bo, true).unwrap(), (e.clone(), Some(1)));
            }
        }
    }
    // The byte order matters: a big-endian image does not read as little-endian, and the
    // error says so.
    let tool = mkenvimage(&dir, &envs[2], 0x1000, &["-b"]);
    assert!(matches!(
        decode(&tool, ByteOrder::Little, false),
        Err(EnvError::WrongByteOrder {
            configured: ByteOrder::Little
        })
    ));
    let be = encode(&envs[2], 0x1000, ByteOrder::Big, None).unwrap();
    let le = encode(&envs[2], 0x1000, ByteOrder::Little, None).unwrap();
    assert_eq!(
        be[..4].iter().rev().collect::<Vec<_>>(),
        le[..4].iter().collect::<Vec<_>>()
    );
    assert_eq!(be[4..], le[4..]);
}

#[test]
fn crc32_is_zlibs() {
    assert_eq!(crc32(b""), 0);
    assert_eq!(crc32(b"123456789"), 0xCBF4_3926);
    assert_eq!(
        crc32(b"The quick brown fox jumps over the lazy dog"),
        0x414F_A339
    );
    let data: Vec<u8> = (0..=255u8).cycle().take(10_000).collect();
    assert_eq!(
        bootenv::crc32_update(crc32(&data[..3333]), &data[3333..]),
        crc32(&data)
    );
}

// ---------------------------------------------------------------------------------------------
// 4. Which copy is current

#[test]
fn flag_rules() {
    assert_eq!(current_copy(255, 0), 1);
    assert_eq!(current_copy(0, 255), 0);
    assert_eq!(current_copy(7, 7), 0);
    assert_eq!(current_copy(3, 4), 1);
    assert_eq!(current_copy(4, 3), 0);
    assert_eq!(current_copy(254, 255), 1);
    assert_eq!(current_copy(0, 1), 1);

    let (a, b) = (env(&[("who", "copy0")]), env(&[("who", "copy1")]));
    let read = |c0, c1| {
        let (mut s, cfg) = mem_copies(c0, c1);
        read_with(&mut s, &cfg)
    };
    let (e, info) = read(Some((255, &a)), Some((0, &b))).unwrap();
    assert_eq!(
        (e.get("who"), info.current, info.flag),
        (Some("copy1"), 1, Some(0))
    );
    let (e, info) = read(Some((0, &a)), Some((255, &b))).unwrap();
    assert_eq!((e.get("who"), info.current), (Some("copy0"), 0));
    let (e, info) = read(Some((9, &a)), Some((9, &b))).unwrap();
    assert_eq!((e.get("who"), info.current), (Some("copy0"), 0));
    assert!(matches!(info.other, Some(OtherCopy::Valid { flag: 9 })));

    // One bad CRC: the other copy, whatever the flags, and the reason is reported.
    let (e, info) = read(None, Some((1, &b))).unwrap();
    assert_eq!((e.get("who"), info.current), (Some("copy1"), 1));
    assert!(matches!(
        info.other_invalid(),
        Some(EnvError::BadCrc { .. })
    ));
    let (mut s, cfg) = mem_copies(Some((1, &a)), Some((200, &b)));
    s.copy_mut(&cfg.copies[1])[100] ^= 1; // silent corruption of the newer copy
    let (e, info) = read_with(&mut s, &cfg).unwrap();
    assert_eq!((e.get("who"), info.current), (Some("copy0"), 0));
    assert!(info.other_invalid().is_some());

    // Both bad.
    match read(None, None) {
        Err(EnvError::NoValidCopy { copy0, copy1 }) => {
            assert!(matches!(*copy0, EnvError::BadCrc { .. }));
            assert!(matches!(*copy1, EnvError::BadCrc { .. }));
        }
        other => panic!("{other:?}"),
    }
}

#[test]
fn write_targets_the_non_current_copy() {
    let (a, b, n) = (env(&[("v", "a")]), env(&[("v", "b")]), env(&[("v", "new")]));
    // (copy 0, copy 1, copy written, flag written)
    type Copy<'a> = Option<(u8, &'a Env)>;
    let cases: [(Copy, Copy, usize, u8); 6] = [
        (Some((255, &a)), Some((0, &b)), 0, 1),
        (Some((0, &a)), Some((255, &b)), 1, 1),
        (Some((254, &a)), Some((255, &b)), 0, 0),
        (Some((5, &a)), Some((5, &b)), 1, 6),
        (Some((5, &a)), None, 1, 6),
        (None, Some((5, &b)), 0, 6),
    ];
    for (c0, c1, copy, flag) in cases {
        let (mut s, cfg) = mem_copies(c0, c1);
        let w = write_with(&mut s, &cfg, &n).unwrap();
        assert_eq!(
            (w.copy, w.flag, w.fallback),
            (copy, Some(flag), Some(1 - copy))
        );
        let (e, info) = read_with(&mut s, &cfg).unwrap();
        assert_eq!((e, info.current), (n.clone(), copy));
    }
}

#[test]
fn fw_printenv_and_fw_setenv_agree_on_the_flag_rules() {
    let dir = TempDir::new("flags-fw");
    let (cfg_path, cfg) = redundant_setup(&dir, false);
    let (old, new) = (env(&[("who", "old")]), env(&[("who", "new")]));
    let put = |copy: usize, flag: u8, e: &Env| {
        let loc = &cfg.copies[copy];
        let bytes = encode(e, loc.size, cfg.byte_order, Some(flag)).unwrap();
        FileStorage::new().write_at(loc, &bytes).unwrap();
    };
    // (flag0, env0, flag1, env1, copy both should pick)
    let cases = [
        (255, &old, 0, &new, 1),
        (0, &new, 255, &old, 0),
        (7, &new, 7, &old, 0),
        (3, &old, 4, &new, 1),
        (200, &new, 100, &old, 0),
    ];
    for (f0, e0, f1, e1, want) in cases {
        put(0, f0, e0);
        put(1, f1, e1);
        assert_eq!(fw_printenv(&cfg_path), map(&new), "flags {f0}/{f1}");
        let (e, info) = bootenv::read(&cfg).unwrap();
        assert_eq!((e, info.current), (new.clone(), want), "flags {f0}/{f1}");
    }
    // After 255 -> 0, fw_setenv writes copy 0 with flag 1, as we do.
    put(0, 255, &old);
    put(1, 0, &new);
    fw_setenv(&dir, &cfg_path, "who", Some("fw_setenv"));
    let (e, info) = bootenv::read(&cfg).unwrap();
    assert_eq!(
        (e.get("who"), info.current, info.flag),
        (Some("fw_setenv"), 0, Some(1))
    );
}

// ---------------------------------------------------------------------------------------------
// 5. Power cuts

#[test]
fn torn_write_of_the_non_current_copy_keeps_the_old_environment() {
    let old = env(&[("boot_slot", "a"), ("bootcount", "0")]);
    let new = env(&[
        ("boot_slot", "b"),
        ("bootcount", "0"),
        ("upgrade_available", "1"),
    ]);
    // The copy's meaningful bytes: header and data; after them both old and new are padding.
    let end = 5 + new.serialized_len();
    for tear in [0, 1, 3, 4, 5, 6, 20, end - 1, end, 0x1000 - 1] {
        let (mut s, cfg) = mem_redundant();
        write_with(&mut s, &cfg, &old).unwrap();
        write_with(&mut s, &cfg, &old).unwrap(); // both copies hold `old` now
        s.cut(0, tear);
        let err = write_with(&mut s, &cfg, &new).unwrap_err();
        assert!(matches!(err, EnvError::Io { .. }), "{err}");
        s.reboot();
        let (e, info) = read_with(&mut s, &cfg).unwrap();
        if tear >= end {
            // Only padding that was already 0xFF was left out: the write is complete.
            assert_eq!(
                (e, info.current),
                (new.clone(), 0),
                "tear after {tear} bytes"
            );
            continue;
        }
        assert_eq!(e, old, "tear after {tear} bytes");
        assert_eq!(info.current, 1, "copy 1 was current before the cut");
        if tear == 0 {
            assert!(matches!(info.other, Some(OtherCopy::Valid { flag: 1 })));
        } else {
            assert!(matches!(
                info.other_invalid(),
                Some(EnvError::BadCrc { .. })
            ));
        }
        // The next write goes to the torn copy again, never over the good one.
        let w = write_with(&mut s, &cfg, &new).unwrap();
        assert_eq!((w.copy, w.fallback), (0, Some(1)));
        assert_eq!(read_with(&mut s, &cfg).unwrap().0, new);
    }
}

#[test]
fn power_cut_at_every_write_of_a_sequence() {
    // Writes E1..En; power is cut during write k with a random tear; after reboot the
    // environment must be E(k-1), and the writes can go on.
    let mut rng = Rng(0x5eed);
    let seq: Vec<Env> = (0..12)
        .map(|i| {
            let mut e = env(&[("boot_slot", if i % 2 == 0 { "a" } else { "b" })]);
            e.set("serial", format!("{i}")).unwrap();
            e.set("pad", "x".repeat(rng.below(300))).unwrap();
            e
        })
        .collect();
    for k in 1..seq.len() {
        let (mut s, cfg) = mem_redundant();
        for e in &seq[..k] {
            write_with(&mut s, &cfg, e).unwrap();
        }
        let tear = rng.below(0x1000);
        s.cut(0, tear);
        assert!(write_with(&mut s, &cfg, &seq[k]).is_err());
        s.reboot();
        // A tear that left out only padding the copy already had is a complete write: some
        // copy then decodes to the new environment, and the tear covered all its data.
        let complete = cfg.copies.iter().any(|loc| {
            let bytes = s.read_at(loc).unwrap();
            matches!(decode(&bytes, ByteOrder::Big, true), Ok((e, _)) if e == seq[k])
        });
        let (e, _) = read_with(&mut s, &cfg).unwrap();
        if complete {
            assert!(
                tear >= 5 + seq[k].serialized_len(),
                "write {k}, tear {tear}"
            );
            assert_eq!(e, seq[k], "cut in write {k} after {tear} bytes");
        } else {
            assert_eq!(e, seq[k - 1], "cut in write {k} after {tear} bytes");
        }
        for e in &seq[k..] {
            write_with(&mut s, &cfg, e).unwrap();
            assert_eq!(&read_with(&mut s, &cfg).unwrap().0, e);
        }
    }
}

#[test]
fn zeroed_fresh_copy_falls_back_to_the_previous_one() {
    // Mender's power-loss test: zero the copy just written.
    let (mut s, cfg) = mem_redundant();
    let (old, new) = (env(&[("v", "old")]), env(&[("v", "new")]));
    write_with(&mut s, &cfg, &old).unwrap();
    let w = write_with(&mut s, &cfg, &new).unwrap();
    s.copy_mut(&cfg.copies[w.copy]).fill(0);
    let (e, info) = read_with(&mut s, &cfg).unwrap();
    assert_eq!((e, info.current), (old, 1 - w.copy));
    assert!(matches!(
        info.other_invalid(),
        Some(EnvError::BadCrc { .. })
    ));
}

#[test]
fn torn_single_copy_has_no_valid_environment() {
    let (mut s, cfg) = mem_single();
    write_with(&mut s, &cfg, &env(&[("v", "old")])).unwrap();
    s.cut(0, 10); // inside the data: a tear past it would leave a complete copy
    assert!(write_with(&mut s, &cfg, &env(&[("v", "new-and-longer")])).is_err());
    s.reboot();
    assert!(matches!(
        read_with(&mut s, &cfg),
        Err(EnvError::BadCrc { .. })
    ));
}

#[test]
fn too_large_is_refused_before_any_write() {
    let (mut s, cfg) = mem_redundant();
    let available = 0x1000 - 5;
    // name "v", '=', value, NUL, terminator: value of available - 4 fits exactly.
    let fits = env(&[("v", &"x".repeat(available - 4))]);
    assert_eq!(fits.serialized_len(), available);
    write_with(&mut s, &cfg, &fits).unwrap();
    let big = env(&[("v", &"x".repeat(available - 3))]);
    let writes = s.writes;
    match write_with(&mut s, &cfg, &big) {
        Err(EnvError::TooLarge {
            needed,
            available: a,
        }) => {
            assert_eq!((needed, a), (available + 1, available))
        }
        other => panic!("{other:?}"),
    }
    assert_eq!(s.writes, writes);
    // The same variables fit a single copy, whose header is one byte shorter.
    assert!(encode(&big, 0x1000, ByteOrder::Little, None).is_ok());
    assert!(matches!(
        encode(&env(&[]), 4, ByteOrder::Little, None),
        Err(EnvError::TooLarge {
            needed: 1,
            available: 0
        })
    ));
}

// ---------------------------------------------------------------------------------------------
// 6. Garbage in, errors out

#[test]
fn garbage_copies_are_errors_not_panics() {
    let mut rng = Rng(42);
    for len in [0, 1, 3, 4, 5, 6, 7, 64, 0x1000] {
        for _ in 0..50 {
            let bytes = rng.bytes(len);
            for bo in [ByteOrder::Big, ByteOrder::Little] {
                for red in [false, true] {
                    assert!(decode(&bytes, bo, red).is_err(), "{len} random bytes");
                }
            }
        }
    }
    // Garbage with a right CRC: parsed or refused, never a panic.
    let alphabet = [0u8, b'=', b'a', b'z', 0xFF, 0xC3, 0x80, b'\n'];
    let mut parsed = 0;
    for _ in 0..3000 {
        let len = 5 + rng.below(60);
        let mut b: Vec<u8> = (0..len)
            .map(|_| alphabet[rng.below(alphabet.len())])
            .collect();
        let crc = crc32(&b[4..]);
        b[..4].copy_from_slice(&crc.to_be_bytes());
        if decode(&b, ByteOrder::Big, false).is_ok() {
            parsed += 1;
        }
    }
    assert!(parsed > 0);
    // Specific malformed data areas with a right CRC.
    for (data, reason) in [
        (&b"novalue\0\0"[..], "entry without '='"),
        (b"=x\0\0", "entry with an empty name"),
        (b"a=1\0b=unterminated", "entry not NUL-terminated"),
        (b"a=\xff\0\0", "value not UTF-8"),
    ] {
        let mut b = vec![0; 4];
        b.extend_from_slice(data);
        let crc = crc32(&b[4..]);
        b[..4].copy_from_slice(&crc.to_le_bytes());
        match decode(&b, ByteOrder::Little, false) {
            Err(EnvError::Malformed { offset, reason: r }) => {
                assert_eq!(r, reason);
                assert!(offset >= 4);
            }
            other => panic!("{data:?}: {other:?}"),
        }
    }
    // Duplicates: the last value wins; a full area without terminator is accepted.
    let mut b = vec![0; 4];
    b.extend_from_slice(b"a=1\0a=2\0");
    let crc = crc32(&b[4..]);
    b[..4].copy_from_slice(&crc.to_le_bytes());
    assert_eq!(
        decode(&b, ByteOrder::Little, false).unwrap().0,
        env(&[("a", "2")])
    );
}

#[test]
fn garbage_files_are_errors_not_panics() {
    let dir = TempDir::new("garbage");
    let mut rng = Rng(7);
    let f = dir.path("env.bin");
    let cfg1 =
        EnvConfig::parse_fw_env_config(&format!("{} 0 0x1000\n", f.display()), ByteOrder::Little)
            .unwrap();
    let cfg2 = EnvConfig::parse_fw_env_config(
        &format!("{} 0 0x1000\n{} 0x1000 0x1000\n", f.display(), f.display()),
        ByteOrder::Little,
    )
    .unwrap();

    // Missing file.
    match bootenv::read(&cfg1) {
        Err(EnvError::Io { path, error, .. }) => {
            assert_eq!(path, f);
            assert_eq!(error.kind(), io::ErrorKind::NotFound);
        }
        other => panic!("{other:?}"),
    }
    assert!(matches!(
        bootenv::read(&cfg2),
        Err(EnvError::NoValidCopy { .. })
    ));
    // A write never creates the file.
    assert!(matches!(
        bootenv::write(&cfg1, &env(&[("a", "1")])),
        Err(EnvError::Io { .. })
    ));
    assert!(!f.exists());

    // Empty, truncated, random.
    for len in [0, 3, 0x800, 0x1000 + 7, 0x2000, 0x3000] {
        std::fs::write(&f, rng.bytes(len)).unwrap();
        assert!(bootenv::read(&cfg1).is_err(), "{len} random bytes");
        assert!(bootenv::read(&cfg2).is_err(), "{len} random bytes");
    }
    // A file too short for the configured copy: writing is refused, the file stays as it is.
    std::fs::write(&f, vec![0xFF; 0x800]).unwrap();
    let err = bootenv::write(&cfg2, &env(&[("a", "1")])).unwrap_err();
    assert!(matches!(err, EnvError::Io { .. }), "{err}");
    assert_eq!(std::fs::metadata(&f).unwrap().len(), 0x800);
    std::fs::write(&f, vec![0xFF; 0x1800]).unwrap();
    // Copy 0 fits and gets written; copy 1 is unreadable and reported.
    let mut s = FileStorage::new();
    let bytes = encode(&env(&[("a", "1")]), 0x1000, ByteOrder::Little, Some(3)).unwrap();
    s.write_at(&cfg2.copies[0], &bytes).unwrap();
    let (e, info) = bootenv::read(&cfg2).unwrap();
    assert_eq!((e, info.current), (env(&[("a", "1")]), 0));
    assert!(matches!(info.other_invalid(), Some(EnvError::Io { .. })));
}

// ---------------------------------------------------------------------------------------------
// fw_env.config and Env

#[test]
fn config_parsing() {
    let text = "# U-Boot environment\n\n  # indented comment\n\
                /dev/mmcblk0 0x3f0000 0x10000 0x10000 1 # trailing\n\
                /dev/mmcblk0\t020000000\t10000\n";
    let cfg = EnvConfig::parse_fw_env_config(text, ByteOrder::Big).unwrap();
    assert!(cfg.is_redundant());
    assert_eq!(cfg.byte_order, ByteOrder::Big);
    assert_eq!(
        cfg.copies,
        vec![
            EnvLocation {
                path: "/dev/mmcblk0".into(),
                offset: 0x3f0000,
                size: 0x10000,
                sector_size: 0x10000,
                sectors: 1,
            },
            EnvLocation {
                path: "/dev/mmcblk0".into(),
                offset: 0o20000000,
                size: 0x10000, // SIZE is hexadecimal even without 0x, as in the tools
                ..Default::default()
            },
        ]
    );
    let one = EnvConfig::parse_fw_env_config("/e 4096 0x1000", ByteOrder::Little).unwrap();
    assert_eq!((one.copies[0].offset, one.header_len()), (4096, 4));

    let bad = [
        ("", None),
        ("# only comments\n", None),
        ("/e 0\n", Some(1)),
        ("/e zero 0x1000\n", Some(1)),
        ("/e 0 0x1000\n/e -0x1000 0x1000\n", Some(2)),
        ("/e 0 0x1000\n/e 0x1000 0x1000\n/e 0x2000 0x1000\n", Some(3)),
        ("/e 0 0x1000 sector\n", Some(1)),
        ("/e 0 0x1000 1 2 3 4\n", Some(1)),
        ("/e 0 0x1000 1 2 0x1\n", Some(1)), // DISABLE_LOCK is decimal (`%d`)
        ("/e 0 0xffffffffffffffffff\n", Some(1)),
        ("/e 0 0x4000000\n", Some(1)), // larger than MAX_ENV_SIZE
        ("/e 0 4\n", None),            // no room after the header
        ("/e 0 0x5\n/f 0 0x5\n", None),
        ("/e 0 0x1000\n/e 0 0x2000\n", None),     // sizes differ
        ("/e 0 0x1000\n/e 0x800 0x1000\n", None), // overlap
        ("/e 0xffffffffffffffff 0x1000\n", None), // offset + size overflows
    ];
    for (text, line) in bad {
        match EnvConfig::parse_fw_env_config(text, ByteOrder::Little) {
            Err(EnvError::Config { line: l, reason }) => {
                assert_eq!(l, line, "{text:?}: {reason}");
                assert!(!reason.is_empty());
            }
            other => panic!("{text:?}: {other:?}"),
        }
    }
    // Random text never panics.
    let mut rng = Rng(99);
    let chars = b"/dev 0x1fF-#\n\t9a";
    for _ in 0..2000 {
        let n = rng.below(40);
        let t: String = (0..n)
            .map(|_| chars[rng.below(chars.len())] as char)
            .collect();
        let _ = EnvConfig::parse_fw_env_config(&t, ByteOrder::Little);
    }
    assert!(matches!(
        EnvConfig::from_file("/nonexistent/fw_env.config", ByteOrder::Little),
        Err(EnvError::Io { .. })
    ));
}

/// The sector fields of MTD lines (libubootenv's SECTORSIZE and SECTORS) are kept and checked
/// against what an erase would take; on files they are kept and not checked (libubootenv
/// ignores them there, and so does the file storage).
#[test]
fn config_sector_fields_and_their_checks() {
    let text = "/dev/mtd3 0x0 0x4000 0x20000 2 1\n/dev/mtd3 0x40000 4000 20000 2\n";
    let cfg = EnvConfig::parse_fw_env_config(text, ByteOrder::Big).unwrap();
    let c = &cfg.copies;
    assert_eq!((c[0].sector_size, c[0].sectors), (0x20000, 2));
    assert_eq!(
        (c[1].offset, c[1].size, c[1].sector_size),
        (0x40000, 0x4000, 0x20000)
    );
    assert_eq!(
        c[0].sector_area(0x20000).unwrap(),
        bootenv::SectorArea {
            start: 0,
            end: 0x40000,
            sector: 0x20000
        }
    );
    // No SECTORS: as many as the copy needs (0x30000 in 0x10000 sectors: 3).
    let loc = EnvLocation {
        path: "/dev/mtd1".into(),
        size: 0x30000,
        sector_size: 0x10000,
        ..Default::default()
    };
    assert_eq!(loc.sector_area(0x10000).unwrap().end, 0x30000);
    // No SECTORSIZE: the device's erase size.
    assert_eq!(
        EnvLocation {
            sector_size: 0,
            ..loc.clone()
        }
        .sector_area(0x20000)
        .unwrap()
        .sector,
        0x20000
    );

    let refused = [
        // Two copies in one erase sector of one MTD device.
        "/dev/mtd2 0x0 0x2000 0x10000\n/dev/mtd2 0x2000 0x2000 0x10000\n",
        // Copy 0's two sectors reach into copy 1's.
        "/dev/mtd2 0x0 0x2000 0x10000 2\n/dev/mtd2 0x10000 0x2000 0x10000 1\n",
        // A copy larger than its sectors.
        "/dev/mtd2 0x0 0x20000 0x10000 1\n",
        // An offset that does not start a sector: the erase would take bytes before it.
        "/dev/mtd2 0x1000 0x2000 0x10000\n",
        // UBI volumes are read and updated from their start.
        "/dev/ubi0:env 0x1000 0x2000\n/dev/ubi0:envr 0 0x2000\n",
    ];
    for text in refused {
        match EnvConfig::parse_fw_env_config(text, ByteOrder::Little) {
            Err(EnvError::Config { reason, .. }) => assert!(!reason.is_empty()),
            other => panic!("{text:?}: {other:?}"),
        }
    }
    // The same layouts on a file are libubootenv's plain file accesses: accepted.
    let file = "/e 0x0 0x2000 0x10000\n/e 0x2000 0x2000 0x10000\n";
    assert!(EnvConfig::parse_fw_env_config(file, ByteOrder::Little).is_ok());
    let ubi = "/dev/ubi0:env 0 0x1f000 0x1f000\n/dev/ubi0:envr 0 0x1f000 0x1f000\n";
    assert!(EnvConfig::parse_fw_env_config(ubi, ByteOrder::Little).is_ok());
    assert_eq!(
        bootenv::DeviceKind::of(Path::new("/dev/mtd0:env")),
        bootenv::DeviceKind::Ubi
    );
}

#[test]
fn env_names_and_values_are_checked() {
    let mut e = Env::new();
    assert!(e.is_empty());
    assert_eq!(e.set("a", "1").unwrap(), None);
    assert_eq!(e.set("a", "2").unwrap().as_deref(), Some("1"));
    assert!(matches!(e.set("", "x"), Err(EnvError::InvalidName { .. })));
    assert!(matches!(
        e.set("a=b", "x"),
        Err(EnvError::InvalidName { .. })
    ));
    assert!(matches!(
        e.set("a\0", "x"),
        Err(EnvError::InvalidName { .. })
    ));
    assert!(matches!(
        e.set("b", "x\0y"),
        Err(EnvError::InvalidValue { .. })
    ));
    e.set("empty", "").unwrap();
    e.set("0first", "z").unwrap();
    let names: Vec<&str> = e.iter().map(|(k, _)| k).collect();
    assert_eq!(names, ["0first", "a", "empty"]);
    let bytes = encode(&e, 64, ByteOrder::Little, None).unwrap();
    assert_eq!(&bytes[4..26], b"0first=z\0a=2\0empty=\0\0\xff");
    assert_eq!(decode(&bytes, ByteOrder::Little, false).unwrap().0, e);
    assert_eq!(e.remove("a").as_deref(), Some("2"));
    assert_eq!(e.get("a"), None);
    assert_eq!(e.len(), 2);
}

#[test]
fn wrong_byte_order_is_diagnosed_and_never_overwritten() {
    let e = env(&[("boot_slot", "a")]);
    for redundant in [false, true] {
        let (mut s, cfg) = if redundant {
            mem_redundant()
        } else {
            mem_single()
        };
        write_with(&mut s, &cfg, &e).unwrap(); // big-endian
        let mut le = cfg.clone();
        le.byte_order = ByteOrder::Little;
        let err = read_with(&mut s, &le).unwrap_err();
        let wrong = |e: &EnvError| {
            matches!(
                e,
                EnvError::WrongByteOrder {
                    configured: ByteOrder::Little
                }
            )
        };
        match &err {
            EnvError::NoValidCopy { copy0, .. } => assert!(wrong(copy0)),
            other => assert!(wrong(other), "{other}"),
        }
        let writes = s.writes;
        let err = write_with(&mut s, &le, &env(&[("boot_slot", "b")])).unwrap_err();
        assert!(wrong(&err), "{err}");
        assert_eq!(s.writes, writes, "nothing written");
        assert_eq!(read_with(&mut s, &cfg).unwrap().0, e);
    }
}

// ---------------------------------------------------------------------------------------------
// 7. On flash: a simulation (SimFlash files standing in for MTD devices), through the same
//    DeviceStorage code as the board's /dev/mtdN. fw_printenv and fw_setenv read the same
//    files as plain files (libubootenv treats a regular file as a file, whatever the sector
//    fields say): the layout is checked against them, flash semantics against the simulation.

/// A simulated MTD device holding both copies, and its fw_env.config.
struct FlashLab {
    dir: TempDir,
    dev: PathBuf,
    info: FlashInfo,
    bad: Vec<u64>,
    cfg_path: PathBuf,
    cfg: EnvConfig,
}

impl FlashLab {
    fn new(name: &str, info: FlashInfo, bad: &[u64], lines: &str, order: ByteOrder) -> Self {
        let dir = TempDir::new(name);
        let dev = dir.path("mtd.bin");
        SimFlash::create(&dev, info).unwrap();
        let cfg_path = dir.path("fw_env.config");
        std::fs::write(&cfg_path, lines.replace("DEV", dev.to_str().unwrap())).unwrap();
        let cfg = EnvConfig::from_file(&cfg_path, order).unwrap();
        FlashLab {
            dir,
            dev,
            info,
            bad: bad.to_vec(),
            cfg_path,
            cfg,
        }
    }

    /// NOR, 64 KiB erase blocks: two 8 KiB copies, one sector each.
    fn nor(name: &str, order: ByteOrder) -> Self {
        let lines = "DEV 0x0 0x2000 0x10000 1\nDEV 0x10000 0x2000 0x10000 1\n";
        FlashLab::new(name, SimFlash::nor(0x40000, 0x10000), &[], lines, order)
    }

    /// NAND, 512-byte pages, 32 KiB erase blocks: two copies of 0x2100 bytes (not a whole
    /// number of pages), each with two sectors, so one bad block per copy is survivable.
    fn nand(name: &str, bad: &[u64]) -> Self {
        let lines = "DEV 0x0 0x2100 0x8000 2\nDEV 0x10000 0x2100 0x8000 2\n";
        let order = ByteOrder::native();
        FlashLab::new(name, SimFlash::nand(0x40000, 512), bad, lines, order)
    }

    /// The storage after a (re)boot: the device file reopened, no cut armed.
    fn storage(&self) -> DeviceStorage<SimOpener> {
        let flash = SimFlash::open(&self.dev, self.info, &self.bad).unwrap();
        DeviceStorage::with_opener(SimOpener::new().with(&self.dev, flash))
    }

    fn write(&self, e: &Env) -> bootenv::WriteInfo {
        write_with(&mut self.storage(), &self.cfg, e).unwrap()
    }

    fn read(&self) -> (Env, bootenv::ReadInfo) {
        read_with(&mut self.storage(), &self.cfg).unwrap()
    }

    fn raw(&self, offset: u64, len: usize) -> Vec<u8> {
        let all = std::fs::read(&self.dev).unwrap();
        all[offset as usize..offset as usize + len].to_vec()
    }
}

#[test]
fn flag_scheme_rules() {
    let b = FlagScheme::Boolean;
    for (f0, f1, cur) in [
        (1, 0, 0),
        (0, 1, 1),
        (1, 1, 0),       // a tie: copy 0
        (0, 0, 0),       // a tie: copy 0
        (0xFF, 1, 0),    // erased (never obsoleted) wins
        (1, 0xFF, 1),    // erased (never obsoleted) wins
        (0xFF, 0xFF, 1), // copy 1's 0xFF is checked first
        (0x7F, 1, 0),    // a half-programmed flag: the higher, as libubootenv compares
        (1, 0x7F, 1),
    ] {
        assert_eq!(b.current(f0, f1), cur, "boolean {f0:#x} {f1:#x}");
    }
    assert_eq!((b.next(0), b.next(1), b.next(0xFF)), (1, 1, 1));
    let i = FlagScheme::Incremental;
    assert_eq!((i.current(0xFF, 0), i.next(0xFF), i.next(4)), (1, 0, 5));
}

/// NOR: libubootenv's boolean flags. A write erases the non-current copy's sector (the whole
/// sector: what else it held is gone, as with fw_setenv), programs the copy with flag 1, then
/// programs the old copy's flag to 0 in place. The old copy keeps a valid CRC: a fallback.
#[test]
fn sim_nor_flash_writes_with_boolean_flags() {
    let lab = FlashLab::nor("nor-flags", ByteOrder::native());
    {
        // Something in copy 0's sector after the copy: the erase takes it.
        let mut st = lab.storage();
        let f = st.opener().device(&lab.dev).unwrap();
        f.write_at(0x8000, &[0u8; 16]).unwrap();
    }
    assert!(matches!(
        lab.storage().medium(&lab.cfg.copies[0]).unwrap().scheme,
        FlagScheme::Boolean
    ));
    let envs: Vec<Env> = ["a", "b", "a"]
        .iter()
        .map(|s| env(&[("boot_slot", s), ("bootcmd", "run ab")]))
        .collect();
    let w = lab.write(&envs[0]);
    assert_eq!((w.copy, w.flag, w.fallback), (0, Some(1), None));
    assert_eq!(lab.raw(4, 1), [1]);
    assert!(lab.raw(0x2000, 0xE000).iter().all(|&b| b == 0xFF));
    let w = lab.write(&envs[1]);
    assert_eq!((w.copy, w.flag, w.fallback), (1, Some(1), Some(0)));
    assert_eq!((lab.raw(4, 1), lab.raw(0x10004, 1)), (vec![0], vec![1]));
    let (e, info) = lab.read();
    assert_eq!((e, info.current, info.flag), (envs[1].clone(), 1, Some(1)));
    assert!(matches!(info.other, Some(OtherCopy::Valid { flag: 0 })));
    let w = lab.write(&envs[2]);
    assert_eq!((w.copy, w.flag, w.fallback), (0, Some(1), Some(1)));
    assert_eq!((lab.raw(4, 1), lab.raw(0x10004, 1)), (vec![1], vec![0]));
    assert_eq!(lab.read().0, envs[2]);
    // One erase and one obsolete flag per write (after the first).
    let mut st = lab.storage();
    st.opener()
        .device(&lab.dev)
        .unwrap()
        .cut(Cut::After(u64::MAX));
    write_with(&mut st, &lab.cfg, &envs[0]).unwrap();
    let sim = st.opener().device(&lab.dev).unwrap();
    assert_eq!((sim.stats().erases, sim.stats().page_writes), (1, 2 + 1));
}

/// NAND: libubootenv's counter flags, bad sectors skipped whole (the copy goes on in the next
/// sector of its area), page-size writes padded with 0xFF; a copy whose sectors are all bad is
/// refused without touching the other copy.
#[test]
fn sim_nand_flash_writes_with_counter_flags_and_skips_bad_blocks() {
    // Erase blocks of 0x8000: copy 0's area is blocks 0-1, copy 1's blocks 2-3; block 0 bad.
    let lab = FlashLab::nand("nand-bad", &[0]);
    assert!(matches!(
        lab.storage().medium(&lab.cfg.copies[0]).unwrap().scheme,
        FlagScheme::Incremental
    ));
    let envs: Vec<Env> = (0..3)
        .map(|i| env(&[("n", &i.to_string()), ("big", &"x".repeat(3000 + i * 1000))]))
        .collect();
    let mut st = lab.storage();
    st.opener()
        .device(&lab.dev)
        .unwrap()
        .cut(Cut::After(u64::MAX));
    let w = write_with(&mut st, &lab.cfg, &envs[0]).unwrap();
    assert_eq!((w.copy, w.flag), (0, Some(1)));
    let sim = st.opener().device(&lab.dev).unwrap();
    // 0x2100 bytes: 17 pages of 512, the last one padded.
    assert_eq!((sim.stats().erases, sim.stats().page_writes), (1, 17));
    drop(st);
    // Copy 0 went to block 1, not the bad block 0.
    let at = 0x8000;
    assert_eq!(lab.raw(at + 4, 1), [1]);
    assert_eq!(
        decode(&lab.raw(at, 0x2100), ByteOrder::native(), true).unwrap(),
        (envs[0].clone(), Some(1))
    );
    assert!(lab.raw(at + 0x2100, 0x100).iter().all(|&b| b == 0xFF));
    let w = lab.write(&envs[1]);
    assert_eq!((w.copy, w.flag, w.fallback), (1, Some(2), Some(0)));
    assert_eq!(lab.raw(0x10004, 1), [2]);
    let w = lab.write(&envs[2]);
    assert_eq!((w.copy, w.flag), (0, Some(3)));
    let (e, info) = lab.read();
    assert_eq!((e, info.current, info.flag), (envs[2].clone(), 0, Some(3)));
    // NAND has no obsolete flag: pages are programmed once per erase.
    assert!(lab.storage().mark_obsolete(&lab.cfg.copies[1]).is_err());

    // Both of copy 0's blocks bad: copy 0 cannot be read or written; copy 1 is untouched.
    let mut lab2 = FlashLab::nand("nand-dead", &[]);
    lab2.write(&envs[0]); // copy 0
    lab2.write(&envs[1]); // copy 1, current
    lab2.bad = vec![0, 1];
    let before = std::fs::read(&lab2.dev).unwrap();
    let (e, info) = lab2.read();
    assert_eq!((e, info.current), (envs[1].clone(), 1));
    assert!(matches!(info.other_invalid(), Some(EnvError::Io { .. })));
    match write_with(&mut lab2.storage(), &lab2.cfg, &envs[2]) {
        Err(EnvError::Io { error, .. }) => {
            assert!(error.to_string().contains("bad sectors"), "{error}")
        }
        other => panic!("{other:?}"),
    }
    assert_eq!(std::fs::read(&lab2.dev).unwrap(), before);
}

/// A power cut after and during every erase and every page (or NOR buffer) write of an
/// environment write, for a sequence of writes that alternates the copies: every cut reads
/// back the old or the new environment, and the next write after the reboot works.
fn power_cut_everywhere(lab: &FlashLab) -> (usize, usize) {
    let seq: Vec<Env> = (0..4)
        .map(|i| {
            let slot = if i % 2 == 0 { "a" } else { "b" };
            let pad = "p".repeat(500 + 1700 * i);
            env(&[("boot_slot", slot), ("n", &i.to_string()), ("pad", &pad)])
        })
        .collect();
    lab.write(&seq[0]);
    let (mut old, mut new) = (0, 0);
    for k in 1..seq.len() {
        let before = std::fs::read(&lab.dev).unwrap();
        let ops = {
            let mut st = lab.storage();
            st.opener()
                .device(&lab.dev)
                .unwrap()
                .cut(Cut::After(u64::MAX));
            write_with(&mut st, &lab.cfg, &seq[k]).unwrap();
            st.opener().device(&lab.dev).unwrap().ops()
        };
        assert!(ops >= 2, "{ops} operations");
        let cuts = (0..ops).map(Cut::After).chain((1..=ops).map(Cut::During));
        for cut in cuts {
            std::fs::write(&lab.dev, &before).unwrap();
            let mut st = lab.storage();
            st.opener().device(&lab.dev).unwrap().cut(cut);
            assert!(
                write_with(&mut st, &lab.cfg, &seq[k]).is_err(),
                "{cut:?}: the write completed"
            );
            drop(st);
            let (got, _) = read_with(&mut lab.storage(), &lab.cfg)
                .unwrap_or_else(|e| panic!("write {k}, {cut:?}: no environment: {e}"));
            if got == seq[k - 1] {
                old += 1;
            } else if got == seq[k] {
                new += 1;
            } else {
                panic!("write {k}, {cut:?}: neither the old nor the new environment");
            }
            // The next boot writes again, and that write lands.
            lab.write(&seq[k]);
            assert_eq!(lab.read().0, seq[k], "write {k} after {cut:?}");
        }
        std::fs::write(&lab.dev, &before).unwrap();
        lab.write(&seq[k]);
    }
    (old, new)
}

#[test]
fn sim_nor_flash_power_cut_at_every_erase_and_write() {
    let lab = FlashLab::nor("nor-cuts", ByteOrder::Big);
    let (old, new) = power_cut_everywhere(&lab);
    // A cut after the new copy is complete but before the old one is obsoleted reads the new
    // environment when the new copy is copy 0 (a tie goes to copy 0), the old one otherwise.
    assert!(old > 0 && new > 0, "old {old}, new {new}");
}

#[test]
fn sim_nand_flash_power_cut_at_every_erase_and_page_write() {
    // A bad block in copy 1's area: the cuts also land in a copy that skips one.
    let lab = FlashLab::nand("nand-cuts", &[2]);
    let (old, new) = power_cut_everywhere(&lab);
    // The trailing pages are 0xFF padding: once the variables are programmed the copy is
    // whole, so a cut before the last padding page already reads the new environment.
    assert!(old > 0 && new > 0, "old {old}, new {new}");
}

/// Copies that one erase would both hit, or copies on different kinds of media, are refused
/// before anything is erased (here the erase size comes from the device, not the config).
#[test]
fn sim_flash_refuses_copies_sharing_an_erase_block() {
    let lab = FlashLab::new(
        "nor-shared",
        SimFlash::nor(0x40000, 0x10000),
        &[],
        // No SECTORSIZE: the device's 64 KiB; copy 0 may take two, the second is copy 1's.
        "DEV 0x0 0x2000 0 2\nDEV 0x10000 0x2000\n",
        ByteOrder::native(),
    );
    let before = std::fs::read(&lab.dev).unwrap();
    for r in [
        write_with(&mut lab.storage(), &lab.cfg, &env(&[("a", "1")])).map(drop),
        read_with(&mut lab.storage(), &lab.cfg).map(drop),
    ] {
        match r {
            Err(EnvError::Config { reason, .. }) => assert!(reason.contains("share"), "{reason}"),
            other => panic!("{other:?}"),
        }
    }
    assert_eq!(std::fs::read(&lab.dev).unwrap(), before);
    // A copy that does not start an erase block: its erase would take the bytes before it.
    let text = format!("{0} 0 0x2000\n{0} 0x2000 0x2000\n", lab.dev.display());
    let cfg = EnvConfig::parse_fw_env_config(&text, ByteOrder::native()).unwrap();
    match write_with(&mut lab.storage(), &cfg, &env(&[("a", "1")])) {
        Err(EnvError::Io { error, .. }) => {
            assert!(error.to_string().contains("erase block"), "{error}")
        }
        other => panic!("{other:?}"),
    }
    assert_eq!(std::fs::read(&lab.dev).unwrap(), before);

    let file = lab.dir.path("plain.bin");
    erased_file(&file, 0x2000);
    let text = format!(
        "{} 0 0x2000 0x10000\n{} 0 0x2000\n",
        lab.dev.display(),
        file.display()
    );
    let cfg = EnvConfig::parse_fw_env_config(&text, ByteOrder::native()).unwrap();
    match write_with(&mut lab.storage(), &cfg, &env(&[("a", "1")])) {
        Err(EnvError::Config { reason, .. }) => assert!(reason.contains("same kind"), "{reason}"),
        other => panic!("{other:?}"),
    }
}

/// The flash layouts against libubootenv: what we write on the simulated NOR (boolean flags)
/// and NAND (counter flags, a page-padded copy) is what `fw_printenv` reads from the same
/// file with the same config lines, sector fields included; what `fw_setenv` writes there we
/// read, and the two interleave. Big-endian (a MIPS board's NOR): our first write equals
/// `mkenvimage -b -r`, and we read a `mkenvimage -b -r` image. (Real MTD and UBI devices do
/// not exist on this host: the QEMU Malta guest checks those.)
#[test]
fn sim_flash_layouts_interoperate_with_fw_printenv_and_fw_setenv() {
    for lab in [
        FlashLab::nor("nor-interop", ByteOrder::native()),
        FlashLab::nand("nand-interop", &[]),
    ] {
        let mut e = env(&[("boot_slot", "a"), ("bootcmd", "run ab")]);
        for i in 0..3 {
            e.set("round", i.to_string()).unwrap();
            lab.write(&e);
            assert_eq!(fw_printenv(&lab.cfg_path), map(&e), "round {i}");
        }
        for i in 0..3 {
            let v = format!("fw{i}");
            fw_setenv(&lab.dir, &lab.cfg_path, "boot_slot", Some(&v));
            e.set("boot_slot", v).unwrap();
            assert_eq!(lab.read().0, e, "after fw_setenv {i}");
            e.set("ours", i.to_string()).unwrap();
            lab.write(&e);
            assert_eq!(fw_printenv(&lab.cfg_path), map(&e), "after our write {i}");
        }
    }

    let lab = FlashLab::nor("nor-be", ByteOrder::Big);
    let e = env(&[("boot_slot", "b"), ("bootcmd", "run ab")]);
    let image = mkenvimage(&lab.dir, &e, 0x2000, &["-b", "-r"]);
    lab.write(&e);
    assert_eq!(lab.raw(0, 0x2000), image);
    let lab = FlashLab::nor("nor-be-read", ByteOrder::Big);
    {
        let mut st = lab.storage();
        let f = st.opener().device(&lab.dev).unwrap();
        f.write_at(0x10000, &image).unwrap();
    }
    let (got, info) = lab.read();
    assert_eq!((got, info.current, info.flag), (e.clone(), 1, Some(1)));
    let e2 = env(&[("boot_slot", "a")]);
    let w = lab.write(&e2);
    assert_eq!((w.copy, w.fallback), (0, Some(1)));
    assert_eq!(
        lab.raw(0x10004, 1),
        [0],
        "the mkenvimage copy is now obsolete"
    );
    assert_eq!(lab.read().0, e2);
}
