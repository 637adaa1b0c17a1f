//! The in-memory datagram "socket" that OpenSSL reads from and writes to.
//!
//! OpenSSL's DTLS code expects datagram semantics from its BIO: one read returns exactly one
//! datagram, one write sends exactly one datagram. [`DatagramQueue`] gives it that over two
//! queues, so the session never touches a socket. The datagrams' buffers are recycled through a
//! small pool, so a steady exchange (an image transfer) does not allocate per datagram.

use std::collections::VecDeque;
use std::io::{self, Read, Write};

/// Most datagrams that may wait on either side; beyond this the oldest are dropped, as a full
/// socket buffer would, so a peer that floods us cannot grow memory without bound.
const MAX_QUEUED: usize = 256;

/// Spare buffers kept for reuse.
const MAX_POOLED: usize = 8;

/// Datagrams in both directions. Incoming ones are stored as received (the CAPWAP DTLS header
/// already stripped); each outgoing one starts with `prefix` (the session's CAPWAP DTLS
/// header), so that it can be sent as it is.
#[derive(Debug, Default)]
pub(crate) struct DatagramQueue {
    incoming: VecDeque<Vec<u8>>,
    outgoing: VecDeque<Vec<u8>>,
    pool: Vec<Vec<u8>>,
    prefix: &'static [u8],
}

impl DatagramQueue {
    /// A queue whose outgoing datagrams start with `prefix`.
    pub(crate) fn with_prefix(prefix: &'static [u8]) -> Self {
        DatagramQueue {
            prefix,
            ..Self::default()
        }
    }

    /// A datagram arrived from the peer: copied into a recycled buffer.
    pub(crate) fn push_incoming(&mut self, datagram: &[u8]) {
        if self.incoming.len() >= MAX_QUEUED {
            if let Some(old) = self.incoming.pop_front() {
                self.recycle(old);
            }
        }
        let mut buf = self.take_buf();
        buf.extend_from_slice(datagram);
        self.incoming.push_back(buf);
    }

    /// The next datagram OpenSSL produced, `prefix` included.
    pub(crate) fn pop_outgoing(&mut self) -> Option<Vec<u8>> {
        self.outgoing.pop_front()
    }

    /// An empty buffer, recycled when one is spare.
    pub(crate) fn take_buf(&mut self) -> Vec<u8> {
        let mut b = self.pool.pop().unwrap_or_default();
        b.clear();
        b
    }

    /// Gives a buffer back for reuse.
    pub(crate) fn recycle(&mut self, buf: Vec<u8>) {
        if self.pool.len() < MAX_POOLED && buf.capacity() > 0 {
            self.pool.push(buf);
        }
    }

    /// Drops whatever OpenSSL has not read yet (after the session died).
    pub(crate) fn clear_incoming(&mut self) {
        self.incoming.clear();
    }
}

impl Read for DatagramQueue {
    /// One datagram per call; `WouldBlock` when none is waiting (OpenSSL then reports
    /// WANT_READ). A datagram longer than `buf` is truncated, as `recv` on a UDP socket does.
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        match self.incoming.pop_front() {
            Some(d) => {
                let n = d.len().min(buf.len());
                buf[..n].copy_from_slice(&d[..n]);
                self.recycle(d);
                Ok(n)
            }
            None => Err(io::ErrorKind::WouldBlock.into()),
        }
    }
}

impl Write for DatagramQueue {
    /// Every write is one datagram (OpenSSL flushes one datagram's worth of records at a time).
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        if self.outgoing.len() >= MAX_QUEUED {
            if let Some(old) = self.outgoing.pop_front() {
                self.recycle(old);
            }
        }
        let mut d = self.take_buf();
        d.reserve(self.prefix.len() + buf.len());
        d.extend_from_slice(self.prefix);
        d.extend_from_slice(buf);
        self.outgoing.push_back(d);
        Ok(buf.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn read_returns_one_datagram_or_would_block() {
        let mut q = DatagramQueue::default();
        let mut buf = [0u8; 8];
        assert_eq!(
            q.read(&mut buf).unwrap_err().kind(),
            io::ErrorKind::WouldBlock
        );
        q.push_incoming(&[1, 2, 3]);
        q.push_incoming(&[4, 5]);
        assert_eq!(q.read(&mut buf).unwrap(), 3);
        assert_eq!(&buf[..3], &[1, 2, 3]);
        assert_eq!(q.read(&mut buf).unwrap(), 2);
        assert_eq!(&buf[..2], &[4, 5]);
        assert!(q.read(&mut buf).is_err());
    }

    #[test]
    fn each_write_is_one_datagram() {
        let mut q = DatagramQueue::default();
        q.write_all(&[9, 9]).unwrap();
        q.write_all(&[8]).unwrap();
        assert_eq!(q.pop_outgoing(), Some(vec![9, 9]));
        assert_eq!(q.pop_outgoing(), Some(vec![8]));
        assert_eq!(q.pop_outgoing(), None);
    }

    #[test]
    fn prefix_and_recycled_buffers() {
        let mut q = DatagramQueue::with_prefix(&[1, 0, 0, 0]);
        q.write_all(&[7, 7]).unwrap();
        let d = q.pop_outgoing().unwrap();
        assert_eq!(d, vec![1, 0, 0, 0, 7, 7]);
        let ptr = d.as_ptr();
        q.recycle(d);
        q.push_incoming(&[5, 6, 7]);
        let mut buf = [0u8; 8];
        assert_eq!(q.read(&mut buf).unwrap(), 3);
        q.write_all(&[9]).unwrap();
        let d = q.pop_outgoing().unwrap();
        assert_eq!(d, vec![1, 0, 0, 0, 9]);
        assert_eq!(
            d.as_ptr(),
            ptr,
            "the buffer went round without a new allocation"
        );
        for _ in 0..100 {
            q.recycle(vec![0; 4]);
        }
        assert!(q.pool.len() <= MAX_POOLED, "the pool is bounded");
    }
}
