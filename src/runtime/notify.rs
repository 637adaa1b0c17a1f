//! systemd's readiness and watchdog protocol (sd_notify(3)), without libsystemd: one datagram
//! of `KEY=VALUE` lines to the unix socket named in `$NOTIFY_SOCKET` (a path, or `@name` for
//! the abstract namespace). `READY=1` once the agent has read its configuration and state,
//! `WATCHDOG=1` from the event loop every half of `$WATCHDOG_USEC`, `STOPPING=1` on SIGTERM.
//! Without `$NOTIFY_SOCKET` (not under systemd) nothing is sent.

use std::os::unix::net::{SocketAddr, UnixDatagram};
use std::time::Duration;

/// The socket systemd listens on.
pub struct Notifier {
    sock: UnixDatagram,
    addr: SocketAddr,
}

/// The environment variables of the protocol; the agent's children (hook scripts) do not get
/// them.
pub const ENV_VARS: [&str; 3] = ["NOTIFY_SOCKET", "WATCHDOG_USEC", "WATCHDOG_PID"];

impl Notifier {
    /// The notifier `$NOTIFY_SOCKET` names; `Err` when it names something unusable.
    pub fn from_env() -> Result<Option<Notifier>, String> {
        match std::env::var_os("NOTIFY_SOCKET") {
            None => Ok(None),
            Some(v) => Notifier::new(&v.to_string_lossy()).map(Some),
        }
    }

    /// `name`: an absolute path, or `@` and an abstract-namespace name.
    pub fn new(name: &str) -> Result<Notifier, String> {
        let addr = if let Some(abs) = name.strip_prefix('@') {
            use std::os::linux::net::SocketAddrExt;
            SocketAddr::from_abstract_name(abs.as_bytes())
        } else if name.starts_with('/') {
            SocketAddr::from_pathname(name)
        } else {
            return Err(format!(
                "NOTIFY_SOCKET={name} is neither a path nor an @abstract name"
            ));
        }
        .map_err(|e| format!("NOTIFY_SOCKET={name}: {e}"))?;
        let sock = UnixDatagram::unbound().map_err(|e| format!("notify socket: {e}"))?;
        // A full queue on systemd's side must never stop the event loop.
        sock.set_nonblocking(true)
            .map_err(|e| format!("notify socket: {e}"))?;
        Ok(Notifier { sock, addr })
    }

    /// Sends one notification (`READY=1\nSTATUS=...`).
    pub fn notify(&self, state: &str) -> std::io::Result<()> {
        self.sock
            .send_to_addr(state.as_bytes(), &self.addr)
            .map(|_| ())
    }
}

/// How often to send `WATCHDOG=1`: half of `$WATCHDOG_USEC`, when it is set for this process
/// (`$WATCHDOG_PID` unset or ours).
pub fn watchdog_interval() -> Option<Duration> {
    let usec = std::env::var("WATCHDOG_USEC").ok()?;
    let pid = std::env::var("WATCHDOG_PID").ok();
    watchdog_interval_of(&usec, pid.as_deref(), std::process::id())
}

fn watchdog_interval_of(usec: &str, pid: Option<&str>, me: u32) -> Option<Duration> {
    if let Some(p) = pid {
        if p.trim().parse::<u32>().ok()? != me {
            return None;
        }
    }
    let usec: u64 = usec.trim().parse().ok().filter(|u| *u > 0)?;
    Some(Duration::from_micros(usec / 2).max(Duration::from_millis(1)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_watchdog_interval_is_half_of_watchdog_usec_for_this_process() {
        assert_eq!(
            watchdog_interval_of("30000000", None, 7),
            Some(Duration::from_secs(15))
        );
        assert_eq!(
            watchdog_interval_of("30000000", Some("7"), 7),
            Some(Duration::from_secs(15))
        );
        assert_eq!(watchdog_interval_of("30000000", Some("8"), 7), None);
        assert_eq!(watchdog_interval_of("0", None, 7), None);
        assert_eq!(watchdog_interval_of("x", None, 7), None);
    }

    #[test]
    fn notifications_reach_abstract_and_path_sockets() {
        use std::os::linux::net::SocketAddrExt;
        let name = format!("wtpd-notify-test-{}", std::process::id());
        let listener =
            UnixDatagram::bind_addr(&SocketAddr::from_abstract_name(name.as_bytes()).unwrap())
                .unwrap();
        Notifier::new(&format!("@{name}"))
            .unwrap()
            .notify("READY=1\nSTATUS=joined")
            .unwrap();
        let mut buf = [0u8; 256];
        let n = listener.recv(&mut buf).unwrap();
        assert_eq!(&buf[..n], b"READY=1\nSTATUS=joined");

        let path = std::env::temp_dir().join(format!("{name}.sock"));
        let _ = std::fs::remove_file(&path);
        let listener = UnixDatagram::bind(&path).unwrap();
        Notifier::new(path.to_str().unwrap())
            .unwrap()
            .notify("WATCHDOG=1")
            .unwrap();
        let n = listener.recv(&mut buf).unwrap();
        assert_eq!(&buf[..n], b"WATCHDOG=1");
        let _ = std::fs::remove_file(&path);

        assert!(Notifier::new("relative.sock").is_err());
    }
}
