//! An HTTP/1.1 response to the image GET (status line, headers, Content-Length, chunked
//! coding, trailers), as the HTTPS download reads it after TLS. Input: one byte choosing the
//! read sizes of the stream, then the response. Properties: the body handed to the sink is
//! what the count says; with a Content-Length and no chunking, a success is exactly that long;
//! `begin` comes once, before any data.

#![no_main]

use std::cell::Cell;
use std::io::BufReader;

use libfuzzer_sys::fuzz_target;
use wtpd::fetch::https::read_response;
use wtpd::fetch::{FetchErrorKind, Sink};
use wtpd_fuzz::ChunkedReader;

#[derive(Default)]
struct CountSink {
    begun: Option<Option<u64>>,
    bytes: u64,
}

impl Sink for CountSink {
    fn begin(&mut self, size: Option<u64>) -> Result<(), FetchErrorKind> {
        assert!(self.begun.is_none(), "begin called twice");
        self.begun = Some(size);
        Ok(())
    }
    fn data(&mut self, b: &[u8]) -> Result<(), FetchErrorKind> {
        assert!(self.begun.is_some(), "data before begin");
        self.bytes += b.len() as u64;
        Ok(())
    }
}

fuzz_target!(|data: &[u8]| {
    let Some((sizes, response)) = data.split_first_chunk::<1>() else {
        return;
    };
    let consumed = Cell::new(0);
    // A small BufReader capacity so that lines and chunks cross buffer refills.
    let mut r = BufReader::with_capacity(
        usize::from(sizes[0] % 64) + 1,
        ChunkedReader::new(response, sizes, &consumed),
    );
    let mut sink = CountSink::default();
    if let Ok(n) = read_response(&mut r, &mut sink) {
        assert_eq!(n, sink.bytes, "the count is what reached the sink");
        if let Some(Some(len)) = sink.begun {
            assert_eq!(n, len, "a success is as long as Content-Length");
        }
    }
});
