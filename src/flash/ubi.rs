//! UBI volumes (`/dev/ubiX_Y`): the atomic volume update, and the lookup of a volume by name.
//!
//! A volume update is `UBI_IOCVOLUP` with the exact byte count, then exactly that many bytes
//! written. UBI sets the volume's update marker first and clears it only when the last byte has
//! arrived, so an update cut short (power, a killed agent) leaves a volume that UBI itself
//! reports as corrupted (`upd_marker` 1 in sysfs, reads fail), never a half-new volume that
//! looks whole. UBI does its own erasing, wear levelling and bad-block handling underneath.

use std::fs::{File, OpenOptions};
use std::io::{self, Write};
use std::os::fd::AsRawFd;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

mod ioctl {
    nix::ioctl_write_ptr!(ubi_iocvolup, b'O', 0, i64);
}

/// The request code, for the test against the C header.
pub mod request {
    pub const UBI_IOCVOLUP: u64 =
        nix::request_code_write!(b'O', 0, std::mem::size_of::<i64>()) as u64;
}

/// The sysfs directory of UBI devices and volumes.
pub const SYSFS: &str = "/sys/class/ubi";

/// An open UBI volume.
pub struct UbiVolume {
    file: File,
    path: PathBuf,
    /// Bytes the volume can hold (reserved erase blocks × usable bytes per block).
    capacity: u64,
    /// Bytes announced by [`UbiVolume::begin_update`] and not yet written.
    pending: u64,
}

impl UbiVolume {
    /// Opens `/dev/ubiX_Y` read-write; its capacity comes from sysfs.
    pub fn open(path: &Path) -> io::Result<UbiVolume> {
        Self::open_with_sysfs(path, Path::new(SYSFS))
    }

    pub fn open_with_sysfs(path: &Path, sysfs: &Path) -> io::Result<UbiVolume> {
        let name = path
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        let attrs = VolumeAttrs::read(&sysfs.join(&name)).map_err(|e| {
            io::Error::new(
                e.kind(),
                format!("{}: not a UBI volume ({e})", path.display()),
            )
        })?;
        let file = OpenOptions::new().read(true).write(true).open(path)?;
        Ok(UbiVolume {
            file,
            path: path.to_path_buf(),
            capacity: attrs.capacity(),
            pending: 0,
        })
    }

    pub fn capacity(&self) -> u64 {
        self.capacity
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Starts an atomic update of exactly `len` bytes (UBI_IOCVOLUP). From here until the last
    /// byte is written the volume reads as corrupted.
    pub fn begin_update(&mut self, len: u64) -> io::Result<()> {
        if len > self.capacity {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!(
                    "{} bytes do not fit the {}-byte volume {}",
                    len,
                    self.capacity,
                    self.path.display()
                ),
            ));
        }
        let n = len as i64;
        // SAFETY: UBI_IOCVOLUP reads one int64 from a live value.
        unsafe { ioctl::ubi_iocvolup(self.file.as_raw_fd(), &n) }
            .map_err(|e| io::Error::other(format!("UBI_IOCVOLUP {}: {e}", self.path.display())))?;
        self.pending = len;
        Ok(())
    }

    /// Writes the next bytes of the update (in order; never more than announced).
    pub fn write_next(&mut self, data: &[u8]) -> io::Result<()> {
        if data.len() as u64 > self.pending {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!(
                    "{} bytes written to {} beyond the {} announced",
                    data.len(),
                    self.path.display(),
                    self.pending
                ),
            ));
        }
        self.file.write_all(data)?;
        self.pending -= data.len() as u64;
        Ok(())
    }

    /// Bytes announced and not yet written: 0 when the update has been committed.
    pub fn pending(&self) -> u64 {
        self.pending
    }

    pub fn read_at(&mut self, offset: u64, buf: &mut [u8]) -> io::Result<usize> {
        self.file.read_at(buf, offset)
    }
}

/// What sysfs says of a volume (`/sys/class/ubi/ubiX_Y/`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct VolumeAttrs {
    pub name: String,
    pub reserved_ebs: u64,
    pub usable_eb_size: u64,
    /// An update was started and not finished: the volume's contents are not usable.
    pub upd_marker: bool,
    pub corrupted: bool,
}

impl VolumeAttrs {
    pub fn read(dir: &Path) -> io::Result<VolumeAttrs> {
        let attr = |f: &str| -> io::Result<String> {
            std::fs::read_to_string(dir.join(f)).map(|s| s.trim().to_string())
        };
        let num = |f: &str| -> io::Result<u64> {
            let s = attr(f)?;
            s.parse().map_err(|_| {
                io::Error::new(
                    io::ErrorKind::InvalidData,
                    format!("{f}: {s:?} is not a number"),
                )
            })
        };
        Ok(VolumeAttrs {
            name: attr("name")?,
            reserved_ebs: num("reserved_ebs")?,
            usable_eb_size: num("usable_eb_size")?,
            upd_marker: num("upd_marker").unwrap_or(0) != 0,
            corrupted: num("corrupted").unwrap_or(0) != 0,
        })
    }

    pub fn capacity(&self) -> u64 {
        self.reserved_ebs * self.usable_eb_size
    }
}

/// The device of a UBI slot or environment: `/dev/ubiX_Y` as is, or `ubiX:NAME` looked up by
/// volume name under `sysfs` (`/sys/class/ubi`): the volume `ubiX_Y` whose `name` is NAME.
pub fn resolve_in(spec: &Path, sysfs: &Path) -> io::Result<PathBuf> {
    let s = spec.to_string_lossy();
    let Some((dev, name)) = s
        .strip_prefix("/dev/")
        .unwrap_or(&s)
        .split_once(':')
        .filter(|(d, _)| d.starts_with("ubi") && d[3..].bytes().all(|c| c.is_ascii_digit()))
    else {
        return Ok(spec.to_path_buf());
    };
    let prefix = format!("{dev}_");
    let entries = std::fs::read_dir(sysfs.join(dev))
        .map_err(|e| io::Error::new(e.kind(), format!("{}: {e}", sysfs.join(dev).display())))?;
    let mut seen = Vec::new();
    for e in entries.flatten() {
        let vol = e.file_name().to_string_lossy().into_owned();
        if !vol.starts_with(&prefix) {
            continue;
        }
        let vname = std::fs::read_to_string(e.path().join("name")).unwrap_or_default();
        let vname = vname.trim();
        if vname == name {
            return Ok(PathBuf::from("/dev").join(vol));
        }
        seen.push(vname.to_string());
    }
    seen.sort();
    Err(io::Error::new(
        io::ErrorKind::NotFound,
        format!(
            "no volume named {name:?} on {dev} (found: {})",
            seen.join(", ")
        ),
    ))
}

/// [`resolve_in`] against this system's sysfs.
pub fn resolve(spec: &Path) -> io::Result<PathBuf> {
    resolve_in(spec, Path::new(SYSFS))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A directory laid out as the kernel's /sys/class/ubi (a fixture: there is no UBI driver
    /// on the build machine; the QEMU Malta board runs the real one).
    fn sysfs() -> PathBuf {
        let root = std::env::temp_dir().join(format!("wtpd-ubi-sysfs-{}", std::process::id()));
        for (vol, name) in [("ubi0_0", "rootfs_a"), ("ubi0_1", "rootfs_b")] {
            let d = root.join("ubi0").join(vol);
            std::fs::create_dir_all(&d).unwrap();
            std::fs::write(d.join("name"), format!("{name}\n")).unwrap();
            std::fs::write(d.join("reserved_ebs"), "100\n").unwrap();
            std::fs::write(d.join("usable_eb_size"), "126976\n").unwrap();
            std::fs::write(d.join("upd_marker"), "0\n").unwrap();
        }
        root
    }

    #[test]
    fn volumes_by_name_and_their_capacity() {
        let root = sysfs();
        assert_eq!(
            resolve_in(Path::new("ubi0:rootfs_b"), &root).unwrap(),
            Path::new("/dev/ubi0_1")
        );
        assert_eq!(
            resolve_in(Path::new("/dev/ubi0:rootfs_a"), &root).unwrap(),
            Path::new("/dev/ubi0_0")
        );
        assert_eq!(
            resolve_in(Path::new("/dev/ubi0_1"), &root).unwrap(),
            Path::new("/dev/ubi0_1")
        );
        let e = resolve_in(Path::new("ubi0:kernel"), &root).unwrap_err();
        assert!(e.to_string().contains("rootfs_a, rootfs_b"), "{e}");
        let a = VolumeAttrs::read(&root.join("ubi0").join("ubi0_0")).unwrap();
        assert_eq!(a.capacity(), 100 * 126976);
        assert!(!a.upd_marker);
        std::fs::remove_dir_all(&root).ok();
    }
}
