//! The U-Boot environment, read and written as libubootenv's `fw_printenv`/`fw_setenv` and
//! U-Boot itself do (format and rules: `docs/bootenv.md`).
//!
//! A copy is `[u32 CRC][data]`, or `[u32 CRC][u8 flag][data]` when the environment is
//! redundant (two copies). The CRC is zlib's CRC-32 of the whole data area (padding included,
//! flag excluded), in the CPU's byte order. The data is `name=value\0...\0`, padded with 0xFF.
//!
//! - Reading ([`read`]): the copy whose CRC is valid; of two valid copies, the one the flags
//!   name ([`FlagScheme`]: a counter on files, block devices, NAND and UBI; active/obsolete on
//!   NOR, as libubootenv does).
//! - Writing ([`write()`]): the *other* copy, the non-current one (on flash: its sectors erased
//!   and programmed; on UBI: one volume update), then, on NOR, the old copy's flag programmed to
//!   0. A write cut by a power loss leaves the new copy invalid or the old one still current, so
//!   the next read returns the old or the new environment. With one copy, a torn write leaves no
//!   valid environment at all ([`EnvError::BadCrc`]): boards should use two.
//!
//! [`encode`] and [`decode`] are the pure halves; [`read_with`] and [`write_with`] run over any
//! [`EnvStorage`]: [`DeviceStorage`] on the board, over simulated flash ([`SimOpener`]) or in
//! memory in the tests, which cut power after or during any write.
//!
//! Not supported: MEMLOCK/MEMUNLOCK, UBI volumes named by their MTD device, negative offsets in
//! `fw_env.config`, and libubootenv's YAML config.

mod codec;
mod config;
mod crc;
mod flash;
mod storage;

use std::fmt;
use std::path::PathBuf;

pub use codec::{decode, encode, Env, PAD_BYTE};
pub use config::{DeviceKind, EnvConfig, EnvLocation, SectorArea, MAX_ENV_SIZE};
pub use crc::{crc32, crc32_update};
pub use storage::{
    DeviceStorage, EnvStorage, FileStorage, FlagScheme, FlashOpener, Medium, MtdOpener, SimOpener,
};

/// The byte order of the CRC: the CPU's that runs U-Boot (big-endian on MIPS boards, little on
/// ARM and x86).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ByteOrder {
    Little,
    Big,
}

impl ByteOrder {
    /// The byte order of the CPU this runs on (the right one when the agent runs on the board).
    pub fn native() -> Self {
        if cfg!(target_endian = "big") {
            ByteOrder::Big
        } else {
            ByteOrder::Little
        }
    }

    pub fn u32_to_bytes(self, v: u32) -> [u8; 4] {
        match self {
            ByteOrder::Little => v.to_le_bytes(),
            ByteOrder::Big => v.to_be_bytes(),
        }
    }

    pub fn u32_from_bytes(self, b: [u8; 4]) -> u32 {
        match self {
            ByteOrder::Little => u32::from_le_bytes(b),
            ByteOrder::Big => u32::from_be_bytes(b),
        }
    }
}

/// Why the environment could not be read, written or parsed.
#[derive(Debug)]
pub enum EnvError {
    /// A bad `fw_env.config` line (`line` is 1-based) or an inconsistent [`EnvConfig`].
    Config { line: Option<usize>, reason: String },
    /// Reading or writing `path` failed (`op` says which).
    Io {
        path: PathBuf,
        op: &'static str,
        error: std::io::Error,
    },
    /// The storage returned a copy of the wrong length.
    WrongLength {
        path: PathBuf,
        expected: usize,
        got: usize,
    },
    /// Fewer bytes than a header and one data byte.
    TooShort { len: usize, needed: usize },
    /// The stored CRC is not the data's: an erased, torn or corrupted copy.
    BadCrc { stored: u32, computed: u32 },
    /// The CRC is right but stored in the other byte order: the config's byte order is wrong
    /// (a big-endian board's environment read as little-endian, or the reverse).
    WrongByteOrder { configured: ByteOrder },
    /// The CRC is right but an entry is not `name=value\0` (`offset` is in the copy).
    Malformed { offset: usize, reason: &'static str },
    /// Neither copy of a redundant environment is valid; why, for each.
    NoValidCopy {
        copy0: Box<EnvError>,
        copy1: Box<EnvError>,
    },
    /// The variables need `needed` bytes, the data area has `available`.
    TooLarge { needed: usize, available: usize },
    /// A variable name that cannot be stored.
    InvalidName { name: String, reason: &'static str },
    /// A value with a NUL byte.
    InvalidValue { name: String },
    /// The copy just written does not read back as written.
    VerifyFailed { copy: usize, reason: String },
}

impl fmt::Display for EnvError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            EnvError::Config {
                line: Some(l),
                reason,
            } => write!(f, "environment config line {l}: {reason}"),
            EnvError::Config { line: None, reason } => write!(f, "environment config: {reason}"),
            EnvError::Io { path, op, error } => write!(f, "{op} {}: {error}", path.display()),
            EnvError::WrongLength {
                path,
                expected,
                got,
            } => write!(
                f,
                "{}: read {got} bytes of an environment copy of {expected}",
                path.display()
            ),
            EnvError::TooShort { len, needed } => write!(
                f,
                "environment copy of {len} bytes, at least {needed} needed"
            ),
            EnvError::BadCrc { stored, computed } => write!(
                f,
                "environment CRC invalid (stored {stored:#010x}, computed {computed:#010x})"
            ),
            EnvError::WrongByteOrder { configured } => write!(
                f,
                "environment CRC is valid only in the other byte order ({configured:?} configured)"
            ),
            EnvError::Malformed { offset, reason } => {
                write!(f, "environment malformed at byte {offset}: {reason}")
            }
            EnvError::NoValidCopy { copy0, copy1 } => write!(
                f,
                "no valid environment copy (copy 0: {copy0}; copy 1: {copy1})"
            ),
            EnvError::TooLarge { needed, available } => write!(
                f,
                "environment needs {needed} bytes, the copy has room for {available}"
            ),
            EnvError::InvalidName { name, reason } => {
                write!(f, "invalid variable name {name:?}: {reason}")
            }
            EnvError::InvalidValue { name } => {
                write!(f, "value of variable {name:?} contains a NUL byte")
            }
            EnvError::VerifyFailed { copy, reason } => {
                write!(f, "environment copy {copy} does not read back: {reason}")
            }
        }
    }
}

impl std::error::Error for EnvError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            EnvError::Io { error, .. } => Some(error),
            _ => None,
        }
    }
}

/// The state of the copy that was not used.
#[derive(Debug)]
pub enum OtherCopy {
    /// Valid but older (or equal-flagged and second).
    Valid { flag: u8 },
    /// Why it is not valid (erased, torn, corrupted, unreadable).
    Invalid(EnvError),
}

/// What [`read`] found.
#[derive(Debug)]
pub struct ReadInfo {
    /// The index in [`EnvConfig::copies`] of the copy read.
    pub current: usize,
    /// Its flag (`None` for a single copy).
    pub flag: Option<u8>,
    /// The other copy (`None` for a single copy).
    pub other: Option<OtherCopy>,
}

impl ReadInfo {
    /// Why the other copy is invalid, if it is (for a log line such as "copy 1 CRC invalid,
    /// using copy 0").
    pub fn other_invalid(&self) -> Option<&EnvError> {
        match &self.other {
            Some(OtherCopy::Invalid(e)) => Some(e),
            _ => None,
        }
    }
}

/// What [`write()`] did.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct WriteInfo {
    /// The index of the copy written (now the current one).
    pub copy: usize,
    /// The flag written (`None` for a single copy).
    pub flag: Option<u8>,
    /// The copy left untouched holding the previous valid environment, if there was one (a
    /// single copy has none).
    pub fallback: Option<usize>,
    /// Bytes the variables take, and the data area's size.
    pub used: usize,
    pub available: usize,
}

/// Of two valid copies with flags `flag0` and `flag1`, the index of the current one: the higher
/// flag, except that 0 beats 255 (the counter wrapped); copy 0 when the flags are equal.
pub fn current_copy(flag0: u8, flag1: u8) -> usize {
    match (flag0, flag1) {
        (0xFF, 0) => 1,
        (0, 0xFF) => 0,
        (a, b) if b > a => 1,
        _ => 0,
    }
}

/// Reads the environment from files, block devices, MTD devices or UBI volumes (see
/// [`read_with`] and [`DeviceStorage`]).
pub fn read(cfg: &EnvConfig) -> Result<(Env, ReadInfo), EnvError> {
    read_with(&mut DeviceStorage::new(), cfg)
}

/// Writes `env` to files, block devices, MTD devices or UBI volumes (see [`write_with`] and
/// [`DeviceStorage`]).
///
/// A single-copy write is not power-safe: a cut mid-write leaves no valid environment.
pub fn write(cfg: &EnvConfig, env: &Env) -> Result<WriteInfo, EnvError> {
    write_with(&mut DeviceStorage::new(), cfg, env)
}

/// The flag scheme of a redundant environment's copies, with the checks that need the storage:
/// both copies on the same kind of medium (libubootenv's `check_compatible_devices`), and on
/// one device, neither copy's sectors overlapping the other copy (erasing one would erase the
/// other).
fn flag_scheme<S: EnvStorage + ?Sized>(
    storage: &mut S,
    cfg: &EnvConfig,
) -> Result<FlagScheme, EnvError> {
    let mut media = Vec::new();
    for loc in &cfg.copies {
        let m = storage.medium(loc).map_err(|error| EnvError::Io {
            path: loc.path.clone(),
            op: "open environment device",
            error,
        })?;
        media.push(m);
    }
    let bad = |reason: String| Err(EnvError::Config { line: None, reason });
    if let ([a, b], [ma, mb]) = (&cfg.copies[..], &media[..]) {
        if ma.scheme != mb.scheme {
            return bad(format!(
                "copy 0 ({}) uses {:?} flags and copy 1 ({}) {:?}: both copies must be on the \
                 same kind of device",
                a.path.display(),
                ma.scheme,
                b.path.display(),
                mb.scheme
            ));
        }
        let span = |l: &EnvLocation, m: &Medium| {
            m.erases
                .clone()
                .unwrap_or(l.offset..l.offset + l.size as u64)
        };
        let (x, y) = (span(a, ma), span(b, mb));
        if a.path == b.path && x.start < y.end && y.start < x.end {
            return bad(format!(
                "the two copies share erase sectors of {} ({:#x}..{:#x} and {:#x}..{:#x}): \
                 writing one would erase the other",
                a.path.display(),
                x.start,
                x.end,
                y.start,
                y.end
            ));
        }
    }
    Ok(media[0].scheme)
}

/// Reads the current copy through `storage`. With one copy, its error is returned as is
/// (e.g. [`EnvError::BadCrc`]); with two, an invalid or unreadable copy is reported in
/// [`ReadInfo::other`] and the other one used, and [`EnvError::NoValidCopy`] says why both
/// failed.
pub fn read_with<S: EnvStorage + ?Sized>(
    storage: &mut S,
    cfg: &EnvConfig,
) -> Result<(Env, ReadInfo), EnvError> {
    cfg.validate()?;
    if !cfg.is_redundant() {
        let (env, _) = load_copy(storage, cfg, 0)?;
        let info = ReadInfo {
            current: 0,
            flag: None,
            other: None,
        };
        return Ok((env, info));
    }
    let scheme = flag_scheme(storage, cfg)?;
    let c0 = load_copy(storage, cfg, 0);
    let c1 = load_copy(storage, cfg, 1);
    let (current, (env, flag), other) = match (c0, c1) {
        (Ok(a), Ok(b)) => {
            let (fa, fb) = (a.1.unwrap_or(0), b.1.unwrap_or(0));
            if scheme.current(fa, fb) == 0 {
                (0, a, OtherCopy::Valid { flag: fb })
            } else {
                (1, b, OtherCopy::Valid { flag: fa })
            }
        }
        (Ok(a), Err(e)) => (0, a, OtherCopy::Invalid(e)),
        (Err(e), Ok(b)) => (1, b, OtherCopy::Invalid(e)),
        (Err(e0), Err(e1)) => {
            return Err(EnvError::NoValidCopy {
                copy0: Box::new(e0),
                copy1: Box::new(e1),
            })
        }
    };
    let info = ReadInfo {
        current,
        flag,
        other: Some(other),
    };
    Ok((env, info))
}

/// Writes `env` through `storage`, then reads the written copy back to check it.
///
/// Redundant: writes the non-current copy with the current flag + 1 (wrapping), leaving the
/// current copy as the fallback; if only one copy is valid, the invalid one is written; if
/// neither is, copy 0 with flag 1 (as `mkenvimage -r` makes it). Single copy: rewrites it in
/// place, which a power cut can leave torn.
///
/// Refuses, before touching storage, an environment that does not fit
/// ([`EnvError::TooLarge`]), and a config whose byte order makes a valid copy look invalid
/// ([`EnvError::WrongByteOrder`]): writing then would replace a good environment.
pub fn write_with<S: EnvStorage + ?Sized>(
    storage: &mut S,
    cfg: &EnvConfig,
    env: &Env,
) -> Result<WriteInfo, EnvError> {
    cfg.validate()?;
    let available = cfg.copies[0].size - cfg.header_len();
    let used = env.serialized_len();
    if used > available {
        return Err(EnvError::TooLarge {
            needed: used,
            available,
        });
    }
    let scheme = if cfg.is_redundant() {
        flag_scheme(storage, cfg)?
    } else {
        FlagScheme::Incremental
    };
    let (copy, flag, fallback) = if cfg.is_redundant() {
        let (c0, c1) = (load_copy(storage, cfg, 0), load_copy(storage, cfg, 1));
        for c in [&c0, &c1] {
            if let Err(EnvError::WrongByteOrder { configured }) = c {
                // The config is wrong: writing would replace a good environment.
                return Err(EnvError::WrongByteOrder {
                    configured: *configured,
                });
            }
        }
        let f0 = c0.ok().map(|c| c.1.unwrap_or(0));
        let f1 = c1.ok().map(|c| c.1.unwrap_or(0));
        match (f0, f1) {
            (Some(a), Some(b)) => {
                let cur = scheme.current(a, b);
                let f = if cur == 0 { a } else { b };
                (1 - cur, Some(scheme.next(f)), Some(cur))
            }
            (Some(a), None) => (1, Some(scheme.next(a)), Some(0)),
            (None, Some(b)) => (0, Some(scheme.next(b)), Some(1)),
            (None, None) => (0, Some(1), None),
        }
    } else {
        if let Err(EnvError::WrongByteOrder { configured }) = load_copy(storage, cfg, 0) {
            return Err(EnvError::WrongByteOrder { configured });
        }
        (0, None, None)
    };
    let loc = &cfg.copies[copy];
    let bytes = encode(env, loc.size, cfg.byte_order, flag)?;
    storage
        .write_at(loc, &bytes)
        .map_err(|error| EnvError::Io {
            path: loc.path.clone(),
            op: "write environment copy",
            error,
        })?;
    match load_copy(storage, cfg, copy) {
        Ok((back, back_flag)) if back == *env && back_flag == flag => {}
        Ok(_) => {
            return Err(EnvError::VerifyFailed {
                copy,
                reason: "different variables or flag".into(),
            })
        }
        Err(e) => {
            return Err(EnvError::VerifyFailed {
                copy,
                reason: e.to_string(),
            })
        }
    }
    if let (FlagScheme::Boolean, Some(old)) = (scheme, fallback) {
        // The commit point: until the old copy's flag reads 0, it still wins or ties (see
        // docs/bootenv.md), so the old environment is current; from then on, the new one.
        let old_loc = &cfg.copies[old];
        storage
            .mark_obsolete(old_loc)
            .map_err(|error| EnvError::Io {
                path: old_loc.path.clone(),
                op: "mark the old environment copy obsolete",
                error,
            })?;
        match read_with(storage, cfg) {
            Ok((back, info)) if info.current == copy && back == *env => {}
            Ok((_, info)) => {
                return Err(EnvError::VerifyFailed {
                    copy,
                    reason: format!(
                        "copy {} is still current after the old copy was marked obsolete",
                        info.current
                    ),
                })
            }
            Err(e) => {
                return Err(EnvError::VerifyFailed {
                    copy,
                    reason: e.to_string(),
                })
            }
        }
    }
    Ok(WriteInfo {
        copy,
        flag,
        fallback,
        used,
        available,
    })
}

/// Reads and decodes copy `index`.
fn load_copy<S: EnvStorage + ?Sized>(
    storage: &mut S,
    cfg: &EnvConfig,
    index: usize,
) -> Result<(Env, Option<u8>), EnvError> {
    let loc = &cfg.copies[index];
    let bytes = storage.read_at(loc).map_err(|error| EnvError::Io {
        path: loc.path.clone(),
        op: "read environment copy",
        error,
    })?;
    if bytes.len() != loc.size {
        return Err(EnvError::WrongLength {
            path: loc.path.clone(),
            expected: loc.size,
            got: bytes.len(),
        });
    }
    decode(&bytes, cfg.byte_order, cfg.is_redundant())
}
