//! What is known before any pixel is decoded: the format from the first bytes
//! ([`sniff`]), format, size and channels from the header ([`probe`]), and the size
//! limits checked on the input ([`check_size`]) and on the output
//! ([`check_output_size`]) before pixel memory is allocated.

use std::io::Cursor;

use image::{ImageDecoder, ImageFormat};

use super::{Encoding, ImageOpError, MAX_PIXELS, MAX_SIDE};

/// Format, size and channel count of an encoded image, read from its header only.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ImageInfo {
    /// `jpeg`, `png`, ... (lower case).
    pub format: String,
    /// Width in pixels.
    pub width: u32,
    /// Height in pixels.
    pub height: u32,
    /// Stored channel count (a CMYK JPEG has 4).
    pub channels: u8,
}

/// Read format, size and channels from the header of an encoded image, without
/// decoding pixels. `None` when the bytes are not a JPEG, PNG, WebP, BMP, TIFF or PNM
/// with a valid header. For the formats other than JPEG the channels are those the
/// decoder gives (a palette PNG or BMP has 3 or 4).
pub fn probe(bytes: &[u8]) -> Option<ImageInfo> {
    match sniff(bytes).ok()? {
        ImageFormat::Jpeg => {
            // The decoders' own header reader: a JPEG that zune-jpeg refuses but
            // libjpeg-turbo decodes probes too (with the size it decodes to).
            let h = super::jpeg::jpeg_header(bytes).ok()?;
            Some(ImageInfo {
                format: "jpeg".into(),
                width: h.width,
                height: h.height,
                channels: h.components,
            })
        }
        format @ (ImageFormat::Png
        | ImageFormat::WebP
        | ImageFormat::Bmp
        | ImageFormat::Tiff
        | ImageFormat::Pnm) => {
            let dec = image::ImageReader::with_format(Cursor::new(bytes), format)
                .into_decoder()
                .ok()?;
            let (width, height) = dec.dimensions();
            Some(ImageInfo {
                format: format_name(format),
                width,
                height,
                channels: dec.original_color_type().channel_count(),
            })
        }
        _ => None,
    }
}

/// The image format name used in messages and `--inspect` output, lower case.
pub fn format_name(format: ImageFormat) -> String {
    format!("{format:?}").to_ascii_lowercase()
}

pub(super) fn sniff(bytes: &[u8]) -> Result<ImageFormat, ImageOpError> {
    if bytes.is_empty() {
        return Err(ImageOpError::Empty);
    }
    image::guess_format(bytes).map_err(|_| ImageOpError::NotAnImage)
}

/// Refuse an output size before any pixel memory is allocated for it: more than
/// [`MAX_PIXELS`] pixels, or (for JPEG) more than [`MAX_SIDE`] per side. A
/// `--resize` of a very long, thin image can ask for that.
pub fn check_output_size(width: u32, height: u32, encoding: Encoding) -> Result<(), ImageOpError> {
    let pixels = u64::from(width) * u64::from(height);
    let side_ok = encoding != Encoding::Jpg || (width <= MAX_SIDE && height <= MAX_SIDE);
    if pixels > MAX_PIXELS || !side_ok {
        return Err(ImageOpError::OutputTooLarge { width, height });
    }
    Ok(())
}
