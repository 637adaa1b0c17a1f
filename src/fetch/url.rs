//! Image URLs as the seed's controller writes them: `tftp://HOST[:PORT]/PATH`,
//! `sftp://USER@HOST[:PORT]/PATH`, `https://HOST[:PORT]/PATH`. Shown with the user masked
//! (`sftp://*****@172.16.5.62/Documents/Wrong-Path/ap1g6`), never with a password.

use std::fmt;

/// The transfer protocol of an image URL.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scheme {
    Tftp,
    Sftp,
    Https,
}

impl Scheme {
    pub fn name(self) -> &'static str {
        match self {
            Scheme::Tftp => "tftp",
            Scheme::Sftp => "sftp",
            Scheme::Https => "https",
        }
    }

    pub fn default_port(self) -> u16 {
        match self {
            Scheme::Tftp => 69,
            Scheme::Sftp => 22,
            Scheme::Https => 443,
        }
    }
}

/// A parsed image URL.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FetchUrl {
    pub scheme: Scheme,
    /// The user (SFTP only).
    pub user: Option<String>,
    /// A host name, an IPv4 address, or an IPv6 address (without brackets).
    pub host: String,
    pub port: u16,
    /// The path on the server, starting with `/`.
    pub path: String,
}

/// Why a URL was refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UrlError(pub String);

impl fmt::Display for UrlError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for UrlError {}

impl FetchUrl {
    /// Parses `SCHEME://[USER@]HOST[:PORT]/PATH`.
    pub fn parse(s: &str) -> Result<Self, UrlError> {
        let bad = |why: &str| UrlError(format!("{s}: {why}"));
        let (scheme, rest) = s
            .split_once("://")
            .ok_or_else(|| bad("not a URL (tftp://, sftp:// or https://)"))?;
        let scheme = match scheme.to_ascii_lowercase().as_str() {
            "tftp" => Scheme::Tftp,
            "sftp" => Scheme::Sftp,
            "https" => Scheme::Https,
            other => return Err(bad(&format!("scheme '{other}' is not tftp, sftp or https"))),
        };
        let (authority, path) = match rest.find('/') {
            Some(i) => (&rest[..i], &rest[i..]),
            None => return Err(bad("no path after the host")),
        };
        let (user, hostport) = match authority.rsplit_once('@') {
            Some((u, h)) => (Some(u), h),
            None => (None, authority),
        };
        if let Some(u) = user {
            if u.is_empty() || u.contains(':') {
                return Err(bad(
                    "the user must be a plain name (give the password in the configuration)",
                ));
            }
            if scheme != Scheme::Sftp {
                return Err(bad("only sftp:// URLs name a user"));
            }
        }
        let (host, port) = if let Some(v6) = hostport.strip_prefix('[') {
            let (h, tail) = v6
                .split_once(']')
                .ok_or_else(|| bad("unclosed [ in the host"))?;
            let port = match tail {
                "" => None,
                t => Some(t.strip_prefix(':').ok_or_else(|| bad("junk after ]"))?),
            };
            (h, port)
        } else {
            match hostport.split_once(':') {
                Some((h, p)) => (h, Some(p)),
                None => (hostport, None),
            }
        };
        if host.is_empty() {
            return Err(bad("no host"));
        }
        if host
            .chars()
            .any(|c| c.is_whitespace() || c.is_control() || c == '/')
        {
            return Err(bad("the host has characters a host cannot have"));
        }
        let port = match port {
            None => scheme.default_port(),
            Some(p) => p
                .parse::<u16>()
                .ok()
                .filter(|p| *p != 0)
                .ok_or_else(|| bad(&format!("port '{p}' is not 1..65535")))?,
        };
        if path.len() < 2 || path.ends_with('/') {
            return Err(bad("the path names no file"));
        }
        if path.chars().any(|c| c.is_control()) {
            return Err(bad("control characters in the path"));
        }
        Ok(FetchUrl {
            scheme,
            user: user.map(str::to_string),
            host: host.to_string(),
            port,
            path: path.to_string(),
        })
    }

    /// `HOST:PORT` for connecting (IPv6 in brackets).
    pub fn authority(&self) -> String {
        if self.host.contains(':') {
            format!("[{}]:{}", self.host, self.port)
        } else {
            format!("{}:{}", self.host, self.port)
        }
    }

    /// The file name: the last path component (`ap1g8`).
    pub fn file_name(&self) -> &str {
        self.path.rsplit('/').next().unwrap_or("")
    }
}

impl fmt::Display for FetchUrl {
    /// The seed's form: no default port, the user masked.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}://", self.scheme.name())?;
        if self.user.is_some() {
            f.write_str("*****@")?;
        }
        if self.host.contains(':') {
            write!(f, "[{}]", self.host)?;
        } else {
            f.write_str(&self.host)?;
        }
        if self.port != self.scheme.default_port() {
            write!(f, ":{}", self.port)?;
        }
        f.write_str(&self.path)
    }
}

/// Joins an image folder on a server and a file name: `/EWC/17_9_4a` + `ap1g8`.
pub fn join_path(folder: &str, name: &str) -> String {
    let folder = folder.trim_end_matches('/');
    if folder.is_empty() {
        format!("/{name}")
    } else if folder.starts_with('/') {
        format!("{folder}/{name}")
    } else {
        format!("/{folder}/{name}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_and_shows_the_seeds_urls() {
        let u = FetchUrl::parse("tftp://172.16.5.27/Wrong-Path/ap1g6").unwrap();
        assert_eq!(u.scheme, Scheme::Tftp);
        assert_eq!(u.port, 69);
        assert_eq!(u.path, "/Wrong-Path/ap1g6");
        assert_eq!(u.file_name(), "ap1g6");
        assert_eq!(u.to_string(), "tftp://172.16.5.27/Wrong-Path/ap1g6");
        let s = FetchUrl::parse("sftp://calo@172.16.5.62:2222/Documents/Wrong-Path/ap1g6").unwrap();
        assert_eq!(s.user.as_deref(), Some("calo"));
        assert_eq!(s.port, 2222);
        assert_eq!(
            s.to_string(),
            "sftp://*****@172.16.5.62:2222/Documents/Wrong-Path/ap1g6"
        );
        let h = FetchUrl::parse("https://[::1]:8443/img/ap1g8").unwrap();
        assert_eq!(h.host, "::1");
        assert_eq!(h.authority(), "[::1]:8443");
        assert_eq!(h.to_string(), "https://[::1]:8443/img/ap1g8");
    }

    #[test]
    fn refuses_what_is_not_an_image_url() {
        for bad in [
            "ftp://h/x",
            "tftp://h",
            "tftp://h/",
            "tftp://:69/x",
            "tftp://h:0/x",
            "tftp://h:99999/x",
            "tftp://u@h/x",
            "sftp://u:pw@h/x",
            "https://[::1/x",
            "ap1g8",
        ] {
            assert!(FetchUrl::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn joins_folders_and_names() {
        assert_eq!(join_path("/EWC/17_9_4a", "ap1g8"), "/EWC/17_9_4a/ap1g8");
        assert_eq!(join_path("EWC/", "ap1g8"), "/EWC/ap1g8");
        assert_eq!(join_path("", "ap1g8"), "/ap1g8");
    }
}
