//! Helpers the fuzz targets share. Kept out of the main crate: nothing here runs on a board.
//!
//! - [`image`]: the trust policy and anchor of the seed images, a verification cache, and the
//!   in-memory reference verifier the `bundle` target compares the streaming reader with.
//! - [`ChunkedReader`]: a `Read` that returns the short reads the fuzzer chooses, so that the
//!   streaming parsers see every way a socket or a file can split their input.

pub mod image;

use std::cell::Cell;
use std::io::{self, Read};

/// Reads `data` in pieces whose sizes come from `sizes` (cycled; 0 counts as 1), and counts
/// what was consumed in `consumed` (a `Cell`, readable while the parser holds the reader), so a
/// target can check that a parser never reads more than it may.
pub struct ChunkedReader<'a> {
    data: &'a [u8],
    sizes: &'a [u8],
    turn: usize,
    consumed: &'a Cell<usize>,
}

impl<'a> ChunkedReader<'a> {
    pub fn new(data: &'a [u8], sizes: &'a [u8], consumed: &'a Cell<usize>) -> Self {
        consumed.set(0);
        ChunkedReader {
            data,
            sizes,
            turn: 0,
            consumed,
        }
    }
}

impl Read for ChunkedReader<'_> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let rest = &self.data[self.consumed.get()..];
        let limit = match self.sizes.get(self.turn % self.sizes.len().max(1)) {
            // Sizes up to 255 * 64 so that one read can cross a block, a member, the head.
            Some(&s) => usize::from(s.max(1)) * 64,
            None => usize::MAX,
        };
        self.turn += 1;
        let n = buf.len().min(rest.len()).min(limit);
        buf[..n].copy_from_slice(&rest[..n]);
        self.consumed.set(self.consumed.get() + n);
        Ok(n)
    }
}
