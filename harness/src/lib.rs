//! The lab around wtpd, kept out of the agent: nothing here is compiled into a `wtpd` build
//! (the board binary included). `acsim` (this package's binary), wtpd's integration tests and
//! the bench use it, as rustls keeps `rustls-test/` and RAUC its `test/` apart.
//!
//! [`pki`] makes a lab PKI (DTLS and image-signing chains), [`demo`] writes and runs the lab of
//! `acsim demo`, [`lab`] starts real image servers (tftpd-hpa, sshd, nginx) on loopback,
//! [`https`] is acsim's own HTTPS image server (out-of-band downloads, ranges to resume),
//! [`fleet`] writes and runs a fleet of simulated APs for the fleet demo, tests and bench,
//! [`bootloader`] is the simulated board's U-Boot, [`bins`] finds the workspace's binaries
//! for the tests, and [`wan`] emulates a site's WAN link (delay, rate cap, loss) in user space
//! for the fleet bench.

pub mod bins;
pub mod bootloader;
pub mod demo;
pub mod fleet;
pub mod https;
pub mod lab;
pub mod load;
pub mod pki;
pub mod wan;
