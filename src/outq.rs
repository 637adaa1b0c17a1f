//! A queue of outgoing packets whose buffers are recycled, so that a steady exchange (an image
//! transfer, Echoes) does not allocate once the pool has warmed up.

use std::collections::VecDeque;

/// A packet waiting to be sent, with what the driver needs to send it.
#[derive(Debug)]
struct Queued<M> {
    meta: M,
    buf: Vec<u8>,
}

/// FIFO of packets with a buffer pool.
#[derive(Debug)]
pub struct OutQueue<M> {
    queue: VecDeque<Queued<M>>,
    pool: Vec<Vec<u8>>,
}

impl<M> Default for OutQueue<M> {
    fn default() -> Self {
        OutQueue {
            queue: VecDeque::new(),
            pool: Vec::new(),
        }
    }
}

impl<M> OutQueue<M> {
    pub fn push(&mut self, meta: M, bytes: &[u8]) {
        let mut buf = self.pool.pop().unwrap_or_default();
        buf.clear();
        buf.extend_from_slice(bytes);
        self.queue.push_back(Queued { meta, buf });
    }

    /// Copies the next packet into `out` (cleared first) and returns its metadata.
    pub fn pop_into(&mut self, out: &mut Vec<u8>) -> Option<M> {
        let q = self.queue.pop_front()?;
        out.clear();
        out.extend_from_slice(&q.buf);
        if self.pool.len() < 16 {
            self.pool.push(q.buf);
        }
        Some(q.meta)
    }

    pub fn len(&self) -> usize {
        self.queue.len()
    }

    pub fn is_empty(&self) -> bool {
        self.queue.is_empty()
    }

    pub fn clear(&mut self) {
        while let Some(q) = self.queue.pop_front() {
            if self.pool.len() < 16 {
                self.pool.push(q.buf);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fifo_and_recycling() {
        let mut q = OutQueue::default();
        q.push(1u8, b"one");
        q.push(2u8, b"two");
        let mut out = Vec::new();
        assert_eq!(q.pop_into(&mut out), Some(1));
        assert_eq!(out, b"one");
        q.push(3u8, b"three");
        assert_eq!(q.pop_into(&mut out), Some(2));
        assert_eq!(out, b"two");
        assert_eq!(q.pop_into(&mut out), Some(3));
        assert_eq!(out, b"three");
        assert_eq!(q.pop_into(&mut out), None);
        assert!(q.pool.len() <= 2, "buffers were reused");
    }
}
