//! The environment's variables and their binary form (pure functions, no I/O).

use std::collections::BTreeMap;

use super::crc::crc32;
use super::{ByteOrder, EnvError};

/// The pad byte after the data: 0xFF, as mkenvimage writes and as erased flash reads.
pub const PAD_BYTE: u8 = 0xFF;

/// The environment's variables, sorted by name (the order they are serialized in, and the
/// order `fw_setenv` writes them in).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Env {
    vars: BTreeMap<String, String>,
}

impl Env {
    /// An empty environment.
    pub fn new() -> Self {
        Self::default()
    }

    /// Builds an environment from `(name, value)` pairs; a later pair replaces an earlier one
    /// of the same name. Fails on the first invalid name or value (see [`Env::set`]).
    pub fn from_pairs<N, V>(pairs: impl IntoIterator<Item = (N, V)>) -> Result<Self, EnvError>
    where
        N: Into<String>,
        V: Into<String>,
    {
        let mut env = Env::new();
        for (n, v) in pairs {
            env.set(n, v)?;
        }
        Ok(env)
    }

    /// The value of `name`, if set.
    pub fn get(&self, name: &str) -> Option<&str> {
        self.vars.get(name).map(String::as_str)
    }

    /// Sets `name` to `value` and returns the old value. A name must be non-empty and contain
    /// neither `=` nor NUL; a value must not contain NUL (the format's separators). An empty
    /// value is stored as `name=`: to delete a variable, use [`Env::remove`].
    pub fn set(
        &mut self,
        name: impl Into<String>,
        value: impl Into<String>,
    ) -> Result<Option<String>, EnvError> {
        let (name, value) = (name.into(), value.into());
        let reason = if name.is_empty() {
            Some("empty name")
        } else if name.contains('=') {
            Some("name contains '='")
        } else if name.contains('\0') {
            Some("name contains NUL")
        } else {
            None
        };
        if let Some(reason) = reason {
            return Err(EnvError::InvalidName { name, reason });
        }
        if value.contains('\0') {
            return Err(EnvError::InvalidValue { name });
        }
        Ok(self.vars.insert(name, value))
    }

    /// Deletes `name` and returns its value.
    pub fn remove(&mut self, name: &str) -> Option<String> {
        self.vars.remove(name)
    }

    /// The variables, sorted by name.
    pub fn iter(&self) -> impl Iterator<Item = (&str, &str)> + '_ {
        self.vars.iter().map(|(k, v)| (k.as_str(), v.as_str()))
    }

    /// The number of variables.
    pub fn len(&self) -> usize {
        self.vars.len()
    }

    pub fn is_empty(&self) -> bool {
        self.vars.is_empty()
    }

    /// The bytes the variables take in a copy's data area: `name=value\0` each, then the
    /// terminating `\0` (so 1 for an empty environment, as mkenvimage writes it).
    pub fn serialized_len(&self) -> usize {
        1 + self
            .vars
            .iter()
            .map(|(k, v)| k.len() + v.len() + 2)
            .sum::<usize>()
    }
}

/// One copy's bytes: `[CRC][flag][data][0xFF padding]`, `size` bytes in all. The flag byte is
/// there only when `flag` is given (a copy of a redundant environment). The CRC covers the data
/// area, padding included, not the flag, and is stored in `byte_order`.
///
/// Byte for byte what `mkenvimage -s SIZE [-b]` makes from the variables listed in name order,
/// and with `flag: Some(1)`, what `mkenvimage -r` makes. Fails with [`EnvError::TooLarge`] when
/// the variables do not fit in `size` minus the header.
pub fn encode(
    env: &Env,
    size: usize,
    byte_order: ByteOrder,
    flag: Option<u8>,
) -> Result<Vec<u8>, EnvError> {
    let header = 4 + usize::from(flag.is_some());
    let available = size.saturating_sub(header);
    let needed = env.serialized_len();
    if needed > available {
        return Err(EnvError::TooLarge { needed, available });
    }
    let mut out = Vec::with_capacity(size);
    out.extend_from_slice(&[0; 4]);
    out.extend(flag);
    for (k, v) in env.iter() {
        out.extend_from_slice(k.as_bytes());
        out.push(b'=');
        out.extend_from_slice(v.as_bytes());
        out.push(0);
    }
    out.push(0);
    out.resize(size, PAD_BYTE);
    let crc = crc32(&out[header..]);
    out[..4].copy_from_slice(&byte_order.u32_to_bytes(crc));
    Ok(out)
}

/// Reads one copy's bytes (all `size` of them): checks the CRC ([`EnvError::BadCrc`], or
/// [`EnvError::WrongByteOrder`] when it matches with its bytes swapped), then
/// parses `name=value\0` entries up to the first empty one (bytes after it are ignored:
/// `fw_setenv` leaves old data there). Returns the variables and, when `redundant`, the flag.
///
/// A copy whose CRC is right but whose entries are not (no `=`, empty name, not UTF-8, the
/// last entry unterminated) is refused with [`EnvError::Malformed`]. A name set twice keeps its
/// last value, as U-Boot does.
pub fn decode(
    bytes: &[u8],
    byte_order: ByteOrder,
    redundant: bool,
) -> Result<(Env, Option<u8>), EnvError> {
    let header = if redundant { 5 } else { 4 };
    if bytes.len() <= header {
        return Err(EnvError::TooShort {
            len: bytes.len(),
            needed: header + 1,
        });
    }
    let stored = byte_order.u32_from_bytes([bytes[0], bytes[1], bytes[2], bytes[3]]);
    let data = &bytes[header..];
    let computed = crc32(data);
    if stored != computed {
        if stored.swap_bytes() == computed {
            return Err(EnvError::WrongByteOrder {
                configured: byte_order,
            });
        }
        return Err(EnvError::BadCrc { stored, computed });
    }
    let flag = redundant.then(|| bytes[4]);
    Ok((parse_data(data, header)?, flag))
}

/// The entries of a data area; `base` is the area's offset in the copy, for error messages.
fn parse_data(data: &[u8], base: usize) -> Result<Env, EnvError> {
    let mut env = Env::new();
    let mut pos = 0;
    while pos < data.len() {
        let malformed = |reason| EnvError::Malformed {
            offset: base + pos,
            reason,
        };
        let rest = &data[pos..];
        let end = rest
            .iter()
            .position(|&b| b == 0)
            .ok_or_else(|| malformed("entry not NUL-terminated"))?;
        if end == 0 {
            break; // the terminating empty entry
        }
        let entry = &rest[..end];
        let eq = entry
            .iter()
            .position(|&b| b == b'=')
            .ok_or_else(|| malformed("entry without '='"))?;
        if eq == 0 {
            return Err(malformed("entry with an empty name"));
        }
        let name = std::str::from_utf8(&entry[..eq]).map_err(|_| malformed("name not UTF-8"))?;
        let value =
            std::str::from_utf8(&entry[eq + 1..]).map_err(|_| malformed("value not UTF-8"))?;
        env.vars.insert(name.to_owned(), value.to_owned());
        pos += end + 1;
    }
    Ok(env)
}
