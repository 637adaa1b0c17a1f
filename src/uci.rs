//! OpenWrt's UCI configuration (`/etc/config/wtpd`) translated to wtpd.toml: `wtpd uci FILE`
//! prints the TOML the procd init script starts the agent with (docs/init.md).
//!
//! A section's type is the TOML table (`config wtp`, `config dtls`, ...; `config wtpd` is the
//! top level), each `option` a key, each `list` an array. UCI values are untyped strings, so a
//! small schema says which keys are numbers, booleans (`0`/`1`, `true`/`false`, `on`/`off`,
//! `yes`/`no`, `enabled`/`disabled`) or lists; `list radio 'ID:TYPE'` becomes
//! `radios = [{ id = ID, radio_type = TYPE }]`. Unknown sections and options are refused, as
//! wtpd.toml refuses unknown keys. `option enabled` of the top section is the init script's.

use std::fmt::Write;

/// One `config` block.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Section {
    pub kind: String,
    pub name: Option<String>,
    /// Options and list items in file order: (name, value, is a list item).
    pub entries: Vec<(String, String, bool)>,
}

/// Splits a UCI line into words: bare, 'single' (no escapes) or "double" (backslash escapes)
/// quoted, adjacent pieces joined as the shell does; `#` outside quotes starts a comment.
fn words(line: &str) -> Result<Vec<String>, String> {
    let mut out = Vec::new();
    let mut cur: Option<String> = None;
    let mut chars = line.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            '#' if cur.is_none() => break,
            c if c.is_whitespace() => {
                if let Some(w) = cur.take() {
                    out.push(w);
                }
            }
            '\'' => {
                let w = cur.get_or_insert_with(String::new);
                loop {
                    match chars.next() {
                        Some('\'') => break,
                        Some(c) => w.push(c),
                        None => return Err("unterminated '".into()),
                    }
                }
            }
            '"' => {
                let w = cur.get_or_insert_with(String::new);
                loop {
                    match chars.next() {
                        Some('"') => break,
                        Some('\\') => match chars.next() {
                            Some(c) => w.push(c),
                            None => return Err("unterminated \"".into()),
                        },
                        Some(c) => w.push(c),
                        None => return Err("unterminated \"".into()),
                    }
                }
            }
            '\\' => {
                if let Some(c) = chars.next() {
                    cur.get_or_insert_with(String::new).push(c);
                }
            }
            c => cur.get_or_insert_with(String::new).push(c),
        }
    }
    if let Some(w) = cur {
        out.push(w);
    }
    Ok(out)
}

/// A name as UCI takes it (libuci's `uci_validate_name`): letters, digits and `_`, not empty.
/// Section types, section names and option names are names; they become TOML keys unquoted.
fn check_name(what: &str, name: &str) -> Result<(), String> {
    if name.is_empty() || !name.bytes().all(|c| c.is_ascii_alphanumeric() || c == b'_') {
        return Err(format!(
            "{what} {name:?}: a UCI name is letters, digits and _"
        ));
    }
    Ok(())
}

/// Parses the UCI file format (`config`, `option`, `list`, comments).
pub fn parse(text: &str) -> Result<Vec<Section>, String> {
    let mut sections: Vec<Section> = Vec::new();
    for (i, line) in text.lines().enumerate() {
        let at = |e: String| format!("line {}: {e}", i + 1);
        let w = words(line).map_err(at)?;
        match w.first().map(String::as_str) {
            None => {}
            Some("package") => {}
            Some("config") => {
                if !(2..=3).contains(&w.len()) {
                    return Err(at("config TYPE ['NAME']".into()));
                }
                check_name("config type", &w[1]).map_err(at)?;
                if let Some(n) = w.get(2) {
                    check_name("section name", n).map_err(at)?;
                }
                sections.push(Section {
                    kind: w[1].clone(),
                    name: w.get(2).cloned(),
                    entries: Vec::new(),
                });
            }
            Some(k @ ("option" | "list")) => {
                if w.len() != 3 {
                    return Err(at(format!("{k} NAME 'VALUE'")));
                }
                check_name(k, &w[1]).map_err(at)?;
                let s = sections
                    .last_mut()
                    .ok_or_else(|| at(format!("{k} before any config")))?;
                s.entries.push((w[1].clone(), w[2].clone(), k == "list"));
            }
            Some(other) => return Err(at(format!("'{other}' is not config, option or list"))),
        }
    }
    Ok(sections)
}

/// The section types: `wtpd` (the top level) and wtpd.toml's tables.
const SECTIONS: [&str; 10] = [
    "wtpd",
    "wtp",
    "software",
    "image",
    "download",
    "discovery",
    "dtls",
    "timers",
    "log",
    "hooks",
];

#[derive(Clone, Copy, PartialEq, Eq)]
enum Kind {
    Str,
    Num,
    Bool,
    StrList,
    Radios,
}

/// The TOML table of a section type and the kind of each of its keys.
fn schema(section: &str, key: &str) -> Option<Kind> {
    use Kind::*;
    Some(match (section, key) {
        ("wtpd", "bind" | "board" | "reboot" | "state_dir") => Str,
        (
            "wtp",
            "name" | "location" | "model" | "serial" | "base_mac" | "hardware_version"
            | "boot_version" | "image_type",
        ) => Str,
        ("wtp", "vendor_id") => Num,
        ("wtp", "radio") => Radios,
        ("software", "version" | "backup") => Str,
        ("image", "trust") => StrList,
        ("image", "allow_downgrade") => Bool,
        ("download", "dir" | "file" | "install" | "mode") => Str,
        ("download", "margin" | "required_bytes" | "retry_base" | "retry_max") => Num,
        ("discovery", "controllers") => StrList,
        ("discovery", "dhcp_file") => Str,
        ("discovery", "broadcast") => Bool,
        (
            "dtls",
            "mode" | "cert" | "key" | "ca" | "peer_name" | "psk_identity" | "psk_key" | "ciphers"
            | "keylog",
        ) => Str,
        ("dtls", "mtu") => Num,
        ("timers", _) => Num,
        ("log", "target" | "level") => Str,
        ("hooks", "upgrade") => Str,
        ("hooks", "timeout") => Num,
        _ => return None,
    })
}

fn toml_str(s: &str) -> String {
    toml::Value::String(s.to_string()).to_string()
}

fn toml_num(s: &str) -> Option<String> {
    let t = s.trim();
    if let Ok(i) = t.parse::<i64>() {
        return Some(i.to_string());
    }
    t.parse::<f64>()
        .ok()
        .filter(|f| f.is_finite())
        .map(|f| toml::Value::Float(f).to_string())
}

fn toml_bool(s: &str) -> Option<&'static str> {
    match s.trim() {
        "1" | "true" | "on" | "yes" | "enabled" => Some("true"),
        "0" | "false" | "off" | "no" | "disabled" => Some("false"),
        _ => None,
    }
}

/// The wtpd.toml a UCI file says.
pub fn to_toml(text: &str) -> Result<String, String> {
    let sections = parse(text)?;
    let mut top = String::new();
    let mut tables = String::new();
    let mut seen: Vec<&str> = Vec::new();
    // The top-level section first: TOML keys after a [table] would belong to it.
    let mut ordered: Vec<&Section> = sections.iter().filter(|s| s.kind == "wtpd").collect();
    ordered.extend(sections.iter().filter(|s| s.kind != "wtpd"));
    for s in ordered {
        let kind = s.kind.as_str();
        if seen.contains(&kind) {
            return Err(format!("config {kind} appears twice"));
        }
        seen.push(kind);
        if !SECTIONS.contains(&kind) {
            return Err(format!("config {kind}: not a section of wtpd.toml"));
        }
        let out = if kind == "wtpd" {
            &mut top
        } else {
            &mut tables
        };
        if kind != "wtpd" {
            let _ = writeln!(out, "\n[{kind}]");
        }
        let mut done: Vec<&str> = Vec::new();
        for (key, _, _) in &s.entries {
            if done.contains(&key.as_str()) || (kind == "wtpd" && key == "enabled") {
                continue;
            }
            done.push(key);
            let k = schema(kind, key).ok_or_else(|| format!("{kind}.{key}: unknown option"))?;
            let values: Vec<(&str, bool)> = s
                .entries
                .iter()
                .filter(|(n, _, _)| n == key)
                .map(|(_, v, l)| (v.as_str(), *l))
                .collect();
            let bad = |what: &str| format!("{kind}.{key}: {what}");
            let one = || -> Result<&str, String> {
                match values.as_slice() {
                    [(v, false)] => Ok(v),
                    _ => Err(bad("one option, not a list")),
                }
            };
            let value = match k {
                Kind::Str => toml_str(one()?),
                Kind::Num => toml_num(one()?)
                    .ok_or_else(|| bad(&format!("'{}' is not a number", one().unwrap_or(""))))?,
                Kind::Bool => toml_bool(one()?)
                    .ok_or_else(|| bad("not a boolean (0/1)"))?
                    .to_string(),
                Kind::StrList => {
                    let items: Vec<String> = values.iter().map(|(v, _)| toml_str(v)).collect();
                    format!("[{}]", items.join(", "))
                }
                Kind::Radios => {
                    let mut items = Vec::new();
                    for (v, _) in &values {
                        let (id, ty) = v
                            .split_once(':')
                            .and_then(|(a, b)| {
                                Some((a.trim().parse::<u8>().ok()?, b.trim().parse::<u32>().ok()?))
                            })
                            .ok_or_else(|| bad(&format!("'{v}' is not ID:RADIO_TYPE")))?;
                        items.push(format!("{{ id = {id}, radio_type = {ty} }}"));
                    }
                    let _ = writeln!(out, "radios = [{}]", items.join(", "));
                    continue;
                }
            };
            let _ = writeln!(out, "{key} = {value}");
        }
    }
    Ok(format!(
        "# Written by `wtpd uci` from the UCI configuration: edit that, not this.\n{top}{tables}"
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::Path;

    const UCI: &str = include_str!("../board/openwrt/etc/config/wtpd");

    #[test]
    fn the_shipped_uci_file_becomes_a_wtpd_toml_the_agent_accepts() {
        let toml = to_toml(UCI).unwrap();
        let c = crate::config::WtpdConfig::parse(&toml, Path::new("/var/etc/wtpd.toml"))
            .unwrap_or_else(|e| panic!("{e}\n{toml}"));
        assert_eq!(c.wtp.name, "ap-lobby");
        assert_eq!(c.wtp.base_mac, "02:00:00:00:00:01");
        assert_eq!(c.wtp.radios.len(), 2);
        assert_eq!(c.wtp.radios[1].radio_type, 10);
        assert_eq!(c.board.as_deref(), Some(Path::new("/etc/wtpd/board.toml")));
        assert_eq!(
            c.discovery.controllers,
            ["192.0.2.10:5246", "wlc.example.net"]
        );
        assert!(!c.discovery.broadcast);
        assert_eq!(c.dtls.mode, crate::config::DtlsMode::Certificate);
        assert_eq!(c.timers.echo_interval.as_secs(), 30);
        assert_eq!(c.timers.max_retransmit, 5);
        assert_eq!(
            c.hooks.upgrade.as_deref(),
            Some(Path::new("/usr/libexec/wtpd/upgrade.sh"))
        );
        assert_eq!(c.hooks.timeout.as_secs(), 30);
        assert_eq!(c.log.target.as_deref(), Some("syslog"));
        assert!(
            !toml.contains("enabled"),
            "the init script's option stays out"
        );
    }

    #[test]
    fn quoting_lists_and_types() {
        let t = to_toml(
            "# comment\nconfig wtp\n\toption name \"ap \\\"one\\\"\" # trailing\n\toption location 'it'\\''s here'\n\
             \toption base_mac 02:00:00:00:00:09\n\tlist radio '1:13'\nconfig image\n\tlist trust '/a.pem'\n\tlist trust /b.pem\n\
             \toption allow_downgrade off\nconfig timers\n\toption retransmit_interval 0.5\n",
        )
        .unwrap();
        assert!(t.contains("name = 'ap \"one\"'"), "{t}");
        assert!(t.contains("location = \"it's here\""), "{t}");
        assert!(t.contains("radios = [{ id = 1, radio_type = 13 }]"), "{t}");
        assert!(t.contains("trust = [\"/a.pem\", \"/b.pem\"]"), "{t}");
        assert!(t.contains("allow_downgrade = false"), "{t}");
        assert!(t.contains("retransmit_interval = 0.5"), "{t}");
    }

    #[test]
    fn mistakes_are_refused_with_their_place() {
        let e = |t: &str| to_toml(t).unwrap_err();
        assert!(e("config wtp\n\toption nmae x\n").contains("wtp.nmae: unknown option"));
        assert!(e("config radio\n").contains("not a section"));
        assert!(e("config timers\n\toption echo_interval soon\n").contains("not a number"));
        assert!(e("config image\n\toption allow_downgrade maybe\n").contains("not a boolean"));
        assert!(e("config wtp\n\tlist radio '1'\n").contains("ID:RADIO_TYPE"));
        assert!(e("config wtp\nconfig wtp\n").contains("twice"));
        assert!(e("option name x\n").contains("line 1"));
        assert!(e("config wtp\n\toption name 'x\n").contains("line 2: unterminated"));
        // Found by the `uci` fuzz target: a name with a `#` inside (not a comment there) was
        // written out as a TOML key, which broke the file's TOML.
        assert!(e("config timers\n\toption 'echo_inte#val' 30\n")
            .contains("line 2: option \"echo_inte#val\": a UCI name"));
        assert!(e("config 'ti mers'\n").contains("config type"));
        assert!(e("config wtp 'a.b'\n").contains("section name"));
    }
}
