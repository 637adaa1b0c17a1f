//! The log lines a peer can cause once per datagram, rate-limited by one process-wide
//! [`RateLimiter`]: a few lines of each kind and peer, then "N more suppressed".
//!
//! Process-wide because the lines come from everywhere in the drivers, free functions
//! included (a failed `send`), which have no state to carry a limiter in; the `log` facade the
//! lines go to is process-wide too. The limiter's clock is the time since its first use.

use std::net::SocketAddr;
use std::sync::{Mutex, OnceLock};

use crate::ratelimit::{Limits, RateLimiter, Summary};
use crate::time::Instant;

static LIMITER: Mutex<Option<RateLimiter<Option<SocketAddr>>>> = Mutex::new(None);

fn now() -> Instant {
    static ORIGIN: OnceLock<std::time::Instant> = OnceLock::new();
    Instant::from_duration(ORIGIN.get_or_init(std::time::Instant::now).elapsed())
}

fn with<T>(f: impl FnOnce(&mut RateLimiter<Option<SocketAddr>>, Instant) -> T) -> T {
    let mut g = LIMITER.lock().unwrap_or_else(|e| e.into_inner());
    let r = g.get_or_insert_with(|| RateLimiter::new(Limits::default()));
    f(r, now())
}

fn report(summaries: impl IntoIterator<Item = Summary>) {
    for s in summaries {
        log::warn!("{s}");
    }
}

/// Whether a line of `kind` about `peer` may be logged now; logs the summaries of windows
/// that ended first.
pub(crate) fn allow(kind: &'static str, peer: Option<SocketAddr>) -> bool {
    let (check, expired) = with(|r, now| {
        let c = r.check(kind, peer, now);
        (c, r.expire(now))
    });
    report(check.ended.into_iter().chain(expired));
    check.log
}

/// Logs the summaries of windows that have ended (the drivers call it now and then, so that
/// the count of a flood that stopped is not held back until the next line of its kind).
pub(crate) fn flush() {
    report(with(|r, now| r.expire(now)));
}

/// Logs what was suppressed in the windows still open (at exit).
pub(crate) fn finish() {
    report(with(|r, now| r.finish(now)));
}

/// `log!` at `level` for a line of `kind` about `peer` (a `SocketAddr`, or `None`), within the
/// kind's rate limit.
macro_rules! limited {
    ($level:expr, $kind:expr, $peer:expr, $($arg:tt)+) => {
        if $crate::runtime::warnings::allow($kind, $peer) {
            log::log!($level, $($arg)+);
        }
    };
}

/// [`limited!`] at warning level.
macro_rules! limited_warn {
    ($kind:expr, $peer:expr, $($arg:tt)+) => {
        limited!(log::Level::Warn, $kind, $peer, $($arg)+)
    };
}
