//! The configuration files of `wtpd` (wtpd.toml) and `acsim` (acsim.toml).
//!
//! Both are TOML; unknown keys are refused so that a typo is an error, not a silent default.
//! Relative paths are taken relative to the file's own folder. `docs/configuration.md` and the
//! files `acsim demo` writes show every key.

use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};

use serde::Deserialize;

use crate::ac::{AcConfig, AcTimers};
use crate::dtls::{Credentials, DtlsConfig};
use crate::wtp::{Identity, Timers};

/// Why a configuration could not be used.
#[derive(Debug)]
pub enum ConfigError {
    Read {
        path: PathBuf,
        error: std::io::Error,
    },
    Parse {
        path: PathBuf,
        error: String,
    },
    Invalid {
        path: PathBuf,
        what: String,
    },
}

impl std::fmt::Display for ConfigError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ConfigError::Read { path, error } => {
                write!(f, "cannot read {}: {error}", path.display())
            }
            ConfigError::Parse { path, error } => write!(f, "{}: {error}", path.display()),
            ConfigError::Invalid { path, what } => write!(f, "{}: {what}", path.display()),
        }
    }
}

impl std::error::Error for ConfigError {}

/// How the DTLS session is authenticated, as written in a config file.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum DtlsMode {
    Certificate,
    Psk,
    /// Lab only: CAPWAP control in clear. Logged as a warning at start.
    Off,
}

/// The `[dtls]` table, shared by both programs.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DtlsSection {
    pub mode: DtlsMode,
    /// Our certificate (chain) and key, PEM.
    pub cert: Option<PathBuf>,
    pub key: Option<PathBuf>,
    /// Trust anchors the peer's chain must reach.
    pub ca: Option<PathBuf>,
    /// The name the controller's certificate must carry (wtpd only).
    pub peer_name: Option<String>,
    pub psk_identity: Option<String>,
    /// The PSK in hex.
    pub psk_key: Option<String>,
    /// OpenSSL cipher list; the default suits the mode.
    pub ciphers: Option<String>,
    /// NSS key log file.
    pub keylog: Option<PathBuf>,
    #[serde(default = "default_mtu")]
    pub mtu: usize,
}

fn default_mtu() -> usize {
    1400
}

impl DtlsSection {
    /// The DTLS configuration, or `None` in `off` mode.
    pub fn to_dtls(&self, path: &Path) -> Result<Option<DtlsConfig>, ConfigError> {
        let invalid = |what: &str| ConfigError::Invalid {
            path: path.to_path_buf(),
            what: what.to_string(),
        };
        let credentials = match self.mode {
            DtlsMode::Off => return Ok(None),
            DtlsMode::Certificate => Credentials::Certificate {
                cert: self
                    .cert
                    .clone()
                    .ok_or_else(|| invalid("dtls.cert is required in certificate mode"))?,
                key: self
                    .key
                    .clone()
                    .ok_or_else(|| invalid("dtls.key is required in certificate mode"))?,
                ca: self
                    .ca
                    .clone()
                    .ok_or_else(|| invalid("dtls.ca is required in certificate mode"))?,
                peer_name: self.peer_name.clone(),
            },
            DtlsMode::Psk => Credentials::Psk {
                identity: self
                    .psk_identity
                    .clone()
                    .ok_or_else(|| invalid("dtls.psk_identity is required in psk mode"))?,
                key: decode_hex(
                    self.psk_key
                        .as_deref()
                        .ok_or_else(|| invalid("dtls.psk_key is required in psk mode"))?,
                )
                .ok_or_else(|| invalid("dtls.psk_key is not hex"))?,
            },
        };
        Ok(Some(DtlsConfig {
            credentials,
            ciphers: self.ciphers.clone(),
            keylog: self.keylog.clone(),
            mtu: self.mtu,
        }))
    }

    fn resolve(&mut self, base: &Path) {
        for p in [
            &mut self.cert,
            &mut self.key,
            &mut self.ca,
            &mut self.keylog,
        ]
        .into_iter()
        .flatten()
        {
            *p = relative_to(base, p);
        }
    }
}

/// Decodes a hex string (no separators).
pub fn decode_hex(s: &str) -> Option<Vec<u8>> {
    let s = s.trim();
    if s.is_empty() || s.len() % 2 != 0 {
        return None;
    }
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(s.get(i..i + 2)?, 16).ok())
        .collect()
}

fn relative_to(base: &Path, p: &Path) -> PathBuf {
    if p.is_absolute() {
        p.to_path_buf()
    } else {
        base.join(p)
    }
}

/// Where log lines go.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LogSection {
    /// `stderr` (the default on a desk), `syslog` (on a device), or a file path.
    #[serde(default)]
    pub target: Option<String>,
    /// `error`, `warn`, `info` (default), `debug`, `trace`.
    #[serde(default)]
    pub level: Option<String>,
}

/// How wtpd finds controllers (RFC 5415 §3.3).
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct DiscoverySection {
    /// Controllers as `HOST:PORT` or `HOST` (port 5246); names are resolved through DNS at each
    /// Discovery round.
    pub controllers: Vec<String>,
    /// The file the board's DHCP hook writes (option 43 / addresses), read at each round.
    pub dhcp_file: Option<PathBuf>,
    /// Send to 255.255.255.255 as a last resort.
    pub broadcast: bool,
}

impl Default for DiscoverySection {
    fn default() -> Self {
        DiscoverySection {
            controllers: Vec::new(),
            dhcp_file: None,
            broadcast: true,
        }
    }
}

/// The software the WTP runs (until the board state knows better).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SoftwareSection {
    pub version: String,
    pub backup: Option<String>,
}

/// Where and how images are downloaded (the seed's /tmp/part.tar).
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct DownloadSection {
    /// The download directory.
    pub dir: PathBuf,
    /// The file name in it.
    pub file: String,
    /// Bytes PRECHECK adds to the image size.
    pub margin: u64,
    /// Bytes PRECHECK requires when the controller did not give the size.
    pub required_bytes: u64,
    /// First retry delay after a failure, doubling up to `retry_max`, with jitter.
    #[serde(with = "crate::time::secs")]
    pub retry_base: std::time::Duration,
    #[serde(with = "crate::time::secs")]
    pub retry_max: std::time::Duration,
    /// What happens to a complete image.
    pub install: InstallMethod,
    /// Where the image goes while it arrives: the download file, or straight into the
    /// inactive slot.
    pub mode: DownloadMode,
}

/// Where a download goes while it arrives (docs/ab-update.md, "Slot mode").
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum DownloadMode {
    /// The download file (the seed's /tmp/part.tar), verified whole, then installed.
    #[default]
    Tmp,
    /// The inactive slot, as Image Data blocks arrive, once the signed head verified: for
    /// boards whose /tmp (RAM) is smaller than the image. Needs A/B slots.
    Slot,
}

/// What the agent does with a complete, checked download.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum InstallMethod {
    /// Leave it in the download directory and reset (a board without partitions to write, such
    /// as the simulated one): the image can be inspected or installed by other means.
    #[default]
    None,
    /// Refuse it: the download is removed, the failure recorded and retried.
    Refuse,
}

impl Default for DownloadSection {
    fn default() -> Self {
        let p = crate::wtp::DownloadPolicy::default();
        DownloadSection {
            dir: PathBuf::from("/tmp"),
            file: "part.tar".into(),
            margin: 1024 * 1024,
            required_bytes: p.required_bytes,
            retry_base: p.retry_base,
            retry_max: p.retry_max,
            install: InstallMethod::None,
            mode: DownloadMode::Tmp,
        }
    }
}

impl DownloadSection {
    pub fn policy(&self) -> crate::wtp::DownloadPolicy {
        crate::wtp::DownloadPolicy {
            required_bytes: self.required_bytes,
            retry_base: self.retry_base,
            retry_max: self.retry_max,
        }
    }
}

/// What the agent does for a Reset (RFC 5415 §9.2).
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum RebootMethod {
    /// reboot(2): a real device.
    Syscall,
    /// Exit with status 75 for a supervisor to restart the agent: a simulated board.
    #[default]
    Exit,
}

/// How images are checked before they are installed.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ImageSection {
    /// Trust anchors (PEM) the image signer's chain must reach.
    pub trust: Vec<PathBuf>,
    /// Accept images older than the running version.
    pub allow_downgrade: bool,
}

/// The board's hook scripts (`[hooks]`).
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct HooksSection {
    /// The seed's `upgrade.sh`: called with one argument, PRECHECK, PREDOWNLOAD, UPGRADE,
    /// ABORT, ACTIVATE or MARK_GOOD (docs/configuration.md, "The upgrade hook").
    pub upgrade: Option<PathBuf>,
    /// How long one call may take; then its process group is killed and the call failed.
    #[serde(with = "crate::time::secs")]
    pub timeout: std::time::Duration,
}

impl Default for HooksSection {
    fn default() -> Self {
        HooksSection {
            upgrade: None,
            timeout: std::time::Duration::from_secs(30),
        }
    }
}

/// What the agent does in a fleet upgrade (`[fleet]`, docs/fleet.md).
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct FleetSection {
    /// Offer out-of-band downloads to the controller: TFTP from the site's primary AP, and
    /// HTTPS when the binary has it. Off: CAPWAP Image Data only, no fleet element sent.
    pub enabled: bool,
    /// Where the TFTP server that serves the staged image to subordinates listens, on the LAN
    /// (port 69 on a device). Absent: this AP never serves (it cannot be a primary). With an
    /// unspecified address (0.0.0.0) the address towards the controller is advertised.
    pub serve: Option<SocketAddr>,
    /// Subordinates served at once; more get a TFTP "busy" error and try again later.
    pub max_transfers: usize,
    /// Out-of-band attempts before asking the controller for CAPWAP Image Data.
    pub max_retries: u16,
    /// The random wait between attempts, in seconds: drawn from [backoff_min, backoff_max].
    #[serde(with = "crate::time::secs")]
    pub backoff_min: std::time::Duration,
    #[serde(with = "crate::time::secs")]
    pub backoff_max: std::time::Duration,
}

impl Default for FleetSection {
    fn default() -> Self {
        let p = crate::wtp::fleet::FleetPolicy::default();
        FleetSection {
            enabled: false,
            serve: None,
            max_transfers: 3,
            max_retries: p.max_retries,
            backoff_min: p.backoff_min,
            backoff_max: p.backoff_max,
        }
    }
}

impl FleetSection {
    pub fn policy(&self) -> crate::wtp::fleet::FleetPolicy {
        crate::wtp::fleet::FleetPolicy {
            enabled: self.enabled,
            https: cfg!(feature = "https"),
            max_retries: self.max_retries,
            backoff_min: self.backoff_min.min(self.backoff_max),
            backoff_max: self.backoff_max,
        }
    }
}

/// wtpd.toml.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WtpdConfig {
    pub wtp: Identity,
    /// The running and backup versions, for an agent without a board file (with one, the
    /// U-Boot environment says them).
    pub software: Option<SoftwareSection>,
    /// The board file (board/*.toml): image type, radios, slots, environment, reboot.
    pub board: Option<PathBuf>,
    #[serde(default)]
    pub image: ImageSection,
    #[serde(default)]
    pub discovery: DiscoverySection,
    pub dtls: DtlsSection,
    #[serde(default)]
    pub timers: Timers,
    #[serde(default)]
    pub log: LogSection,
    /// Local address for the control socket (`0.0.0.0:0` picks any port).
    #[serde(default = "any_addr")]
    pub bind: SocketAddr,
    #[serde(default)]
    pub reboot: RebootMethod,
    /// Overrides the board's [download]; defaults apply when neither has one.
    pub download: Option<DownloadSection>,
    /// Folder for the agent's state files.
    pub state_dir: Option<PathBuf>,
    /// Credentials, trust and timeouts for `wtpd fetch URL`.
    #[serde(default)]
    pub fetch: crate::fetch::FetchSection,
    /// The board's hook scripts.
    #[serde(default)]
    pub hooks: HooksSection,
    /// Fleet upgrades: out-of-band downloads, serving subordinates.
    #[serde(default)]
    pub fleet: FleetSection,
}

fn any_addr() -> SocketAddr {
    SocketAddr::from(([0, 0, 0, 0], 0))
}

/// acsim.toml.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AcsimConfig {
    #[serde(default = "default_ac_name")]
    pub name: String,
    /// Control channel address; the data channel is the next port.
    #[serde(default = "default_listen")]
    pub listen: SocketAddr,
    /// The controller's software version.
    #[serde(default = "default_version")]
    pub version: String,
    /// The image version named in Join Responses; by default the `version.info` of
    /// `image_dir`, or none.
    pub image_version: Option<String>,
    /// Name the image in Join Responses (download at Join); false leaves it to predownload.
    #[serde(default = "yes")]
    pub image_at_join: bool,
    /// The image folder: one file per AP hardware type (`ap1g8`, ...) plus `version.info`.
    pub image_dir: Option<PathBuf>,
    /// Where images come from: `image_dir` (mode "local", the default) or a TFTP, SFTP or
    /// HTTPS server (docs/image-servers.md).
    #[serde(default)]
    pub image_download: crate::fetch::spool::ImageDownloadProfile,
    /// Bytes per Image Data block.
    #[serde(default = "default_block_size")]
    pub block_size: usize,
    /// Fault switches for tests.
    #[serde(default)]
    pub faults: crate::ac::Faults,
    /// Unix socket for `acsim predownload`, `activate` and `reset`.
    pub control_socket: Option<PathBuf>,
    #[serde(default = "default_max_wtps")]
    pub max_wtps: u16,
    /// Image Data transfers under way at once; the others wait, shown as Initiated.
    #[serde(default = "default_max_transfers")]
    pub max_transfers: u32,
    /// Result Code of every Join Response: 0 accepts, e.g. 8 refuses "WTP hardware not supported".
    #[serde(default)]
    pub join_result: u32,
    pub dtls: DtlsSection,
    #[serde(default)]
    pub timers: AcTimers,
    /// Decrypted CAPWAP messages as UDP 5246/5247 frames.
    pub pcap: Option<PathBuf>,
    /// Written on every change: the table `acsim status` prints.
    pub status_file: Option<PathBuf>,
    #[serde(default)]
    pub log: LogSection,
    /// Fleet upgrades: sites, primaries, out-of-band HTTPS (docs/fleet.md).
    #[serde(default)]
    pub fleet: AcsimFleetSection,
}

/// acsim.toml `[fleet]`.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct AcsimFleetSection {
    /// Efficient upgrade: per site and hardware type one primary AP downloads from acsim and
    /// the others from it over TFTP.
    pub efficient: bool,
    /// Serve `image_dir` over HTTPS here and tell APs (and primaries) to fetch out of band.
    pub https_listen: Option<SocketAddr>,
    /// The HTTPS server's certificate chain (PEM, leaf first) and key; APs trust the leaf by
    /// its SHA-256, which acsim tells them with the URL.
    pub https_cert: Option<PathBuf>,
    pub https_key: Option<PathBuf>,
    /// The base URL told to APs; `https://<https_listen>` by default.
    pub https_url: Option<String>,
    /// The sites; APs no site lists are in site "default".
    pub site: Vec<AcsimSite>,
}

/// One `[[fleet.site]]`.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct AcsimSite {
    pub name: String,
    /// AP names or base MAC addresses.
    pub aps: Vec<String>,
    /// The operator's primary per hardware type: `{ ap1g8 = "wtp-3" }`.
    pub primary: std::collections::BTreeMap<String, String>,
    /// The base URL this site's APs are given for HTTPS (a site proxy); the global one when
    /// absent.
    pub https_url: Option<String>,
}

impl AcsimFleetSection {
    /// SHA-256 of the HTTPS certificate's leaf (DER), the trust anchor APs are told.
    pub fn pin(&self) -> Result<Option<[u8; 32]>, String> {
        let Some(path) = &self.https_cert else {
            return Ok(None);
        };
        let pem = std::fs::read(path).map_err(|e| format!("{}: {e}", path.display()))?;
        let cert = openssl::x509::X509::from_pem(&pem)
            .map_err(|e| format!("{}: not a PEM certificate: {e}", path.display()))?;
        let der = cert.to_der().map_err(|e| e.to_string())?;
        Ok(Some(crate::image::sha256::sha256(&der)))
    }

    /// The state machine's part.
    pub fn fleet_config(&self) -> crate::ac::FleetConfig {
        crate::ac::FleetConfig {
            efficient: self.efficient,
            https: self.https_listen.map(|listen| crate::ac::HttpsSource {
                base: self
                    .https_url
                    .clone()
                    .unwrap_or_else(|| format!("https://{listen}")),
                pin: self.pin().ok().flatten(),
            }),
            sites: self
                .site
                .iter()
                .map(|s| crate::ac::Site {
                    name: s.name.clone(),
                    members: s.aps.clone(),
                    primaries: s
                        .primary
                        .iter()
                        .map(|(t, w)| (t.clone(), w.clone()))
                        .collect(),
                    https_url: s.https_url.clone(),
                })
                .collect(),
        }
    }
}

fn default_ac_name() -> String {
    "acsim".into()
}
fn default_listen() -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], 5246))
}
fn default_version() -> String {
    "1.0.0".into()
}
fn yes() -> bool {
    true
}
fn default_block_size() -> usize {
    1024
}
fn default_max_wtps() -> u16 {
    1000
}

fn default_max_transfers() -> u32 {
    10
}

fn read(path: &Path) -> Result<String, ConfigError> {
    std::fs::read_to_string(path).map_err(|error| ConfigError::Read {
        path: path.to_path_buf(),
        error,
    })
}

fn base_of(path: &Path) -> PathBuf {
    path.parent().map(Path::to_path_buf).unwrap_or_default()
}

impl WtpdConfig {
    pub fn load(path: &Path) -> Result<Self, ConfigError> {
        Self::parse(&read(path)?, path)
    }

    pub fn parse(text: &str, path: &Path) -> Result<Self, ConfigError> {
        let mut c: WtpdConfig = toml::from_str(text).map_err(|e| ConfigError::Parse {
            path: path.to_path_buf(),
            error: e.to_string(),
        })?;
        let base = base_of(path);
        c.dtls.resolve(&base);
        if let Some(p) = &mut c.discovery.dhcp_file {
            *p = relative_to(&base, p);
        }
        c.fetch.resolve(&base);
        if let Some(b) = &mut c.board {
            *b = relative_to(&base, b);
        }
        for t in &mut c.image.trust {
            *t = relative_to(&base, t);
        }
        if c.software.is_none() && c.board.is_none() {
            return Err(ConfigError::Invalid {
                path: path.to_path_buf(),
                what: "either [software] or a board file (board = ...) must say the versions"
                    .into(),
            });
        }
        if let Some(d) = &mut c.download {
            d.dir = relative_to(&base, &d.dir);
            if d.file.is_empty() || d.file.contains('/') {
                return Err(ConfigError::Invalid {
                    path: path.to_path_buf(),
                    what: format!("download.file '{}' must be a plain file name", d.file),
                });
            }
        }
        if let Some(p) = &mut c.state_dir {
            *p = relative_to(&base, p);
        }
        if let Some(p) = &mut c.hooks.upgrade {
            *p = relative_to(&base, p);
        }
        if c.hooks.timeout.is_zero() {
            return Err(ConfigError::Invalid {
                path: path.to_path_buf(),
                what: "hooks.timeout must be more than 0 seconds".into(),
            });
        }
        if crate::wtp::config::parse_mac(&c.wtp.base_mac).is_none() {
            return Err(ConfigError::Invalid {
                path: path.to_path_buf(),
                what: format!("wtp.base_mac '{}' is not a MAC address", c.wtp.base_mac),
            });
        }
        if c.wtp.radios.is_empty() {
            return Err(ConfigError::Invalid {
                path: path.to_path_buf(),
                what: "wtp.radios is empty".into(),
            });
        }
        c.dtls.to_dtls(path)?;
        Ok(c)
    }
}

impl AcsimConfig {
    pub fn load(path: &Path) -> Result<Self, ConfigError> {
        Self::parse(&read(path)?, path)
    }

    pub fn parse(text: &str, path: &Path) -> Result<Self, ConfigError> {
        let mut c: AcsimConfig = toml::from_str(text).map_err(|e| ConfigError::Parse {
            path: path.to_path_buf(),
            error: e.to_string(),
        })?;
        let base = base_of(path);
        c.dtls.resolve(&base);
        if !(1..=65000).contains(&c.block_size) {
            return Err(ConfigError::Invalid {
                path: path.to_path_buf(),
                what: format!("block_size {} is not within 1..=65000", c.block_size),
            });
        }
        for p in [
            &mut c.pcap,
            &mut c.status_file,
            &mut c.image_dir,
            &mut c.control_socket,
        ]
        .into_iter()
        .flatten()
        {
            *p = relative_to(&base, p);
        }
        c.image_download.resolve(&base);
        c.image_download
            .check()
            .map_err(|what| ConfigError::Invalid {
                path: path.to_path_buf(),
                what,
            })?;
        c.dtls.to_dtls(path)?;
        for p in [&mut c.fleet.https_cert, &mut c.fleet.https_key]
            .into_iter()
            .flatten()
        {
            *p = relative_to(&base, p);
        }
        if c.fleet.https_listen.is_some()
            && (c.fleet.https_cert.is_none() || c.fleet.https_key.is_none())
        {
            return Err(ConfigError::Invalid {
                path: path.to_path_buf(),
                what: "fleet.https_listen needs fleet.https_cert and fleet.https_key".into(),
            });
        }
        c.fleet.pin().map_err(|what| ConfigError::Invalid {
            path: path.to_path_buf(),
            what,
        })?;
        Ok(c)
    }

    /// The image version to name in Join Responses: the configured one, else the image
    /// folder's `version.info`.
    pub fn served_version(&self) -> Result<Option<String>, crate::image::source::SourceError> {
        match (&self.image_version, &self.image_dir) {
            (Some(v), _) => Ok(Some(v.clone())),
            (None, Some(dir)) => crate::image::source::folder_version(dir).map(Some),
            (None, None) => Ok(None),
        }
    }

    /// The AC state machine's configuration.
    pub fn ac_config(&self) -> AcConfig {
        AcConfig {
            name: self.name.clone(),
            vendor_id: crate::capwap::vendor::EXAMPLE_ENTERPRISE,
            version: self.version.clone(),
            image_version: self.image_version.clone(),
            image_at_join: self.image_at_join,
            max_wtps: self.max_wtps,
            max_transfers: self.max_transfers,
            psk: self.dtls.mode == DtlsMode::Psk,
            join_result: self.join_result,
            control_address: Some(self.listen.ip()).filter(|ip: &IpAddr| !ip.is_unspecified()),
            timers: self.timers.clone(),
            block_size: self.block_size,
            faults: self.faults.clone(),
            fleet: self.fleet.fleet_config(),
        }
    }
}

impl LogSection {
    /// The log target and level this section asks for; `ident` names the program in syslog.
    pub fn resolve(
        &self,
        ident: &str,
    ) -> Result<(crate::logging::LogTarget, log::LevelFilter), String> {
        use crate::logging::LogTarget;
        let target = match self.target.as_deref() {
            None | Some("stderr") => LogTarget::Stderr,
            Some("syslog") => LogTarget::Syslog {
                ident: ident.to_string(),
            },
            Some(path) => LogTarget::File(PathBuf::from(path)),
        };
        let level = match self.level.as_deref().unwrap_or("info") {
            "error" => log::LevelFilter::Error,
            "warn" => log::LevelFilter::Warn,
            "info" => log::LevelFilter::Info,
            "debug" => log::LevelFilter::Debug,
            "trace" => log::LevelFilter::Trace,
            other => {
                return Err(format!(
                    "log.level '{other}' is not one of error, warn, info, debug, trace"
                ))
            }
        };
        Ok((target, level))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const WTPD: &str = r#"
bind = "127.0.0.1:0"
[wtp]
name = "wtp-1"
base_mac = "02:00:00:00:00:07"
image_type = "ap1g8"
radios = [{ id = 1, radio_type = 13 }]
[software]
version = "17.3.3.26"
backup = "8.10.130.0"
[discovery]
controllers = ["127.0.0.1:5246", "acsim.lab"]
dhcp_file = "dhcp-acs"
[dtls]
mode = "certificate"
cert = "pki/wtp.pem"
key = "pki/wtp.key"
ca = "/etc/wtpd/ca.pem"
peer_name = "acsim.lab"
[timers]
echo_interval = 2
"#;

    #[test]
    fn wtpd_config_parses_and_resolves_paths() {
        let c = WtpdConfig::parse(WTPD, Path::new("/lab/wtpd.toml")).unwrap();
        assert_eq!(c.wtp.name, "wtp-1");
        assert_eq!(c.software.unwrap().backup.as_deref(), Some("8.10.130.0"));
        assert_eq!(c.dtls.cert.as_deref(), Some(Path::new("/lab/pki/wtp.pem")));
        assert_eq!(c.dtls.ca.as_deref(), Some(Path::new("/etc/wtpd/ca.pem")));
        assert_eq!(
            c.discovery.dhcp_file.as_deref(),
            Some(Path::new("/lab/dhcp-acs"))
        );
        assert_eq!(c.timers.echo_interval.as_secs(), 2);
        assert_eq!(c.timers.max_retransmit, 5, "RFC default kept");
        assert_eq!(c.reboot, RebootMethod::Exit);
    }

    #[test]
    fn wtpd_config_refusals_say_why() {
        let bad_key = WTPD.replace("echo_interval", "echo_intervl");
        let e = WtpdConfig::parse(&bad_key, Path::new("w.toml"))
            .unwrap_err()
            .to_string();
        assert!(e.contains("echo_intervl"), "{e}");
        let bad_mac = WTPD.replace("02:00:00:00:00:07", "02:00");
        let e = WtpdConfig::parse(&bad_mac, Path::new("w.toml"))
            .unwrap_err()
            .to_string();
        assert!(e.contains("not a MAC address"), "{e}");
        let no_ca = WTPD.replace("ca = \"/etc/wtpd/ca.pem\"\n", "");
        let e = WtpdConfig::parse(&no_ca, Path::new("w.toml"))
            .unwrap_err()
            .to_string();
        assert!(e.contains("dtls.ca is required"), "{e}");
        let psk = WTPD.replace(
            "mode = \"certificate\"",
            "mode = \"psk\"\npsk_identity = \"x\"\npsk_key = \"zz\"",
        );
        let e = WtpdConfig::parse(&psk, Path::new("w.toml"))
            .unwrap_err()
            .to_string();
        assert!(e.contains("not hex"), "{e}");
    }

    #[test]
    fn hooks_section_defaults_and_resolves() {
        let c = WtpdConfig::parse(WTPD, Path::new("/lab/wtpd.toml")).unwrap();
        assert_eq!(c.hooks.upgrade, None);
        assert_eq!(c.hooks.timeout.as_secs(), 30);
        let with = format!("{WTPD}[hooks]\nupgrade = \"upgrade.sh\"\ntimeout = 2.5\n");
        let c = WtpdConfig::parse(&with, Path::new("/lab/wtpd.toml")).unwrap();
        assert_eq!(
            c.hooks.upgrade.as_deref(),
            Some(Path::new("/lab/upgrade.sh"))
        );
        assert_eq!(c.hooks.timeout.as_millis(), 2500);
        let zero = format!("{WTPD}[hooks]\ntimeout = 0\n");
        let e = WtpdConfig::parse(&zero, Path::new("w.toml"))
            .unwrap_err()
            .to_string();
        assert!(e.contains("hooks.timeout"), "{e}");
    }

    #[test]
    fn hex_decoding() {
        assert_eq!(decode_hex("00ff10"), Some(vec![0, 255, 16]));
        assert_eq!(decode_hex("0"), None);
        assert_eq!(decode_hex("zz"), None);
        assert_eq!(decode_hex(""), None);
    }
}
