//! The file's encoding: UTF-8 as it is, UTF-16 (Excel's "Unicode Text") decoded as it is read.

use std::io::{BufRead as _, BufReader, Read};

use super::InputError;

/// The bytes as UTF-8: a file that starts with a UTF-16 byte order mark (Excel's "Unicode
/// Text") is decoded; any other is read as it is.
pub(super) fn decoded(
    raw: Box<dyn Read + Send>,
    name: &str,
) -> Result<BufReader<Box<dyn Read + Send>>, InputError> {
    let mut buffered = BufReader::with_capacity(256 * 1024, raw);
    let start = buffered.fill_buf().map_err(|source| InputError::Read {
        path: name.to_string(),
        line: 1,
        source,
    })?;
    let encoding = match start.get(..2) {
        Some([0xFF, 0xFE]) => encoding_rs::UTF_16LE,
        Some([0xFE, 0xFF]) => encoding_rs::UTF_16BE,
        _ => return Ok(buffered),
    };
    // The decoder takes the mark off; a code unit that is not UTF-16 becomes U+FFFD, which the
    // id check refuses (in that row, not the whole file).
    let utf8 = encoding_rs_io::DecodeReaderBytesBuilder::new()
        .encoding(Some(encoding))
        .build(buffered);
    Ok(BufReader::with_capacity(256 * 1024, Box::new(utf8)))
}
