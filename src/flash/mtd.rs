//! Real MTD character devices (`/dev/mtdN`) through the ioctls of <mtd/mtd-abi.h>, and the
//! lookup of a partition by name in `/proc/mtd`.
//!
//! The ioctl numbers come from `nix`'s macros, which know each architecture's encoding (MIPS
//! puts the direction bits elsewhere than ARM and x86); the structs are `#[repr(C)]` copies of
//! the kernel's, checked against the installed header by a test.

use std::fs::{File, OpenOptions};
use std::io;
use std::os::fd::AsRawFd;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

use super::{check_range, Flash, FlashInfo, FlashType};

/// `struct mtd_info_user`.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
pub struct MtdInfoUser {
    pub type_: u8,
    pub flags: u32,
    pub size: u32,
    pub erasesize: u32,
    pub writesize: u32,
    pub oobsize: u32,
    pub padding: u64,
}

/// `struct erase_info_user`.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
pub struct EraseInfoUser {
    pub start: u32,
    pub length: u32,
}

/// `struct erase_info_user64`.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
pub struct EraseInfoUser64 {
    pub start: u64,
    pub length: u64,
}

pub(crate) mod ioctl {
    use super::{EraseInfoUser, EraseInfoUser64, MtdInfoUser};
    nix::ioctl_read!(memgetinfo, b'M', 1, MtdInfoUser);
    nix::ioctl_write_ptr!(memerase, b'M', 2, EraseInfoUser);
    nix::ioctl_write_ptr!(memgetbadblock, b'M', 11, i64);
    nix::ioctl_write_ptr!(memerase64, b'M', 20, EraseInfoUser64);
}

/// The request codes, for the test against the C header.
pub mod request {
    use super::{EraseInfoUser, EraseInfoUser64, MtdInfoUser};
    use std::mem::size_of;
    pub const MEMGETINFO: u64 = nix::request_code_read!(b'M', 1, size_of::<MtdInfoUser>()) as u64;
    pub const MEMERASE: u64 = nix::request_code_write!(b'M', 2, size_of::<EraseInfoUser>()) as u64;
    pub const MEMGETBADBLOCK: u64 = nix::request_code_write!(b'M', 11, size_of::<i64>()) as u64;
    pub const MEMERASE64: u64 =
        nix::request_code_write!(b'M', 20, size_of::<EraseInfoUser64>()) as u64;
}

/// An open `/dev/mtdN`.
pub struct MtdDevice {
    file: File,
    path: PathBuf,
    info: FlashInfo,
}

impl MtdDevice {
    /// Opens the device read-write and reads its geometry (MEMGETINFO).
    pub fn open(path: &Path) -> io::Result<MtdDevice> {
        let file = OpenOptions::new().read(true).write(true).open(path)?;
        let mut raw = MtdInfoUser::default();
        // SAFETY: MEMGETINFO writes one `struct mtd_info_user` to the pointer, which points to
        // a live value of that layout (checked against the header by a test).
        unsafe { ioctl::memgetinfo(file.as_raw_fd(), &mut raw) }
            .map_err(|e| io::Error::other(format!("MEMGETINFO {}: {e}", path.display())))?;
        let info = FlashInfo {
            kind: FlashType::from_raw(raw.type_),
            size: u64::from(raw.size),
            erase_size: raw.erasesize,
            write_size: raw.writesize,
            oob_size: raw.oobsize,
        };
        info.validate().map_err(|e| {
            io::Error::new(
                io::ErrorKind::InvalidData,
                format!("{}: {e}", path.display()),
            )
        })?;
        Ok(MtdDevice {
            file,
            path: path.to_path_buf(),
            info,
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }
}

impl Flash for MtdDevice {
    fn info(&self) -> FlashInfo {
        self.info
    }

    fn read_at(&mut self, offset: u64, buf: &mut [u8]) -> io::Result<()> {
        check_range("read", offset, buf.len() as u64, 1, self.info.size)?;
        // The MTD driver reports corrected bit flips as success and uncorrectable ECC errors
        // as EBADMSG.
        self.file.read_exact_at(buf, offset)
    }

    fn write_at(&mut self, offset: u64, data: &[u8]) -> io::Result<()> {
        check_range(
            "write",
            offset,
            data.len() as u64,
            self.info.write_size,
            self.info.size,
        )?;
        // mtdchar writes go straight to the chip: there is no page cache to sync.
        self.file.write_all_at(data, offset)
    }

    fn erase(&mut self, offset: u64, len: u64) -> io::Result<()> {
        check_range("erase", offset, len, self.info.erase_size, self.info.size)?;
        let fd = self.file.as_raw_fd();
        let r = match (u32::try_from(offset), u32::try_from(len)) {
            (Ok(start), Ok(length)) => {
                let e = EraseInfoUser { start, length };
                // SAFETY: MEMERASE reads one `struct erase_info_user` from a live value.
                unsafe { ioctl::memerase(fd, &e) }
            }
            _ => {
                let e = EraseInfoUser64 {
                    start: offset,
                    length: len,
                };
                // SAFETY: MEMERASE64 reads one `struct erase_info_user64` from a live value.
                unsafe { ioctl::memerase64(fd, &e) }
            }
        };
        r.map(drop).map_err(|e| {
            io::Error::other(format!(
                "erase {len:#x} bytes at {offset:#x} of {}: {e}",
                self.path.display()
            ))
        })
    }

    fn is_bad(&mut self, offset: u64) -> io::Result<bool> {
        if !self.info.kind.is_nand() {
            return Ok(false);
        }
        let pos = offset as i64;
        // SAFETY: MEMGETBADBLOCK reads one loff_t from a live value; its return value is 1 for
        // a bad block, 0 for a good one.
        match unsafe { ioctl::memgetbadblock(self.file.as_raw_fd(), &pos) } {
            Ok(r) => Ok(r > 0),
            Err(nix::errno::Errno::EOPNOTSUPP) => Ok(false),
            Err(e) => Err(io::Error::other(format!(
                "MEMGETBADBLOCK {offset:#x} of {}: {e}",
                self.path.display()
            ))),
        }
    }
}

/// One line of `/proc/mtd`: `mtd3: 00800000 00020000 "firmware"`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ProcMtd {
    pub index: u32,
    pub size: u64,
    pub erase_size: u32,
    pub name: String,
}

/// Parses `/proc/mtd` (the header line and lines that do not parse are skipped).
pub fn parse_proc_mtd(text: &str) -> Vec<ProcMtd> {
    text.lines()
        .filter_map(|l| {
            let (dev, rest) = l.split_once(':')?;
            let index = dev.strip_prefix("mtd")?.parse().ok()?;
            let mut f = rest.split_whitespace();
            let size = u64::from_str_radix(f.next()?, 16).ok()?;
            let erase_size = u32::from_str_radix(f.next()?, 16).ok()?;
            let name = rest.split_once('"')?.1.strip_suffix('"')?.to_string();
            Some(ProcMtd {
                index,
                size,
                erase_size,
                name,
            })
        })
        .collect()
}

/// The device of an MTD slot or environment: `/dev/mtdN` as is, or `mtd:NAME` looked up by
/// partition name in `proc_mtd` (the text of `/proc/mtd`).
pub fn resolve_in(spec: &Path, proc_mtd: &str) -> io::Result<PathBuf> {
    let s = spec.to_string_lossy();
    let Some(name) = s.strip_prefix("mtd:") else {
        return Ok(spec.to_path_buf());
    };
    let parts = parse_proc_mtd(proc_mtd);
    let mut found = parts.iter().filter(|p| p.name == name);
    match (found.next(), found.next()) {
        (Some(p), None) => Ok(PathBuf::from(format!("/dev/mtd{}", p.index))),
        (Some(_), Some(_)) => Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("more than one MTD partition is named {name:?} in /proc/mtd"),
        )),
        (None, _) => Err(io::Error::new(
            io::ErrorKind::NotFound,
            format!(
                "no MTD partition named {name:?} in /proc/mtd (found: {})",
                parts
                    .iter()
                    .map(|p| p.name.as_str())
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
        )),
    }
}

/// [`resolve_in`] against this system's `/proc/mtd`.
pub fn resolve(spec: &Path) -> io::Result<PathBuf> {
    if !spec.to_string_lossy().starts_with("mtd:") {
        return Ok(spec.to_path_buf());
    }
    let text = std::fs::read_to_string("/proc/mtd")
        .map_err(|e| io::Error::new(e.kind(), format!("read /proc/mtd: {e}")))?;
    resolve_in(spec, &text)
}

#[cfg(test)]
mod tests {
    use super::*;

    const PROC: &str = "dev:    size   erasesize  name\n\
        mtd0: 00100000 00010000 \"uboot\"\n\
        mtd1: 002e0000 00010000 \"user\"\n\
        mtd2: 00020000 00010000 \"u-boot env\"\n";

    #[test]
    fn proc_mtd_lines_and_names() {
        let p = parse_proc_mtd(PROC);
        assert_eq!(p.len(), 3);
        assert_eq!(
            p[2],
            ProcMtd {
                index: 2,
                size: 0x20000,
                erase_size: 0x10000,
                name: "u-boot env".into()
            }
        );
        assert_eq!(
            resolve_in(Path::new("mtd:u-boot env"), PROC).unwrap(),
            Path::new("/dev/mtd2")
        );
        assert_eq!(
            resolve_in(Path::new("/dev/mtd1"), PROC).unwrap(),
            Path::new("/dev/mtd1")
        );
        let e = resolve_in(Path::new("mtd:firmware"), PROC).unwrap_err();
        assert!(e.to_string().contains("uboot, user, u-boot env"), "{e}");
    }

    #[test]
    fn opening_a_regular_file_as_mtd_fails_with_the_ioctl() {
        let p = std::env::temp_dir().join(format!("wtpd-not-mtd-{}", std::process::id()));
        std::fs::write(&p, [0u8; 16]).unwrap();
        let e = MtdDevice::open(&p)
            .err()
            .expect("a file is not an MTD device");
        assert!(e.to_string().contains("MEMGETINFO"), "{e}");
        std::fs::remove_file(&p).ok();
    }

    /// The structs and request codes against <mtd/mtd-abi.h> and <mtd/ubi-user.h>, compiled by
    /// the host's C compiler (linux-libc-dev). Only where the host is the target: a cross
    /// build's layout is the cross compiler's business, and nix encodes each architecture.
    #[cfg(all(target_arch = "x86_64", target_os = "linux"))]
    #[test]
    fn abi_matches_the_kernel_headers() {
        use std::mem::{offset_of, size_of};
        let dir = std::env::temp_dir().join(format!("wtpd-mtd-abi-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let src = dir.join("abi.c");
        std::fs::write(
            &src,
            r#"#include <stdio.h>
#include <stddef.h>
#include <sys/ioctl.h>
#include <mtd/mtd-abi.h>
#include <mtd/ubi-user.h>
int main(void) {
    printf("%zu %zu %zu %zu %zu %zu %zu %zu\n", sizeof(struct mtd_info_user),
        offsetof(struct mtd_info_user, flags), offsetof(struct mtd_info_user, size),
        offsetof(struct mtd_info_user, erasesize), offsetof(struct mtd_info_user, writesize),
        offsetof(struct mtd_info_user, oobsize), offsetof(struct mtd_info_user, padding),
        sizeof(struct erase_info_user64));
    printf("%lu %lu %lu %lu %lu\n", (unsigned long)MEMGETINFO, (unsigned long)MEMERASE,
        (unsigned long)MEMGETBADBLOCK, (unsigned long)MEMERASE64, (unsigned long)UBI_IOCVOLUP);
    return 0;
}
"#,
        )
        .unwrap();
        let exe = dir.join("abi");
        let cc = std::process::Command::new("cc")
            .arg(&src)
            .arg("-o")
            .arg(&exe)
            .status()
            .expect("run cc (gcc and linux-libc-dev are test dependencies)");
        assert!(cc.success());
        let out = std::process::Command::new(&exe).output().unwrap();
        let text = String::from_utf8(out.stdout).unwrap();
        let mut lines = text.lines();
        let layout: Vec<usize> = lines
            .next()
            .unwrap()
            .split(' ')
            .map(|n| n.parse().unwrap())
            .collect();
        assert_eq!(
            layout,
            [
                size_of::<MtdInfoUser>(),
                offset_of!(MtdInfoUser, flags),
                offset_of!(MtdInfoUser, size),
                offset_of!(MtdInfoUser, erasesize),
                offset_of!(MtdInfoUser, writesize),
                offset_of!(MtdInfoUser, oobsize),
                offset_of!(MtdInfoUser, padding),
                size_of::<EraseInfoUser64>(),
            ]
        );
        let codes: Vec<u64> = lines
            .next()
            .unwrap()
            .split(' ')
            .map(|n| n.parse().unwrap())
            .collect();
        assert_eq!(
            codes,
            [
                request::MEMGETINFO,
                request::MEMERASE,
                request::MEMGETBADBLOCK,
                request::MEMERASE64,
                super::super::ubi::request::UBI_IOCVOLUP,
            ]
        );
        std::fs::remove_dir_all(&dir).ok();
    }
}
