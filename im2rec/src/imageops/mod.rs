//! Image operations shared by `im2rec` (packing) and `rectrain` (training input):
//! decode, shorter-side resize, centre crop and encode, with MXNet's geometry.
//!
//! What follows OpenCV / im2rec.py exactly, and what does not:
//!
//! - **Geometry is exact.** [`shorter_side_size`] is im2rec.py's integer formula
//!   (`500×375 → 341×256`), [`center_crop_box`] its `(long - short) // 2` offset.
//! - **Colour modes** are `cv2.imread`'s flags: [`ColorMode::Color`] gives 3-channel
//!   RGB (alpha dropped, grey expanded), [`ColorMode::Gray`] one channel using OpenCV's
//!   BT.601 weights, [`ColorMode::Unchanged`] keeps the channels (grey+alpha becomes
//!   RGBA, as OpenCV loads it) and the bit depth.
//! - **Formats** are OpenCV's common ones: JPEG (Huffman or arithmetic coding; grey,
//!   YCbCr, RGB, CMYK), PNG, WebP, BMP, TIFF and PNM, recognised by their bytes, not
//!   their names. GIF and others are [`ImageOpError::Unsupported`].
//! - **EXIF orientation** of JPEGs and PNGs (`eXIf` chunk) is applied in `Color` and
//!   `Gray` modes and ignored in `Unchanged` mode, like `cv2.imread` in OpenCV 4.11
//!   (which applies none for WebP, BMP, TIFF or PNM).
//! - **Pixels are not bit-identical** to OpenCV: resizing uses convolution filters
//!   (anti-aliased, like PIL), not OpenCV's 2×2-tap bilinear; decoders and encoders are
//!   different implementations of the same standards.
//! - **Big JPEGs** can be decoded at 1/2, 1/4 or 1/8 scale with the scaled IDCT
//!   when the caller only needs a shorter side of `n` ([`decode_scaled`]), by
//!   libjpeg-turbo's decoder (C, like OpenCV's); files it does not take cleanly (CMYK,
//!   12-bit, or any libjpeg warning such as truncated data) go to the pure-Rust
//!   `jpeg-decoder`, and files neither takes to the full-size decoders (a JPEG
//!   missing only its final EOI marker is complete for zune-jpeg). The crop and
//!   resize are then done on the reduced image with fractional source coordinates
//!   ([`prepare`]), so the output size is exactly the one full-size decoding gives.
//! - **Bad input** gives an [`ImageOpError`]: empty, not an image, corrupt or truncated
//!   (JPEGs are decoded in strict mode: a premature end is an error, where OpenCV
//!   would pad with grey and carry on), or larger than [`MAX_PIXELS`]. An output size
//!   can be checked before resizing ([`prepared_size`], [`check_output_size`]).
//!
//! The code, one concern per module (all public items are re-exported here):
//! `probe` (format sniffing, header probe, input and output size limits), `decode`
//! (the decode entry points, the formats other than JPEG, colour-mode conversions),
//! `jpeg` (the JPEG header and the order in which its decoders are tried), `libjpeg`
//! (the binding to the libjpeg-turbo C shim), `resize` (geometry, interpolation and
//! resampling) and `encode` (JPEG and PNG output). This module holds the types they
//! share: the limits, [`ColorMode`], [`Decoded`] and [`ImageOpError`].

use image::DynamicImage;

mod color;
mod decode;
mod encode;
mod jpeg;
mod libjpeg;
mod probe;
mod resize;
#[cfg(test)]
mod tests;

pub use decode::{decode, decode_scaled};
pub use encode::{encode, Encoding};
pub use jpeg::dct_scale;
pub use probe::{check_output_size, format_name, probe, ImageInfo};
pub use resize::{
    center_crop_box, center_crop_square, prepare, prepared_size, resize_exact, resize_shorter,
    shorter_side_size, Interpolation,
};

/// The largest image, in pixels, that is decoded (2^28, e.g. 16384×16384). Bigger
/// ones are refused before any pixel memory is allocated.
pub const MAX_PIXELS: u64 = 1 << 28;

/// Refuse a decoded size: no pixels, more than [`MAX_SIDE`] per side, or more than
/// [`MAX_PIXELS`] pixels.
pub(crate) fn check_size(width: u32, height: u32) -> Result<(), ImageOpError> {
    if width == 0 || height == 0 {
        return Err(ImageOpError::NoPixels { width, height });
    }
    if width > MAX_SIDE || height > MAX_SIDE || u64::from(width) * u64::from(height) > MAX_PIXELS {
        return Err(ImageOpError::TooLarge { width, height });
    }
    Ok(())
}

/// The largest width or height accepted (the JPEG format's own limit).
pub const MAX_SIDE: u32 = 65_535;

/// How to load the channels of an image: `cv2.imread`'s flag (`--color`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum ColorMode {
    /// `1`: three channels, RGB. Alpha is dropped and grey is expanded.
    #[default]
    Color,
    /// `0`: one grey channel.
    Gray,
    /// `-1`: as stored (grey, RGB or RGBA; 16-bit kept).
    Unchanged,
}

impl ColorMode {
    /// The mode for im2rec's `--color` value (`1`, `0`, `-1`).
    pub fn from_flag(flag: i32) -> Option<Self> {
        match flag {
            1 => Some(ColorMode::Color),
            0 => Some(ColorMode::Gray),
            -1 => Some(ColorMode::Unchanged),
            _ => None,
        }
    }
}

/// Why an image could not be decoded or encoded.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[non_exhaustive]
pub enum ImageOpError {
    /// The input has no bytes at all.
    #[error("empty file (0 bytes)")]
    Empty,
    /// The bytes are not in any image format we know.
    #[error("not an image (unrecognised format)")]
    NotAnImage,
    /// A known image format that this build does not decode.
    #[error("unsupported image format: {0}")]
    Unsupported(String),
    /// The image is damaged or cut short.
    #[error("corrupt or truncated {format}: {detail}")]
    Corrupt {
        /// `JPEG` or `PNG`.
        format: &'static str,
        /// The decoder's message.
        detail: String,
    },
    /// The header gives a width or a height of 0 (or the decoder could not read one).
    #[error("no pixels: the header gives a size of {width}x{height}")]
    NoPixels {
        /// Width from the header.
        width: u32,
        /// Height from the header.
        height: u32,
    },
    /// The header announces an absurd size.
    #[error(
        "image too large: {width}x{height} (limits: {MAX_SIDE} per side, {MAX_PIXELS} pixels)"
    )]
    TooLarge {
        /// Width from the header.
        width: u32,
        /// Height from the header.
        height: u32,
    },
    /// The encoder refused the image.
    #[error("cannot encode: {0}")]
    Encode(String),
    /// The resized image would be too large (checked before it is made).
    #[error(
        "output image too large: {width}x{height} (limits: {MAX_PIXELS} pixels, and {MAX_SIDE} per side for JPEG)"
    )]
    OutputTooLarge {
        /// Width after crop and resize.
        width: u32,
        /// Height after crop and resize.
        height: u32,
    },
}

/// A decoded image together with its full-resolution geometry.
#[derive(Debug, Clone)]
pub struct Decoded {
    /// The pixels; smaller than `width`×`height` when decoded with a DCT scale.
    pub image: DynamicImage,
    /// Width of the full-size image (after EXIF orientation).
    pub width: u32,
    /// Height of the full-size image (after EXIF orientation).
    pub height: u32,
    /// The DCT downscale used: 1, 2, 4 or 8 (`image` is about `width / scale` wide).
    pub scale: u32,
}
