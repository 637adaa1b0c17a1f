//! The in-memory datagram "socket" that OpenSSL reads from and writes to.
//!
//! OpenSSL's DTLS code expects datagram semantics from its BIO: one read returns exactly one
//! datagram, one write sends exactly one datagram. [`DatagramQueue`] gives it that over two
//! queues, so the session never touches a socket.

use std::collections::VecDeque;
use std::io::{self, Read, Write};

/// Most datagrams that may wait on either side; beyond this the oldest are dropped, as a full
/// socket buffer would, so a peer that floods us cannot grow memory without bound.
const MAX_QUEUED: usize = 256;

/// Datagrams in both directions, without any CAPWAP header.
#[derive(Debug, Default)]
pub(crate) struct DatagramQueue {
    incoming: VecDeque<Vec<u8>>,
    outgoing: VecDeque<Vec<u8>>,
}

impl DatagramQueue {
    /// A datagram arrived from the peer.
    pub(crate) fn push_incoming(&mut self, datagram: Vec<u8>) {
        if self.incoming.len() >= MAX_QUEUED {
            self.incoming.pop_front();
        }
        self.incoming.push_back(datagram);
    }

    /// The next datagram OpenSSL produced.
    pub(crate) fn pop_outgoing(&mut self) -> Option<Vec<u8>> {
        self.outgoing.pop_front()
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
            self.outgoing.pop_front();
        }
        self.outgoing.push_back(buf.to_vec());
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
        q.push_incoming(vec![1, 2, 3]);
        q.push_incoming(vec![4, 5]);
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
}
