//! SFTP download through libssh2 (the `ssh2` crate): host key checked against a known_hosts
//! file or a pinned SHA-256 fingerprint (or, lab only, accepted with a warning), password or
//! public-key authentication, then `stat` for the size and a streamed read.
//!
//! The URL's path is taken relative to the login directory, as the seed's server log shows
//! (`sftp://*****@172.16.5.62/Documents/sftp_files/...` read as
//! `/home/calo/Documents/sftp_files/...`); a chrooted internal-sftp user starts at the root
//! of the chroot, where relative and absolute paths are the same.

use std::io::Read;
use std::path::Path;

use log::{debug, warn};
use ssh2::{CheckResult, ErrorCode, HashType, KnownHostFileKind, Session};

use super::{connect_tcp, FetchError, FetchErrorKind, FetchOptions, FetchUrl, Sink};

/// libssh2's error codes that matter here (libssh2.h).
const LIBSSH2_ERROR_TIMEOUT: i32 = -9;
const LIBSSH2_ERROR_SOCKET_RECV: i32 = -43;
const LIBSSH2_FX_NO_SUCH_FILE: i32 = 2;
const LIBSSH2_FX_PERMISSION_DENIED: i32 = 3;
const LIBSSH2_FX_NO_SUCH_PATH: i32 = 10;

fn kind_of(e: &ssh2::Error) -> FetchErrorKind {
    match e.code() {
        ErrorCode::SFTP(LIBSSH2_FX_NO_SUCH_FILE | LIBSSH2_FX_NO_SUCH_PATH) => {
            FetchErrorKind::NotFound
        }
        ErrorCode::SFTP(LIBSSH2_FX_PERMISSION_DENIED) => {
            FetchErrorKind::Refused("Permission denied".into())
        }
        ErrorCode::Session(LIBSSH2_ERROR_TIMEOUT) => FetchErrorKind::TimedOut,
        ErrorCode::Session(LIBSSH2_ERROR_SOCKET_RECV) => {
            FetchErrorKind::Protocol(format!("connection lost: {}", e.message()))
        }
        _ => FetchErrorKind::Protocol(e.message().to_string()),
    }
}

/// `SHA256:base64` without padding, as `ssh-keygen -l` prints it.
fn fingerprint(session: &Session) -> String {
    let hash = session.host_key_hash(HashType::Sha256).unwrap_or(&[]);
    format!("SHA256:{}", super::base64(hash).trim_end_matches('='))
}

fn check_host_key(
    session: &Session,
    url: &FetchUrl,
    opts: &FetchOptions,
) -> Result<(), FetchErrorKind> {
    let fp = fingerprint(session);
    if let Some(pin) = &opts.host_key_sha256 {
        let pin = pin.trim().trim_end_matches('=');
        return if pin == fp {
            Ok(())
        } else {
            Err(FetchErrorKind::HostKey(format!(
                "{} offers {fp}, pinned {pin}",
                url.authority()
            )))
        };
    }
    if let Some(file) = &opts.known_hosts {
        let (key, _) = session
            .host_key()
            .ok_or_else(|| FetchErrorKind::HostKey("the server sent no host key".into()))?;
        let mut kh = session
            .known_hosts()
            .map_err(|e| FetchErrorKind::Io(e.message().to_string()))?;
        kh.read_file(file, KnownHostFileKind::OpenSSH)
            .map_err(|e| FetchErrorKind::Io(format!("{}: {}", file.display(), e.message())))?;
        return match kh.check_port(&url.host, url.port, key) {
            CheckResult::Match => Ok(()),
            CheckResult::Mismatch => Err(FetchErrorKind::HostKey(format!(
                "{} offers {fp}, which differs from the key in {}",
                url.authority(),
                file.display()
            ))),
            CheckResult::NotFound => Err(FetchErrorKind::HostKey(format!(
                "{} ({fp}) is not in {}",
                url.authority(),
                file.display()
            ))),
            CheckResult::Failure => Err(FetchErrorKind::HostKey(format!(
                "cannot check {} against {}",
                url.authority(),
                file.display()
            ))),
        };
    }
    if opts.accept_any_host_key {
        warn!(
            "{url}: accepting host key {fp} of {} unchecked (accept_any_host_key: lab use only)",
            url.authority()
        );
        return Ok(());
    }
    Err(FetchErrorKind::HostKey(format!(
        "no known_hosts file or pinned key configured; {} offers {fp}",
        url.authority()
    )))
}

fn authenticate(session: &Session, user: &str, opts: &FetchOptions) -> Result<(), FetchErrorKind> {
    let mut tried = Vec::new();
    if let Some(key) = &opts.key_file {
        tried.push("publickey");
        match session.userauth_pubkey_file(user, None, key, None) {
            Ok(()) => return Ok(()),
            Err(e) => debug!("public key {} refused: {}", key.display(), e.message()),
        }
    }
    if let Some(pw) = &opts.password {
        tried.push("password");
        match session.userauth_password(user, pw) {
            Ok(()) => return Ok(()),
            Err(e) => debug!("password refused: {}", e.message()),
        }
    }
    if tried.is_empty() {
        return Err(FetchErrorKind::Auth(
            "no password or key file configured".into(),
        ));
    }
    // The user is not named: like the URL's, it stays out of logs and status.
    Err(FetchErrorKind::Auth(format!(
        "the server refused the login (tried {})",
        tried.join(", ")
    )))
}

/// The path on the server: relative to the login directory.
fn remote_path(url: &FetchUrl) -> &Path {
    Path::new(url.path.trim_start_matches('/'))
}

/// Downloads `url` (an `sftp://` URL) into `sink`.
pub fn fetch(url: &FetchUrl, opts: &FetchOptions, sink: &mut dyn Sink) -> Result<u64, FetchError> {
    let err = |k: FetchErrorKind| FetchError::new(url, k);
    let user = url
        .user
        .clone()
        .or_else(|| opts.user.clone())
        .ok_or_else(|| {
            err(FetchErrorKind::Auth(
                "no user in the URL or configuration".into(),
            ))
        })?;
    let tcp = connect_tcp(url, opts)?;
    let mut session = Session::new().map_err(|e| err(kind_of(&e)))?;
    session.set_timeout(opts.timeout.as_millis().clamp(1, u32::MAX as u128) as u32);
    session.set_tcp_stream(tcp);
    session.handshake().map_err(|e| err(kind_of(&e)))?;
    check_host_key(&session, url, opts).map_err(err)?;
    authenticate(&session, &user, opts).map_err(err)?;
    let sftp = session.sftp().map_err(|e| err(kind_of(&e)))?;
    let path = remote_path(url);
    let stat = sftp.stat(path).map_err(|e| err(kind_of(&e)))?;
    if stat.is_dir() {
        return Err(err(FetchErrorKind::Refused("Is a directory".into())));
    }
    let mut file = sftp.open(path).map_err(|e| err(kind_of(&e)))?;
    sink.begin(stat.size).map_err(err)?;
    let mut buf = vec![0u8; 64 * 1024];
    let mut total = 0u64;
    loop {
        let n = match file.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) => {
                let k = match e.kind() {
                    std::io::ErrorKind::TimedOut => FetchErrorKind::TimedOut,
                    _ => FetchErrorKind::Protocol(format!("read: {e}")),
                };
                return Err(err(k));
            }
        };
        sink.data(&buf[..n]).map_err(err)?;
        total += n as u64;
    }
    drop(file);
    let _ = session.disconnect(None, "done", None);
    if let Some(size) = stat.size {
        if size != total {
            return Err(err(FetchErrorKind::SizeMismatch {
                expected: size,
                got: total,
            }));
        }
    }
    Ok(total)
}
