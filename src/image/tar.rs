//! POSIX ustar headers, read strictly and written the one way wtpd writes them: what
//! [`bundle`](super::bundle) reads and [`pack`](super::pack) writes.

/// The tar block size.
pub const BLOCK: usize = 512;
/// The largest member size an 11-digit octal size field holds.
pub const MAX_MEMBER_SIZE: u64 = 0o77777777777;

/// A member's header, as far as the image format needs it.
#[derive(Debug)]
pub(crate) struct Header {
    pub(crate) name: String,
    pub(crate) size: u64,
}

/// Why a header block was refused; the reader adds where it stood.
#[derive(Debug)]
pub(crate) enum HeaderError {
    BadChecksum { stored: String, computed: u32 },
    BadHeader(String),
    UnsafeName(String),
    NotRegularFile { name: String, typeflag: char },
}

fn is_zero(b: &[u8]) -> bool {
    b.iter().all(|&x| x == 0)
}

fn cstr(field: &[u8]) -> &[u8] {
    let end = field.iter().position(|&b| b == 0).unwrap_or(field.len());
    &field[..end]
}

/// Octal digits, optionally followed by NUL/space terminators only (what POSIX allows).
fn octal(field: &[u8]) -> Option<u64> {
    let digits = field
        .iter()
        .position(|&b| b == 0 || b == b' ')
        .unwrap_or(field.len());
    if digits == 0 || !field[digits..].iter().all(|&b| b == 0 || b == b' ') {
        return None;
    }
    let mut v: u64 = 0;
    for &b in &field[..digits] {
        if !(b'0'..=b'7').contains(&b) {
            return None;
        }
        v = v.checked_mul(8)?.checked_add(u64::from(b - b'0'))?;
    }
    Some(v)
}

/// The header checksum: the sum of the block's bytes, the checksum field counted as spaces.
fn checksum(b: &[u8; BLOCK]) -> u32 {
    b.iter()
        .enumerate()
        .map(|(i, &x)| {
            if (148..156).contains(&i) {
                32
            } else {
                u32::from(x)
            }
        })
        .sum()
}

/// Parses one header block; `None` for an all-zero block.
pub(crate) fn parse_header(b: &[u8; BLOCK]) -> Result<Option<Header>, HeaderError> {
    if is_zero(b) {
        return Ok(None);
    }
    // The checksum field itself: six octal digits, NUL, space (GNU tar, bsdtar, Python).
    let ck = &b[148..156];
    let computed = checksum(b);
    let stored_ok =
        ck[..6].iter().all(|c| (b'0'..=b'7').contains(c)) && ck[6] == 0 && ck[7] == b' ';
    if !stored_ok || octal(&ck[..6]) != Some(u64::from(computed)) {
        return Err(HeaderError::BadChecksum {
            stored: String::from_utf8_lossy(ck).into_owned(),
            computed,
        });
    }
    if &b[257..263] != b"ustar\0" || &b[263..265] != b"00" {
        return Err(HeaderError::BadHeader(format!(
            "magic {:?} is not POSIX ustar (make the image with tar --format=ustar)",
            String::from_utf8_lossy(&b[257..265])
        )));
    }
    let name = cstr(&b[0..100]);
    let prefix = cstr(&b[345..500]);
    let mut full = Vec::with_capacity(prefix.len() + 1 + name.len());
    if !prefix.is_empty() {
        full.extend_from_slice(prefix);
        full.push(b'/');
    }
    full.extend_from_slice(name);
    let name = String::from_utf8_lossy(&full).into_owned();
    if name.starts_with('/') || name.split('/').any(|c| c == "..") {
        return Err(HeaderError::UnsafeName(name));
    }
    let typeflag = b[156];
    if typeflag != b'0' && typeflag != 0 {
        return Err(HeaderError::NotRegularFile {
            name,
            typeflag: char::from(typeflag),
        });
    }
    if b[124] & 0x80 != 0 {
        return Err(HeaderError::BadHeader(
            "size in base-256 (not ustar)".into(),
        ));
    }
    let size =
        octal(&b[124..136]).ok_or_else(|| HeaderError::BadHeader("size is not octal".into()))?;
    Ok(Some(Header { name, size }))
}

/// The zero bytes after a member of `size` bytes, up to the next block.
pub(crate) fn padding(size: u64) -> usize {
    ((BLOCK as u64 - size % BLOCK as u64) % BLOCK as u64) as usize
}

/// A ustar header for a regular file (mode 0644, owner root); `Err` says why the name or size
/// does not fit.
pub(crate) fn write_header(name: &str, size: u64, mtime: u64) -> Result<[u8; BLOCK], String> {
    if name.is_empty() || name.len() > 100 {
        return Err(format!("member name {name:?} must be 1 to 100 bytes"));
    }
    if size > MAX_MEMBER_SIZE {
        return Err(format!(
            "{name} is {size} bytes; ustar members stop at {MAX_MEMBER_SIZE}"
        ));
    }
    let mut h = [0u8; BLOCK];
    h[..name.len()].copy_from_slice(name.as_bytes());
    h[100..108].copy_from_slice(b"0000644\0");
    h[108..116].copy_from_slice(b"0000000\0");
    h[116..124].copy_from_slice(b"0000000\0");
    h[124..136].copy_from_slice(format!("{size:011o}\0").as_bytes());
    h[136..148].copy_from_slice(format!("{:011o}\0", mtime.min(MAX_MEMBER_SIZE)).as_bytes());
    h[156] = b'0';
    h[257..263].copy_from_slice(b"ustar\0");
    h[263..265].copy_from_slice(b"00");
    h[265..269].copy_from_slice(b"root");
    h[297..301].copy_from_slice(b"root");
    let sum = checksum(&h);
    h[148..156].copy_from_slice(format!("{sum:06o}\0 ").as_bytes());
    Ok(h)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn octal_fields() {
        assert_eq!(octal(b"00000001750\0"), Some(1000));
        assert_eq!(octal(b"1750 \0"), Some(1000));
        assert_eq!(octal(b"\0\0\0"), None);
        assert_eq!(octal(b"0009"), None);
        assert_eq!(octal(b"12 3"), None);
        assert_eq!(octal(b"77777777777777777777777"), None);
    }

    #[test]
    fn written_headers_read_back() {
        let h = write_header("dir/a.img", 1000, 7).unwrap();
        let back = parse_header(&h).unwrap().unwrap();
        assert_eq!((back.name.as_str(), back.size), ("dir/a.img", 1000));
        assert_eq!(padding(1000), 24);
        assert_eq!(padding(1024), 0);
    }
}
