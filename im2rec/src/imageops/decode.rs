//! Decoding: the entry points ([`decode`], [`decode_scaled`]) that dispatch on the
//! format, and the formats other than JPEG (PNG, WebP, BMP, TIFF, PNM) through the
//! `image` crate with OpenCV's channels.

use std::io::Cursor;

use image::{DynamicImage, ImageDecoder, ImageFormat};

use super::color::{to_gray, to_rgb};
use super::jpeg::decode_jpeg;
use super::probe::{format_name, sniff};
use super::{check_size, ColorMode, Decoded, ImageOpError, MAX_PIXELS};

/// Decode an encoded image. With `min_shorter_side = Some(n)`, a JPEG may come back
/// reduced by 2, 4 or 8 (its shorter side stays `>= n`); use [`decode_scaled`] to
/// learn the full-size geometry.
pub fn decode(
    bytes: &[u8],
    color: ColorMode,
    min_shorter_side: Option<u32>,
) -> Result<DynamicImage, ImageOpError> {
    decode_scaled(bytes, color, min_shorter_side).map(|d| d.image)
}

/// Decode an encoded image, allowing a DCT downscale for JPEGs when
/// `min_shorter_side` is given, and report the full-size geometry.
pub fn decode_scaled(
    bytes: &[u8],
    color: ColorMode,
    min_shorter_side: Option<u32>,
) -> Result<Decoded, ImageOpError> {
    match sniff(bytes)? {
        ImageFormat::Jpeg => decode_jpeg(bytes, color, min_shorter_side),
        format @ (ImageFormat::Png
        | ImageFormat::WebP
        | ImageFormat::Bmp
        | ImageFormat::Tiff
        | ImageFormat::Pnm) => {
            let image = decode_other(bytes, format, color)?;
            Ok(Decoded {
                width: image.width(),
                height: image.height(),
                image,
                scale: 1,
            })
        }
        other => Err(ImageOpError::Unsupported(format_name(other))),
    }
}

/// Decode a PNG, WebP, BMP, TIFF or PNM image with the `image` crate, giving the
/// channels `cv2.imread` gives for `color`. In `Color` and `Gray` modes the EXIF
/// orientation of a PNG (`eXIf` chunk before the image data) is applied, as OpenCV
/// 4.11 does; OpenCV applies none for the other formats. In `Unchanged` mode: grey
/// with alpha becomes RGBA (OpenCV has no two-channel images); a grey PNG with a
/// `tRNS` transparent colour stays grey (OpenCV ignores it there, while RGB and
/// palette PNGs with `tRNS` get alpha); a BMP gets OpenCV's channels
/// ([`bmp_channels`]).
fn decode_other(
    bytes: &[u8],
    format: ImageFormat,
    color: ColorMode,
) -> Result<DynamicImage, ImageOpError> {
    use image::metadata::Orientation;
    let name = match format {
        ImageFormat::Png => "PNG",
        ImageFormat::WebP => "WebP",
        ImageFormat::Bmp => "BMP",
        ImageFormat::Tiff => "TIFF",
        _ => "PNM",
    };
    let corrupt = |e: image::ImageError| ImageOpError::Corrupt {
        format: name,
        detail: e.to_string(),
    };
    let mut reader = image::ImageReader::with_format(Cursor::new(bytes), format);
    let mut limits = image::Limits::default();
    limits.max_alloc = Some(MAX_PIXELS * 8);
    reader.limits(limits);
    let mut dec = reader.into_decoder().map_err(corrupt)?;
    let (width, height) = dec.dimensions();
    check_size(width, height)?;
    let decode_error = |e: image::ImageError| match e {
        image::ImageError::Limits(_) => ImageOpError::TooLarge { width, height },
        other => corrupt(other),
    };
    let orientation = match (format, color) {
        (ImageFormat::Png, ColorMode::Color | ColorMode::Gray) => {
            dec.orientation().unwrap_or(Orientation::NoTransforms)
        }
        _ => Orientation::NoTransforms,
    };
    let mut image = DynamicImage::from_decoder(dec).map_err(decode_error)?;
    image.apply_orientation(orientation);
    Ok(match color {
        ColorMode::Color => to_rgb(image),
        ColorMode::Gray => to_gray(image),
        ColorMode::Unchanged => {
            // IHDR's colour type (byte 25) 0: grey without an alpha channel (the
            // decoder turns a tRNS colour into alpha, and does not say so).
            let grey_png = format == ImageFormat::Png && bytes.get(25) == Some(&0);
            match image {
                DynamicImage::ImageLumaA8(_) if grey_png => {
                    DynamicImage::ImageLuma8(image.to_luma8())
                }
                DynamicImage::ImageLumaA16(_) if grey_png => {
                    DynamicImage::ImageLuma16(image.to_luma16())
                }
                DynamicImage::ImageLumaA8(_) => DynamicImage::ImageRgba8(image.to_rgba8()),
                DynamicImage::ImageLumaA16(_) => DynamicImage::ImageRgba16(image.to_rgba16()),
                other if format == ImageFormat::Bmp => bmp_channels(bytes, other),
                other => other,
            }
        }
    })
}

/// OpenCV's channels for a BMP read unchanged: one grey channel when the palette
/// (1, 4 or 8 bits per pixel) holds only greys; four for 32-bit files with bit
/// masks (`BI_BITFIELDS`); else three.
fn bmp_channels(bytes: &[u8], image: DynamicImage) -> DynamicImage {
    let u16_at = |i: usize| {
        bytes
            .get(i..i + 2)
            .map(|b| u16::from_le_bytes([b[0], b[1]]))
    };
    let u32_at = |i: usize| {
        bytes
            .get(i..i + 4)
            .map(|b| u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
    };
    let header_len = u32_at(14).unwrap_or(0) as usize;
    let (bpp, compression, entry_len) = if header_len == 12 {
        (u16_at(24).unwrap_or(24), 0, 3) // OS/2 BITMAPCOREHEADER: RGB triples
    } else {
        (u16_at(28).unwrap_or(24), u32_at(30).unwrap_or(0), 4)
    };
    if bpp <= 8 {
        let entries = match u32_at(46) {
            Some(n) if header_len != 12 && n > 0 => (n as usize).min(1 << bpp),
            _ => 1 << bpp,
        };
        let start = 14 + header_len;
        let palette = bytes.get(start..).unwrap_or(&[]);
        let grey = palette
            .chunks_exact(entry_len)
            .take(entries)
            .all(|p| p[0] == p[1] && p[1] == p[2]);
        if grey {
            return to_gray(image);
        }
    }
    // OpenCV gives four channels exactly for 32-bit BI_BITFIELDS files (alpha 255
    // when the file has no alpha mask).
    let four = bpp == 32 && compression == 3;
    match image {
        DynamicImage::ImageRgba8(_) if !four => DynamicImage::ImageRgb8(image.to_rgb8()),
        DynamicImage::ImageRgb8(_) if four => DynamicImage::ImageRgba8(image.to_rgba8()),
        other => other,
    }
}
