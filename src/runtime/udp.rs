//! A UDP socket for the event loops, registered with tokio for reading only.
//!
//! Why not `tokio::net::UdpSocket`: tokio registers every socket for both readable and
//! writable events (edge-triggered). The kernel signals "writable" on a UDP socket each time a
//! datagram it sent is freed, that is each time the peer has read it. In a stop-and-wait
//! transfer (the Image Data state) that is once per block: an extra epoll wake-up and an extra
//! `epoll_wait` per block on each side, for an event nobody waits for. Measured on loopback
//! (`cargo bench --bench transfer`), it was one of five system calls per block.
//!
//! Sends go straight to the socket. A UDP send only blocks when the socket's send buffer is
//! full; then the send waits a little and tries again, and gives up after a while (CAPWAP
//! retransmits what is lost, so a dropped datagram is not an error the loop must stop for).

use std::io;
use std::net::SocketAddr;
use std::time::Duration;

use tokio::io::unix::AsyncFd;
use tokio::io::Interest;

/// How often a send that finds the send buffer full tries again, and how long it waits between.
const SEND_TRIES: u32 = 50;
const SEND_PAUSE: Duration = Duration::from_millis(2);

pub struct Udp {
    fd: AsyncFd<std::net::UdpSocket>,
}

impl Udp {
    /// Binds a non-blocking socket and registers it for readable events.
    pub fn bind(addr: SocketAddr) -> io::Result<Udp> {
        let s = std::net::UdpSocket::bind(addr)?;
        s.set_nonblocking(true)?;
        // SAFETY: the std socket owns its descriptor, keeps it open until the AsyncFd drops it,
        // and `as_raw_fd` always returns that one descriptor.
        let fd = unsafe { AsyncFd::register_with_interest(s, Interest::READABLE) }?;
        Ok(Udp { fd })
    }

    pub fn local_addr(&self) -> io::Result<SocketAddr> {
        self.fd.get_ref().local_addr()
    }

    /// Asks for a receive buffer of `bytes` (the kernel caps it at net.core.rmem_max): a
    /// controller's socket must hold the burst of a join storm, or the handshakes whose
    /// datagrams it drops wait out a DTLS retransmission (1 s, then 2 s, ...).
    pub fn set_recv_buffer(&self, bytes: usize) -> io::Result<()> {
        self.set_buffer(libc::SO_RCVBUF, bytes)
    }

    /// Asks for a send buffer of `bytes` (capped at net.core.wmem_max): on loopback a sent
    /// datagram counts against it until the peer reads it, so answering a thousand APs at once
    /// filled the default one, and a full buffer makes a send wait (see [`Udp::send_to`]).
    pub fn set_send_buffer(&self, bytes: usize) -> io::Result<()> {
        self.set_buffer(libc::SO_SNDBUF, bytes)
    }

    fn set_buffer(&self, option: libc::c_int, bytes: usize) -> io::Result<()> {
        use std::os::fd::AsRawFd;
        let v = bytes.min(i32::MAX as usize) as libc::c_int;
        // SAFETY: a valid socket descriptor and an int option of the right size.
        let r = unsafe {
            libc::setsockopt(
                self.fd.get_ref().as_raw_fd(),
                libc::SOL_SOCKET,
                option,
                &v as *const libc::c_int as *const libc::c_void,
                std::mem::size_of::<libc::c_int>() as libc::socklen_t,
            )
        };
        if r == 0 {
            Ok(())
        } else {
            Err(io::Error::last_os_error())
        }
    }

    pub fn set_broadcast(&self, on: bool) -> io::Result<()> {
        self.fd.get_ref().set_broadcast(on)
    }

    /// Waits for a datagram.
    pub async fn recv_from(&self, buf: &mut [u8]) -> io::Result<(usize, SocketAddr)> {
        loop {
            let mut ready = self.fd.readable().await?;
            match ready.try_io(|s| s.get_ref().recv_from(buf)) {
                Ok(r) => return r,
                Err(_would_block) => continue,
            }
        }
    }

    /// Waits for datagrams and takes as many as are queued, up to `batch.len()`, in one
    /// `recvmmsg(2)`: a busy controller gets many datagrams per wake-up, and one system call
    /// for them instead of one each. Returns how many; their lengths and senders are in
    /// `batch.meta`.
    pub async fn recv_batch(&self, batch: &mut RecvBatch) -> io::Result<usize> {
        loop {
            let mut ready = self.fd.readable().await?;
            match ready.try_io(|s| batch.recv(s.get_ref())) {
                Ok(r) => return r,
                Err(_would_block) => continue,
            }
        }
    }

    /// Sends a datagram; waits only when the send buffer is full.
    pub async fn send_to(&self, bytes: &[u8], to: SocketAddr) -> io::Result<usize> {
        let mut tries = 0;
        loop {
            match self.fd.get_ref().send_to(bytes, to) {
                Err(e) if e.kind() == io::ErrorKind::WouldBlock && tries < SEND_TRIES => {
                    tries += 1;
                    tokio::time::sleep(SEND_PAUSE).await;
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                r => return r,
            }
        }
    }
}

/// Buffers for [`Udp::recv_batch`]: `slots` datagrams of up to `size` bytes each (the memory
/// is only touched as far as datagrams reach).
pub struct RecvBatch {
    bufs: Vec<u8>,
    size: usize,
    /// Length and sender of each datagram of the last batch.
    pub meta: Vec<(usize, SocketAddr)>,
}

impl RecvBatch {
    pub fn new(slots: usize, size: usize) -> RecvBatch {
        RecvBatch {
            bufs: vec![0u8; slots.max(1) * size],
            size,
            meta: Vec::with_capacity(slots.max(1)),
        }
    }

    /// Datagram `i` of the last batch.
    pub fn datagram(&self, i: usize) -> (&[u8], SocketAddr) {
        let (n, from) = self.meta[i];
        (&self.bufs[i * self.size..i * self.size + n], from)
    }

    fn recv(&mut self, sock: &std::net::UdpSocket) -> io::Result<usize> {
        use std::os::fd::AsRawFd;
        let slots = self.bufs.len() / self.size;
        // SAFETY: zeroed sockaddr_storage, iovec and mmsghdr are valid values.
        let mut addrs: Vec<libc::sockaddr_storage> = vec![unsafe { std::mem::zeroed() }; slots];
        let mut iovs: Vec<libc::iovec> = self
            .bufs
            .chunks_mut(self.size)
            .map(|b| libc::iovec {
                iov_base: b.as_mut_ptr() as *mut libc::c_void,
                iov_len: b.len(),
            })
            .collect();
        let mut msgs: Vec<libc::mmsghdr> = vec![unsafe { std::mem::zeroed() }; slots];
        for (i, m) in msgs.iter_mut().enumerate() {
            m.msg_hdr.msg_name = &mut addrs[i] as *mut _ as *mut libc::c_void;
            m.msg_hdr.msg_namelen = std::mem::size_of::<libc::sockaddr_storage>() as u32;
            m.msg_hdr.msg_iov = &mut iovs[i];
            m.msg_hdr.msg_iovlen = 1;
        }
        // SAFETY: every mmsghdr points at an iovec over its own slot of `bufs` and at its own
        // sockaddr_storage, all alive and unaliased for the call.
        let n = unsafe {
            libc::recvmmsg(
                sock.as_raw_fd(),
                msgs.as_mut_ptr(),
                slots as libc::c_uint,
                // c_int on glibc, c_uint on musl.
                libc::MSG_DONTWAIT as _,
                std::ptr::null_mut(),
            )
        };
        if n < 0 {
            return Err(io::Error::last_os_error());
        }
        self.meta.clear();
        for (i, m) in msgs.iter().take(n as usize).enumerate() {
            let from = sockaddr(&addrs[i]).unwrap_or_else(|| SocketAddr::from(([0, 0, 0, 0], 0)));
            self.meta.push(((m.msg_len as usize).min(self.size), from));
        }
        Ok(n as usize)
    }
}

fn sockaddr(a: &libc::sockaddr_storage) -> Option<SocketAddr> {
    match a.ss_family as libc::c_int {
        libc::AF_INET => {
            // SAFETY: the family says it is a sockaddr_in.
            let v4 = unsafe { &*(a as *const _ as *const libc::sockaddr_in) };
            Some(SocketAddr::from((
                u32::from_be(v4.sin_addr.s_addr).to_be_bytes(),
                u16::from_be(v4.sin_port),
            )))
        }
        libc::AF_INET6 => {
            // SAFETY: the family says it is a sockaddr_in6.
            let v6 = unsafe { &*(a as *const _ as *const libc::sockaddr_in6) };
            Some(SocketAddr::V6(std::net::SocketAddrV6::new(
                std::net::Ipv6Addr::from(v6.sin6_addr.s6_addr),
                u16::from_be(v6.sin6_port),
                v6.sin6_flowinfo,
                v6.sin6_scope_id,
            )))
        }
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn datagrams_go_both_ways() {
        let a = Udp::bind("127.0.0.1:0".parse().unwrap()).unwrap();
        let b = Udp::bind("127.0.0.1:0".parse().unwrap()).unwrap();
        let (pa, pb) = (a.local_addr().unwrap(), b.local_addr().unwrap());
        let mut buf = [0u8; 64];
        for i in 0..100u8 {
            a.send_to(&[i; 10], pb).await.unwrap();
            let (n, from) = b.recv_from(&mut buf).await.unwrap();
            assert_eq!((n, from, buf[0]), (10, pa, i));
            b.send_to(&[i; 3], pa).await.unwrap();
            let (n, from) = a.recv_from(&mut buf).await.unwrap();
            assert_eq!((n, from, buf[2]), (3, pb, i));
        }
    }

    /// Datagrams that queue up before the receiver looks all come out, whole and in order (one
    /// readiness event for several datagrams must not strand any); one larger than the
    /// caller's buffer is cut to it, as `recv_from(2)` does.
    #[tokio::test]
    async fn queued_datagrams_all_arrive_in_order() {
        let a = Udp::bind("127.0.0.1:0".parse().unwrap()).unwrap();
        let b = Udp::bind("127.0.0.1:0".parse().unwrap()).unwrap();
        let (pa, pb) = (a.local_addr().unwrap(), b.local_addr().unwrap());
        let sizes = [1usize, 60_000, 3, 1500, 0, 40_000, 7, 65_507];
        for (i, n) in sizes.iter().enumerate() {
            a.send_to(&vec![i as u8; *n], pb).await.unwrap();
        }
        let mut buf = vec![0u8; 65_536];
        for (i, n) in sizes.iter().enumerate() {
            let (got, from) = tokio::time::timeout(Duration::from_secs(5), b.recv_from(&mut buf))
                .await
                .expect("a queued datagram was stranded")
                .unwrap();
            assert_eq!((got, from), (*n, pa), "datagram {i}");
            assert!(buf[..got].iter().all(|x| *x == i as u8), "datagram {i}");
        }
        for n in [5000usize, 6000] {
            a.send_to(&vec![9; n], pb).await.unwrap();
        }
        let mut small = [0u8; 100];
        for _ in 0..2 {
            let got = tokio::time::timeout(Duration::from_secs(5), b.recv_from(&mut small)).await;
            assert_eq!(got.expect("stranded").unwrap(), (100, pa));
        }
    }

    /// After a receive that emptied the queue, a datagram sent later still wakes the receiver.
    #[tokio::test]
    async fn a_datagram_after_the_queue_emptied_wakes_the_receiver() {
        let a = Udp::bind("127.0.0.1:0".parse().unwrap()).unwrap();
        let b = Udp::bind("127.0.0.1:0".parse().unwrap()).unwrap();
        let pb = b.local_addr().unwrap();
        let mut buf = [0u8; 64];
        for round in 0..50u8 {
            let late = async {
                if round % 2 == 0 {
                    tokio::time::sleep(Duration::from_millis(2)).await;
                }
                a.send_to(&[round], pb).await.unwrap();
            };
            let ((), got) = tokio::join!(
                late,
                tokio::time::timeout(Duration::from_secs(5), b.recv_from(&mut buf))
            );
            let (n, _) = got.expect("the datagram woke the receiver").unwrap();
            assert_eq!((n, buf[0]), (1, round));
        }
    }

    /// Queued datagrams come out in batches, whole, in order, with their senders.
    #[tokio::test]
    async fn batches_take_what_is_queued() {
        let a = Udp::bind("127.0.0.1:0".parse().unwrap()).unwrap();
        let b = Udp::bind("[::1]:0".parse().unwrap()).unwrap();
        let c = Udp::bind("[::1]:0".parse().unwrap()).unwrap();
        let v4 = Udp::bind("127.0.0.1:0".parse().unwrap()).unwrap();
        v4.send_to(b"four", a.local_addr().unwrap()).await.unwrap();
        let mut batch = RecvBatch::new(4, 2048);
        assert_eq!(a.recv_batch(&mut batch).await.unwrap(), 1);
        assert_eq!(batch.datagram(0), (&b"four"[..], v4.local_addr().unwrap()));
        for i in 0..10u8 {
            b.send_to(&vec![i; 100 + i as usize], c.local_addr().unwrap())
                .await
                .unwrap();
        }
        let mut got = Vec::new();
        while got.len() < 10 {
            let n = tokio::time::timeout(Duration::from_secs(5), c.recv_batch(&mut batch))
                .await
                .expect("stranded")
                .unwrap();
            assert!((1..=4).contains(&n));
            for i in 0..n {
                let (d, from) = batch.datagram(i);
                assert_eq!(from, b.local_addr().unwrap());
                got.push(d.to_vec());
            }
        }
        for (i, d) in got.iter().enumerate() {
            assert_eq!(d, &vec![i as u8; 100 + i]);
        }
    }

    #[tokio::test]
    async fn ipv6_senders_are_reported() {
        let a = Udp::bind("[::1]:0".parse().unwrap()).unwrap();
        let b = Udp::bind("[::1]:0".parse().unwrap()).unwrap();
        a.send_to(b"six", b.local_addr().unwrap()).await.unwrap();
        let mut buf = [0u8; 8];
        let (n, from) = b.recv_from(&mut buf).await.unwrap();
        assert_eq!((&buf[..n], from), (&b"six"[..], a.local_addr().unwrap()));
    }
}
