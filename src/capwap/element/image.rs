//! The elements of firmware download and data transfer (RFC 5415 §9.1, §9.6): the image's
//! identity and size, its blocks, and the WTP's crash and memory dumps.

use super::codec::{exact, put_u16, put_u32, string};
use super::{limits, Element};
use crate::capwap::{ParseError, Reader};

/// Image Data "Data Type" values (§4.6.26).
pub mod image_data_type {
    pub const DATA: u8 = 1;
    pub const LAST: u8 = 2;
    pub const ERROR: u8 = 5;
}

elements! {
    "§4.6.15" DATA_TRANSFER_DATA = 13, "Data Transfer Data",
    DataTransferData { data_type, data_mode, data },
    parse(v, what) {
        let mut r = Reader::new(v, what);
        let data_type = r.u8()?;
        let data_mode = r.u8()?;
        let len = r.u16()? as usize;
        let data = r.rest();
        if data.len() != len {
            return Err(ParseError::BadLength { what, value: len });
        }
        Element::DataTransferData { data_type, data_mode, data }
    }
    emit(o) {
        // The element's own length leaves 65531 bytes for data.
        let data = &data[..data.len().min(0xffff - 4)];
        o.extend_from_slice(&[*data_type, *data_mode]);
        put_u16(o, data.len() as u16);
        o.extend_from_slice(data);
    }

    "§4.6.16" DATA_TRANSFER_MODE = 14, "Data Transfer Mode",
    DataTransferMode(mode),
    parse(v, what) { Element::DataTransferMode(exact(v, 1, what)?.u8()?) }
    emit(o) { o.push(*mode) }

    /// The hot path of a download: parsing it borrows the block and allocates nothing.
    "§4.6.26" IMAGE_DATA = 24, "Image Data",
    ImageData { data_type, data },
    parse(v, what) {
        let mut r = Reader::new(v, what);
        Element::ImageData { data_type: r.u8()?, data: r.rest() }
    }
    emit(o) {
        o.push(*data_type);
        o.extend_from_slice(data);
    }

    "§4.6.27" IMAGE_IDENTIFIER = 25, "Image Identifier",
    ImageIdentifier { vendor, name },
    parse(v, what) {
        let mut r = Reader::new(v, what);
        let vendor = r.u32()?;
        Element::ImageIdentifier {
            vendor,
            name: string(r.rest(), what, 1, limits::IMAGE_IDENTIFIER)?,
        }
    }
    emit(o) {
        put_u32(o, *vendor);
        o.extend_from_slice(name.as_bytes());
    }

    "§4.6.28" IMAGE_INFORMATION = 26, "Image Information",
    ImageInformation { file_size, md5 },
    parse(v, what) {
        let mut r = exact(v, 20, what)?;
        Element::ImageInformation { file_size: r.u32()?, md5: r.array()? }
    }
    emit(o) {
        put_u32(o, *file_size);
        o.extend_from_slice(md5);
    }

    "§4.6.29" INITIATE_DOWNLOAD = 27, "Initiate Download",
    InitiateDownload {},
    parse(v, what) {
        exact(v, 0, what)?;
        Element::InitiateDownload
    }
    emit(o) {}
}
