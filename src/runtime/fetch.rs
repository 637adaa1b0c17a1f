//! `wtpd fetch URL`'s download step: the driver's side of [`crate::fetch`], which reads the
//! agent's configuration so that the fetch clients need not know it.

use crate::config::{DownloadSection, WtpdConfig};
use crate::fetch::{fetch_to_store, FetchReport, FetchUrl};
use crate::image::store::FileStore;

/// `wtpd fetch URL`: downloads into the download directory `download` (PRECHECK with its
/// margin) with the options of the `[fetch]` table of `cfg`.
pub fn fetch_command(
    cfg: &WtpdConfig,
    download: &DownloadSection,
    url: &str,
) -> Result<FetchReport, Box<dyn std::error::Error>> {
    let url = FetchUrl::parse(url)?;
    let opts = cfg.fetch.options(download.required_bytes);
    let mut store = FileStore::new(&download.dir, &download.file, download.margin);
    Ok(fetch_to_store(&url, &opts, &mut store)?)
}
