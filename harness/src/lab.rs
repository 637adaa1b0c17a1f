//! Real image servers on loopback for the tests, the demo and the bench: Debian's tftpd-hpa,
//! OpenSSH's sshd (internal-sftp, chrooted when running as root) and nginx serving HTTPS with
//! a lab certificate. Each runs in the foreground as a child process with its own
//! configuration in a work folder, listens on 127.0.0.1 only, and is killed when its
//! [`LabServer`] is dropped. A missing server binary is an error, never a silent skip.

use std::net::{TcpStream, UdpSocket};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::pki::{CertSpec, Eku, KeyKind};

/// A server process; killed on drop.
pub struct LabServer {
    child: Option<Child>,
    pub port: u16,
    /// The server's work folder (configuration, keys, logs).
    pub work: PathBuf,
    /// The folder the server serves, as the server's clients name paths from
    /// (the chroot for sshd).
    pub root: PathBuf,
    /// sshd: the known_hosts file and the client key; nginx: the CA file.
    pub known_hosts: Option<PathBuf>,
    pub client_key: Option<PathBuf>,
    pub ca_file: Option<PathBuf>,
    /// sshd: the user to log in as.
    pub user: Option<String>,
    cleanup: Option<PathBuf>,
}

impl LabServer {
    /// Stops the server (SIGTERM, then SIGKILL after 2 s) and waits for it; its port then
    /// refuses connections (TCP) or stays silent (UDP).
    pub fn stop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let pid = nix::unistd::Pid::from_raw(c.id() as i32);
            let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM);
            let start = Instant::now();
            while start.elapsed() < Duration::from_secs(2) {
                if let Ok(Some(_)) = c.try_wait() {
                    return;
                }
                std::thread::sleep(Duration::from_millis(20));
            }
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(|c| c.id())
    }
}

impl Drop for LabServer {
    fn drop(&mut self) {
        self.stop();
        if let Some(d) = self.cleanup.take() {
            let _ = std::fs::remove_dir_all(d);
        }
    }
}

fn find_binary(candidates: &[&str], package: &str) -> Result<PathBuf, String> {
    for c in candidates {
        let p = Path::new(c);
        if p.is_file() {
            return Ok(p.to_path_buf());
        }
    }
    Err(format!(
        "{} not found: install the Debian package {package} (.ci/run does)",
        candidates.join(" or ")
    ))
}

fn is_root() -> bool {
    // SAFETY: geteuid has no preconditions and cannot fail.
    unsafe { libc::geteuid() == 0 }
}

fn user_name() -> String {
    if is_root() {
        return "root".into();
    }
    Command::new("id")
        .arg("-un")
        .output()
        .ok()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
        .filter(|s| !s.is_empty())
        .unwrap_or_else(|| "root".into())
}

/// A free port on 127.0.0.1 (UDP or TCP), released for the server to take.
pub fn free_port(udp: bool) -> Result<u16, String> {
    let p = if udp {
        UdpSocket::bind("127.0.0.1:0").and_then(|s| s.local_addr())
    } else {
        std::net::TcpListener::bind("127.0.0.1:0").and_then(|s| s.local_addr())
    };
    p.map(|a| a.port()).map_err(|e| format!("free port: {e}"))
}

fn spawn(bin: &Path, args: &[&str], log: &Path) -> Result<Child, String> {
    let out = std::fs::File::create(log).map_err(|e| format!("{}: {e}", log.display()))?;
    let err = out.try_clone().map_err(|e| e.to_string())?;
    Command::new(bin)
        .args(args)
        .stdin(Stdio::null())
        .stdout(out)
        .stderr(err)
        .spawn()
        .map_err(|e| format!("start {}: {e}", bin.display()))
}

fn wait_ready(
    child: &mut Child,
    log: &Path,
    what: &str,
    mut ready: impl FnMut() -> bool,
) -> Result<(), String> {
    let start = Instant::now();
    while start.elapsed() < Duration::from_secs(10) {
        if let Ok(Some(st)) = child.try_wait() {
            return Err(format!(
                "{what} exited ({st}) at start:\n{}",
                std::fs::read_to_string(log).unwrap_or_default()
            ));
        }
        if ready() {
            return Ok(());
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    Err(format!(
        "{what} did not come up within 10 s:\n{}",
        std::fs::read_to_string(log).unwrap_or_default()
    ))
}

/// tftpd-hpa: `in.tftpd --foreground --secure` on 127.0.0.1, serving `root`.
pub fn tftpd(root: &Path, work: &Path) -> Result<LabServer, String> {
    let bin = find_binary(&["/usr/sbin/in.tftpd"], "tftpd-hpa")?;
    std::fs::create_dir_all(work).map_err(|e| format!("{}: {e}", work.display()))?;
    let root = root
        .canonicalize()
        .map_err(|e| format!("{}: {e}", root.display()))?;
    let log = work.join("tftpd.log");
    for _ in 0..5 {
        let port = free_port(true)?;
        let addr = format!("127.0.0.1:{port}");
        let user = user_name();
        let mut child = spawn(
            &bin,
            &[
                "--foreground",
                "--secure",
                "--verbose",
                "--address",
                &addr,
                "--user",
                &user,
                "--blocksize",
                "65464",
                root.to_str().ok_or("non-UTF-8 path")?,
            ],
            &log,
        )?;
        // Ready when it answers a read request (an error for a file that is not there).
        let probe = UdpSocket::bind("127.0.0.1:0").map_err(|e| e.to_string())?;
        let _ = probe.set_read_timeout(Some(Duration::from_millis(100)));
        let r = wait_ready(&mut child, &log, "in.tftpd", || {
            let _ = probe.send_to(b"\0\x01.wtpd-probe\0octet\0", &addr);
            let mut b = [0u8; 512];
            probe.recv_from(&mut b).is_ok()
        });
        match r {
            Ok(()) => {
                return Ok(LabServer {
                    child: Some(child),
                    port,
                    work: work.to_path_buf(),
                    root,
                    known_hosts: None,
                    client_key: None,
                    ca_file: None,
                    user: None,
                    cleanup: None,
                })
            }
            Err(e) if e.contains("Address already in use") => {
                let _ = child.kill();
                let _ = child.wait();
            }
            Err(e) => {
                let _ = child.kill();
                let _ = child.wait();
                return Err(e);
            }
        }
    }
    Err("in.tftpd: no free port".into())
}

fn run_ok(cmd: &mut Command, what: &str) -> Result<(), String> {
    let out = cmd.output().map_err(|e| format!("{what}: {e}"))?;
    if out.status.success() {
        Ok(())
    } else {
        Err(format!(
            "{what}: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ))
    }
}

/// Copies (or hard-links) the files of `from` into `to`, not recursively.
fn populate(from: &Path, to: &Path) -> Result<(), String> {
    std::fs::create_dir_all(to).map_err(|e| format!("{}: {e}", to.display()))?;
    let rd = std::fs::read_dir(from).map_err(|e| format!("{}: {e}", from.display()))?;
    for e in rd.flatten() {
        let p = e.path();
        if !p.is_file() {
            continue;
        }
        let dst = to.join(e.file_name());
        let _ = std::fs::remove_file(&dst);
        if std::fs::hard_link(&p, &dst).is_err() {
            std::fs::copy(&p, &dst).map_err(|e| format!("copy {}: {e}", p.display()))?;
        }
    }
    Ok(())
}

/// sshd with internal-sftp only, on 127.0.0.1, public-key login for the current user. As
/// root (CI), the session is chrooted (`ChrootDirectory`) into a root-owned folder under /run
/// (sshd requires every component of the chroot path to be root-owned and not writable by
/// others, which /tmp is not) that holds a copy of `images` as `folder`; the URL path is
/// then `/folder/NAME`. Otherwise no chroot: the path is relative to the user's home.
pub fn sshd(images: &Path, folder: &str, work: &Path) -> Result<LabServer, String> {
    start_sshd(images, folder, work, None)
}

/// The account [`sshd_password`] logs in with.
pub const LAB_SSH_USER: &str = "wtpdlab";

/// sshd as [`sshd`], but with password login for the account [`LAB_SSH_USER`] and no public
/// key login. The account exists only for this sshd: it runs in a private mount namespace
/// (`unshare --mount`) where a copy of /etc/passwd with one more line, and a shadow file with
/// only that account (the password hashed by `openssl passwd -6`), are bind-mounted over the
/// real ones; the machine's own account files are never changed, and nothing of its shadow
/// file is copied. Needs root (the mount namespace, and sshd switching to that account), like
/// the chroot; without root it fails and says so.
pub fn sshd_password(
    images: &Path,
    folder: &str,
    work: &Path,
    password: &str,
) -> Result<LabServer, String> {
    if !is_root() {
        return Err(
            "sshd with a password account needs root: it mounts account files \
                    for sshd in a private mount namespace"
                .into(),
        );
    }
    start_sshd(images, folder, work, Some(password))
}

/// Writes the lab's passwd and shadow files; returns the commands that mount them over the
/// real ones inside sshd's mount namespace.
fn lab_account_files(work: &Path, password: &str) -> Result<String, String> {
    let out = Command::new(find_binary(&["/usr/bin/openssl"], "openssl")?)
        .args(["passwd", "-6", "-stdin"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .and_then(|mut c| {
            use std::io::Write;
            if let Some(mut i) = c.stdin.take() {
                i.write_all(format!("{password}\n").as_bytes())?;
            }
            c.wait_with_output()
        })
        .map_err(|e| format!("openssl passwd: {e}"))?;
    let hash = String::from_utf8_lossy(&out.stdout).trim().to_string();
    if !out.status.success() || !hash.starts_with("$6$") {
        return Err(format!(
            "openssl passwd: {}",
            String::from_utf8_lossy(&out.stderr)
        ));
    }
    // passwd: the machine's (sshd needs its privilege-separation user) plus the lab account.
    // shadow: the lab account alone; nothing of the machine's own shadow is copied.
    let real_passwd =
        std::fs::read_to_string("/etc/passwd").map_err(|e| format!("/etc/passwd: {e}"))?;
    let ours = format!("{LAB_SSH_USER}:");
    let mut passwd: String = real_passwd
        .lines()
        .filter(|l| !l.starts_with(&ours))
        .map(|l| format!("{l}\n"))
        .collect();
    passwd.push_str(&format!(
        "{LAB_SSH_USER}:x:64123:65534:wtpd lab:/:/bin/sh\n"
    ));
    let shadow = format!("{LAB_SSH_USER}:{hash}:20000:0:99999:7:::\n");
    let mut mounts = String::new();
    for (name, text, mode) in [("passwd", passwd, 0o644), ("shadow", shadow, 0o600)] {
        use std::io::Write;
        use std::os::unix::fs::OpenOptionsExt;
        let copy = work.join(format!("lab-{name}"));
        let _ = std::fs::remove_file(&copy);
        std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(mode)
            .open(&copy)
            .and_then(|mut f| f.write_all(text.as_bytes()))
            .map_err(|e| format!("{}: {e}", copy.display()))?;
        mounts.push_str(&format!(
            "mount --bind '{}' '/etc/{name}' && ",
            copy.display()
        ));
    }
    Ok(mounts)
}

fn start_sshd(
    images: &Path,
    folder: &str,
    work: &Path,
    password: Option<&str>,
) -> Result<LabServer, String> {
    let bin = find_binary(&["/usr/sbin/sshd"], "openssh-server")?;
    let keygen = find_binary(&["/usr/bin/ssh-keygen"], "openssh-client")?;
    std::fs::create_dir_all(work).map_err(|e| format!("{}: {e}", work.display()))?;
    let work = work
        .canonicalize()
        .map_err(|e| format!("{}: {e}", work.display()))?;
    let host_key = work.join("ssh_host_ed25519_key");
    let client_key = work.join("client_ed25519");
    for k in [&host_key, &client_key] {
        let _ = std::fs::remove_file(k);
        let _ = std::fs::remove_file(k.with_extension("pub"));
        run_ok(
            Command::new(&keygen).args([
                "-q",
                "-t",
                "ed25519",
                "-N",
                "",
                "-C",
                "wtpd-lab",
                "-f",
                k.to_str().ok_or("non-UTF-8 path")?,
            ]),
            "ssh-keygen",
        )?;
    }
    let client_pub = std::fs::read_to_string(client_key.with_extension("pub"))
        .map_err(|e| format!("client key: {e}"))?;
    std::fs::write(work.join("authorized_keys"), &client_pub).map_err(|e| e.to_string())?;
    // sshd's privilege separation folder.
    if is_root() {
        let _ = std::fs::create_dir_all("/run/sshd");
    }
    let (chroot, root, cleanup) = if is_root() {
        let n = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.subsec_nanos())
            .unwrap_or(0);
        let base = PathBuf::from("/run/wtpd-lab");
        let c = base.join(format!("sftp-{}-{n}", std::process::id()));
        std::fs::create_dir_all(&c).map_err(|e| format!("{}: {e}", c.display()))?;
        use std::os::unix::fs::PermissionsExt;
        for d in [&base, &c] {
            let _ = std::fs::set_permissions(d, std::fs::Permissions::from_mode(0o755));
        }
        populate(images, &c.join(folder))?;
        (Some(c.clone()), c.clone(), Some(c))
    } else {
        let home = std::env::var_os("HOME")
            .map(PathBuf::from)
            .ok_or("HOME is not set")?;
        (None, home, None)
    };
    let mounts = match password {
        Some(pw) => Some(lab_account_files(&work, pw)?),
        None => None,
    };
    let pub_line = std::fs::read_to_string(host_key.with_extension("pub"))
        .map_err(|e| format!("host key: {e}"))?;
    let pub_key: Vec<&str> = pub_line.split_whitespace().take(2).collect();
    let log = work.join("sshd.log");
    for _ in 0..5 {
        let port = free_port(false)?;
        let mut conf = format!(
            "Port {port}\nListenAddress 127.0.0.1\nHostKey {}\nPidFile {}\n\
             AuthorizedKeysFile {}\nPubkeyAuthentication {}\nPasswordAuthentication {}\n\
             KbdInteractiveAuthentication no\nUsePAM no\nStrictModes no\n\
             PermitRootLogin prohibit-password\nAllowTcpForwarding no\nX11Forwarding no\n\
             LogLevel VERBOSE\nSubsystem sftp internal-sftp -l VERBOSE\n\
             ForceCommand internal-sftp -l VERBOSE\n",
            host_key.display(),
            work.join("sshd.pid").display(),
            work.join("authorized_keys").display(),
            if password.is_some() { "no" } else { "yes" },
            if password.is_some() { "yes" } else { "no" },
        );
        if password.is_some() {
            conf.push_str(&format!("AllowUsers {LAB_SSH_USER}\n"));
        }
        if let Some(c) = &chroot {
            conf.push_str(&format!("ChrootDirectory {}\n", c.display()));
        }
        let conf_path = work.join("sshd_config");
        std::fs::write(&conf_path, conf).map_err(|e| e.to_string())?;
        let conf_arg = conf_path.to_str().ok_or("non-UTF-8 path")?;
        let mut child = match &mounts {
            None => spawn(&bin, &["-D", "-e", "-f", conf_arg], &log)?,
            // The account files exist only in sshd's own mount namespace; `exec` keeps the
            // child's pid sshd's, so that stopping the child stops sshd.
            Some(m) => spawn(
                &find_binary(&["/usr/bin/unshare"], "util-linux")?,
                &[
                    "--mount",
                    "--propagation",
                    "private",
                    "sh",
                    "-c",
                    &format!("{m}exec '{}' -D -e -f '{conf_arg}'", bin.display()),
                ],
                &log,
            )?,
        };
        let r = wait_ready(&mut child, &log, "sshd", || {
            TcpStream::connect(("127.0.0.1", port)).is_ok()
        });
        match r {
            Ok(()) => {
                let kh = work.join("known_hosts");
                std::fs::write(&kh, format!("[127.0.0.1]:{port} {}\n", pub_key.join(" ")))
                    .map_err(|e| e.to_string())?;
                return Ok(LabServer {
                    child: Some(child),
                    port,
                    work: work.clone(),
                    root: root.clone(),
                    known_hosts: Some(kh),
                    client_key: password.is_none().then(|| client_key.clone()),
                    ca_file: None,
                    user: Some(match password {
                        Some(_) => LAB_SSH_USER.to_string(),
                        None => user_name(),
                    }),
                    cleanup,
                });
            }
            Err(e) if e.contains("Address already in use") => {
                let _ = child.kill();
                let _ = child.wait();
            }
            Err(e) => {
                let _ = child.kill();
                let _ = child.wait();
                if let Some(c) = cleanup {
                    let _ = std::fs::remove_dir_all(c);
                }
                return Err(e);
            }
        }
    }
    Err("sshd: no free port".into())
}

/// nginx serving `root` over HTTPS on 127.0.0.1 with a lab CA and a certificate for
/// `localhost` and 127.0.0.1. One process (`master_process off`), so that stopping it
/// leaves no worker behind.
pub fn nginx(root: &Path, work: &Path) -> Result<LabServer, String> {
    let bin = find_binary(&["/usr/sbin/nginx"], "nginx")?;
    std::fs::create_dir_all(work.join("tmp")).map_err(|e| format!("{}: {e}", work.display()))?;
    let work = work
        .canonicalize()
        .map_err(|e| format!("{}: {e}", work.display()))?;
    let root = root
        .canonicalize()
        .map_err(|e| format!("{}: {e}", root.display()))?;
    let ca = crate::pki::issue(
        &CertSpec::ca("wtpd lab image server CA", KeyKind::EcP256),
        None,
    )
    .map_err(|e| e.to_string())?;
    let mut spec = CertSpec::leaf("localhost", KeyKind::EcP256, &[Eku::ServerAuth]);
    spec.ips = vec![std::net::IpAddr::from([127, 0, 0, 1])];
    let leaf = crate::pki::issue(&spec, Some(&ca)).map_err(|e| e.to_string())?;
    let ca_file = ca
        .write_cert(&work, "image-server-ca")
        .map_err(|e| e.to_string())?;
    let (cert, key) = leaf
        .write(&work, "image-server")
        .map_err(|e| e.to_string())?;
    let log = work.join("nginx.log");
    for _ in 0..5 {
        let port = free_port(false)?;
        let w = work.display();
        let conf = format!(
            "daemon off;\nmaster_process off;\npid {w}/nginx.pid;\n\
             error_log {w}/error.log info;\nevents {{ worker_connections 64; }}\n\
             http {{\n  access_log {w}/access.log;\n  client_body_temp_path {w}/tmp/body;\n\
               proxy_temp_path {w}/tmp/proxy;\n  fastcgi_temp_path {w}/tmp/fastcgi;\n\
               uwsgi_temp_path {w}/tmp/uwsgi;\n  scgi_temp_path {w}/tmp/scgi;\n\
               default_type application/octet-stream;\n  sendfile on;\n\
               server {{\n    listen 127.0.0.1:{port} ssl;\n    server_name localhost;\n\
                 ssl_certificate {};\n    ssl_certificate_key {};\n    root {};\n  }}\n}}\n",
            cert.display(),
            key.display(),
            root.display(),
        );
        let conf_path = work.join("nginx.conf");
        std::fs::write(&conf_path, conf).map_err(|e| e.to_string())?;
        let mut child = spawn(
            &bin,
            &[
                "-p",
                work.to_str().ok_or("non-UTF-8 path")?,
                "-c",
                conf_path.to_str().ok_or("non-UTF-8 path")?,
                "-e",
                work.join("error.log").to_str().ok_or("non-UTF-8 path")?,
            ],
            &log,
        )?;
        let r = wait_ready(&mut child, &log, "nginx", || {
            TcpStream::connect(("127.0.0.1", port)).is_ok()
        });
        match r {
            Ok(()) => {
                return Ok(LabServer {
                    child: Some(child),
                    port,
                    work: work.clone(),
                    root: root.clone(),
                    known_hosts: None,
                    client_key: None,
                    ca_file: Some(ca_file),
                    user: None,
                    cleanup: None,
                })
            }
            Err(e) => {
                let _ = child.kill();
                let _ = child.wait();
                let text = std::fs::read_to_string(work.join("error.log")).unwrap_or_default();
                if !text.contains("Address already in use") {
                    return Err(format!("{e}\n{text}"));
                }
            }
        }
    }
    Err("nginx: no free port".into())
}

/// Serves the image folder of a lab written by [`crate::demo::write_lab`] (`LAB/images`) from
/// a real server of the given kind, as `/images/NAME`; returns the server and the
/// `[image_download]` table that points acsim at it.
pub fn serve_lab_images(
    lab: &Path,
    mode: wtpd::fetch::spool::DownloadMode,
) -> Result<(LabServer, String), String> {
    use wtpd::fetch::spool::DownloadMode;
    let images = lab.join("images");
    std::fs::create_dir_all(&images).map_err(|e| format!("{}: {e}", images.display()))?;
    let work = lab.join("server");
    let toml_path = |p: &Path| {
        p.display()
            .to_string()
            .replace('\\', "\\\\")
            .replace('"', "\\\"")
    };
    match mode {
        DownloadMode::Local => Err("the local mode needs no server".into()),
        DownloadMode::Tftp => {
            // The server sees only a copy (hard links) of the images, not the lab's keys.
            let root = work.join("root");
            populate(&images, &root.join("images"))?;
            let s = tftpd(&root, &work)?;
            let t = format!(
                "[image_download]\nmode = \"tftp\"\nserver = \"127.0.0.1\"\nport = {}\npath = \"/images\"\ntimeout = 1\nretries = 3\n",
                s.port
            );
            Ok((s, t))
        }
        DownloadMode::Sftp => {
            let s = sshd(&images, "images", &work)?;
            if s.cleanup.is_none() {
                return Err(
                    "the SFTP lab server needs root (a chroot that holds the images)".into(),
                );
            }
            let t = format!(
                "[image_download]\nmode = \"sftp\"\nserver = \"127.0.0.1\"\nport = {}\npath = \"/images\"\nuser = \"{}\"\nkey_file = \"{}\"\nknown_hosts = \"{}\"\ntimeout = 3\n",
                s.port,
                s.user.clone().unwrap_or_default(),
                toml_path(s.client_key.as_deref().unwrap_or(Path::new(""))),
                toml_path(s.known_hosts.as_deref().unwrap_or(Path::new(""))),
            );
            Ok((s, t))
        }
        DownloadMode::Https => {
            let root = work.join("root");
            populate(&images, &root.join("images"))?;
            let s = nginx(&root, &work)?;
            let t = format!(
                "[image_download]\nmode = \"https\"\nserver = \"127.0.0.1\"\nport = {}\npath = \"/images\"\nca_file = \"{}\"\ntimeout = 3\n",
                s.port,
                toml_path(s.ca_file.as_deref().unwrap_or(Path::new(""))),
            );
            Ok((s, t))
        }
    }
}
