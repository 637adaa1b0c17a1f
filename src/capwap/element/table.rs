//! `elements!`: how a file of `element/` declares its message elements, one entry each.
//!
//! An entry is everything about one element, in one place:
//!
//! ```text
//! /// CAPWAP Control IPv4 Address: an interface of the AC and its load.
//! "§4.6.9" CAPWAP_CONTROL_IPV4 = 10, "CAPWAP Control IPv4 Address",
//! ControlIpv4 { addr, wtp_count },
//! parse(v, what) {
//!     let mut r = exact(v, 6, what)?;
//!     Element::ControlIpv4 { addr: ipv4(&mut r)?, wtp_count: r.u16()? }
//! }
//! emit(o) {
//!     o.extend_from_slice(&addr.octets());
//!     put_u16(o, *wtp_count);
//! }
//! ```
//!
//! - the RFC section, the type number (as a constant of [`typ`](super::typ)) and the RFC's name;
//! - the [`Element`](super::Element) variant, with names for its fields (`{}` for none);
//! - `parse`: from the value bytes `v` to the variant; `what` is the RFC's name, for errors;
//! - `emit`: the value bytes, appended to `o`, from the fields named above (references).
//!
//! The variant itself (its field types and docs) is in the `Element` enum of `mod.rs`. From a
//! file's entries the macro writes its `typ` constants and its [`Group`](super::Group): the
//! table of numbers, names and sections, and the parse, emit and type lookups.

macro_rules! elements {
    ($(
        $(#[$doc:meta])*
        $section:literal $konst:ident = $num:literal, $name:literal,
        $variant:ident $fields:tt,
        parse($v:ident, $what:ident) $parse:block
        emit($o:ident) $emit:block
    )*) => {
        /// Element type numbers.
        pub mod typ {
            $(
                $(#[$doc])*
                #[doc = concat!("\n\n", $name, ", ", $section, ".")]
                pub const $konst: u16 = $num;
            )*
        }

        /// This file's elements, for [`super::GROUPS`].
        pub(super) const GROUP: super::Group = super::Group {
            specs: &[$(super::Spec { typ: $num, name: $name, section: $section },)*],
            parse: parse_value,
            emit: emit_tlv,
            type_id,
        };

        #[allow(unused_variables)]
        fn parse_value<'a>(
            typ: u16,
            value: &'a [u8],
        ) -> Result<Option<Element<'a>>, ParseError> {
            Ok(Some(match typ {
                $(typ::$konst => {
                    let ($v, $what) = (value, $name);
                    $parse
                })*
                _ => return Ok(None),
            }))
        }

        #[allow(unused_variables)]
        fn emit_tlv(e: &Element<'_>, out: &mut Vec<u8>) -> bool {
            match e {
                $(Element::$variant $fields => {
                    super::codec::tlv(out, typ::$konst, |$o| $emit)
                })*
                _ => return false,
            }
            true
        }

        fn type_id(e: &Element<'_>) -> Option<u16> {
            match e {
                $(Element::$variant { .. } => Some(typ::$konst),)*
                _ => None,
            }
        }
    };
}
