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

use std::io::Cursor;

use fast_image_resize as fr;
use image::{DynamicImage, ImageBuffer, ImageDecoder, ImageFormat, Luma, Rgb};

/// The largest image, in pixels, that is decoded (2^28, e.g. 16384×16384). Bigger
/// ones are refused before any pixel memory is allocated.
pub const MAX_PIXELS: u64 = 1 << 28;

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

/// Resampling filter, named after OpenCV's interpolation flags.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Interpolation {
    /// `INTER_NEAREST` (0).
    Nearest,
    /// `INTER_LINEAR` (1), the default of `cv2.resize`.
    #[default]
    Bilinear,
    /// `INTER_CUBIC` (2): Catmull-Rom.
    Cubic,
    /// `INTER_AREA` (3): box filter (pixel-area averaging).
    Area,
    /// `INTER_LANCZOS4` (4): Lanczos with 3 lobes here.
    Lanczos,
}

impl Interpolation {
    /// The filter for an OpenCV / im2rec.cc `inter_method` code 0–4. Code 9 (auto)
    /// depends on the sizes: see [`Interpolation::auto`].
    pub fn from_cv2_code(code: u8) -> Option<Self> {
        match code {
            0 => Some(Interpolation::Nearest),
            1 => Some(Interpolation::Bilinear),
            2 => Some(Interpolation::Cubic),
            3 => Some(Interpolation::Area),
            4 => Some(Interpolation::Lanczos),
            _ => None,
        }
    }

    /// im2rec.cc's `inter_method=9`: cubic when both sides grow, area when both
    /// shrink, bilinear otherwise.
    pub fn auto(src: (u32, u32), dst: (u32, u32)) -> Self {
        if dst.0 > src.0 && dst.1 > src.1 {
            Interpolation::Cubic
        } else if dst.0 < src.0 && dst.1 < src.1 {
            Interpolation::Area
        } else {
            Interpolation::Bilinear
        }
    }

    fn algorithm(self) -> fr::ResizeAlg {
        use fr::{FilterType, ResizeAlg};
        match self {
            Interpolation::Nearest => ResizeAlg::Nearest,
            Interpolation::Bilinear => ResizeAlg::Convolution(FilterType::Bilinear),
            Interpolation::Cubic => ResizeAlg::Convolution(FilterType::CatmullRom),
            Interpolation::Area => ResizeAlg::Convolution(FilterType::Box),
            Interpolation::Lanczos => ResizeAlg::Convolution(FilterType::Lanczos3),
        }
    }
}

/// Output codec (`--encoding`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Encoding {
    /// `.jpg`: baseline JPEG, 4:2:0 chroma subsampling (OpenCV's default).
    #[default]
    Jpg,
    /// `.png`: PNG; the quality value is the zlib level, clamped to 0–9.
    Png,
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

/// im2rec.py's `--resize N` target size for a `width`×`height` image: if the image
/// is taller than wide, `(N, h*N/w)`, otherwise `(w*N/h, N)`, with integer floor
/// division. Returns `(width, height)`.
pub fn shorter_side_size(width: u32, height: u32, n: u32) -> (u32, u32) {
    let (w, h, n) = (u64::from(width), u64::from(height), u64::from(n));
    if h > w {
        (n as u32, (h * n / w.max(1)) as u32)
    } else {
        ((w * n / h.max(1)) as u32, n as u32)
    }
}

/// im2rec.py's `--center-crop` box for a `width`×`height` image: the centred square
/// whose side is the shorter dimension, offset `(long - short) / 2` (floor).
/// Returns `(x, y, side)`.
pub fn center_crop_box(width: u32, height: u32) -> (u32, u32, u32) {
    if height > width {
        (0, (height - width) / 2, width)
    } else {
        ((width - height) / 2, 0, height)
    }
}

/// The largest DCT downscale (8, 4, 2, else 1) that keeps the shorter side of a
/// `width`×`height` JPEG at least `min_shorter_side` pixels.
pub fn dct_scale(width: u32, height: u32, min_shorter_side: u32) -> u32 {
    let short = u64::from(width.min(height));
    [8u32, 4, 2]
        .into_iter()
        .find(|&d| short >= u64::from(min_shorter_side.max(1)) * u64::from(d))
        .unwrap_or(1)
}

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

/// Read format, size and channels from the header of an encoded image, without
/// decoding pixels. `None` when the bytes are not a JPEG, PNG, WebP, BMP, TIFF or PNM
/// with a valid header. For the formats other than JPEG the channels are those the
/// decoder gives (a palette PNG or BMP has 3 or 4).
pub fn probe(bytes: &[u8]) -> Option<ImageInfo> {
    match sniff(bytes).ok()? {
        ImageFormat::Jpeg => {
            let mut dec = zune_jpeg::JpegDecoder::new_with_options(
                zune_core::bytestream::ZCursor::new(bytes),
                zune_options(),
            );
            dec.decode_headers().ok()?;
            let info = dec.info()?;
            Some(ImageInfo {
                format: "jpeg".into(),
                width: u32::from(info.width),
                height: u32::from(info.height),
                channels: info.components,
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

fn sniff(bytes: &[u8]) -> Result<ImageFormat, ImageOpError> {
    if bytes.is_empty() {
        return Err(ImageOpError::Empty);
    }
    image::guess_format(bytes).map_err(|_| ImageOpError::NotAnImage)
}

fn check_size(width: u32, height: u32) -> Result<(), ImageOpError> {
    if width == 0
        || height == 0
        || width > MAX_SIDE
        || height > MAX_SIDE
        || u64::from(width) * u64::from(height) > MAX_PIXELS
    {
        return Err(ImageOpError::TooLarge { width, height });
    }
    Ok(())
}

fn zune_options() -> zune_core::options::DecoderOptions {
    zune_core::options::DecoderOptions::default()
        .set_strict_mode(true)
        .set_max_width(MAX_SIDE as usize)
        .set_max_height(MAX_SIDE as usize)
}

fn jpeg_error(detail: impl std::fmt::Display) -> ImageOpError {
    ImageOpError::Corrupt {
        format: "JPEG",
        detail: detail.to_string(),
    }
}

/// What the JPEG's headers say, read by zune-jpeg or, for the files it does not parse
/// (arithmetic coding), by libjpeg.
struct JpegHeader {
    width: u32,
    height: u32,
    /// Stored as one grey component.
    luma: bool,
    /// Stored as grey or YCbCr: grey output is the Y channel. Otherwise (RGB, CMYK,
    /// YCCK) grey output is computed from the RGB output.
    has_luma_channel: bool,
    /// zune-jpeg parsed the headers, so it may decode the file.
    zune: bool,
    exif_orientation: Option<image::metadata::Orientation>,
}

fn jpeg_header(bytes: &[u8]) -> Result<JpegHeader, ImageOpError> {
    use zune_core::colorspace::ColorSpace;
    let mut dec = zune_jpeg::JpegDecoder::new_with_options(
        zune_core::bytestream::ZCursor::new(bytes),
        zune_options(),
    );
    match dec.decode_headers() {
        Ok(()) => {
            let info = dec.info().ok_or_else(|| jpeg_error("no frame header"))?;
            let input = dec.input_colorspace().unwrap_or(ColorSpace::RGB);
            Ok(JpegHeader {
                width: u32::from(info.width),
                height: u32::from(info.height),
                luma: input == ColorSpace::Luma,
                has_luma_channel: matches!(input, ColorSpace::Luma | ColorSpace::YCbCr),
                zune: true,
                exif_orientation: dec
                    .exif()
                    .and_then(|exif| image::metadata::Orientation::from_exif_chunk(exif)),
            })
        }
        // libjpeg-turbo reads what zune-jpeg does not (arithmetic-coded files): if
        // it cannot either, zune-jpeg's message stands.
        Err(zune_error) => match crate::libjpeg::read_header(bytes) {
            Ok(h) => Ok(JpegHeader {
                width: h.width,
                height: h.height,
                luma: h.gray,
                has_luma_channel: true,
                zune: false,
                exif_orientation: jpeg_exif(bytes)
                    .and_then(image::metadata::Orientation::from_exif_chunk),
            }),
            Err(_) => Err(jpeg_error(zune_error)),
        },
    }
}

/// The EXIF data (after `Exif\0\0`) of the first such APP1 segment before the image
/// data, found by walking the marker segments.
fn jpeg_exif(bytes: &[u8]) -> Option<&[u8]> {
    if !bytes.starts_with(&[0xFF, 0xD8]) {
        return None;
    }
    let mut i = 2;
    loop {
        while bytes.get(i) == Some(&0xFF) && bytes.get(i + 1) == Some(&0xFF) {
            i += 1; // fill bytes
        }
        if *bytes.get(i)? != 0xFF {
            return None;
        }
        let marker = *bytes.get(i + 1)?;
        match marker {
            0xDA | 0xD9 => return None, // start of scan, end of image
            0x01 | 0xD0..=0xD7 => {
                i += 2; // markers without a length
                continue;
            }
            _ => {}
        }
        let len = usize::from(u16::from_be_bytes([*bytes.get(i + 2)?, *bytes.get(i + 3)?]));
        let segment = bytes.get(i + 4..(i + 2).checked_add(len)?)?;
        if marker == 0xE1 && segment.starts_with(b"Exif\0\0") {
            return Some(&segment[6..]);
        }
        i += 2 + len.max(2);
    }
}

/// Decode a JPEG, at 1/2, 1/4 or 1/8 when `min_shorter_side` allows it. Decoders are
/// tried in turn until one takes the file cleanly:
///
/// 1. at the reduced scale, libjpeg-turbo (no warning allowed), then jpeg-decoder;
/// 2. at full size, zune-jpeg in strict mode (it accepts a file whose final EOI
///    marker is missing, which both scaled decoders refuse);
/// 3. at full size, libjpeg-turbo (arithmetic-coded files, which zune-jpeg does not
///    read), then jpeg-decoder, each unless it already failed at the reduced scale.
///
/// A truncated or corrupt file fails all of them and gets zune-jpeg's message
/// (libjpeg's when zune-jpeg could not read the headers).
fn decode_jpeg(
    bytes: &[u8],
    color: ColorMode,
    min_shorter_side: Option<u32>,
) -> Result<Decoded, ImageOpError> {
    let header = jpeg_header(bytes)?;
    let (width, height) = (header.width, header.height);
    check_size(width, height)?;
    let orientation = match color {
        ColorMode::Unchanged => image::metadata::Orientation::NoTransforms,
        _ => header
            .exif_orientation
            .unwrap_or(image::metadata::Orientation::NoTransforms),
    };
    let gray_out = match color {
        ColorMode::Gray => true,
        ColorMode::Color => false,
        ColorMode::Unchanged => header.luma,
    };
    let wanted_scale = min_shorter_side.map_or(1, |n| dct_scale(width, height, n));
    let mut libjpeg_failed = false;
    let mut jpeg_decoder_failed = false;
    let mut decoded = None;
    if wanted_scale > 1 {
        let (w, h) = (width.div_ceil(wanted_scale), height.div_ceil(wanted_scale));
        decoded = match decode_jpeg_libjpeg(bytes, wanted_scale, gray_out, (w, h)) {
            Ok(image) => Some(image),
            Err(_) => {
                libjpeg_failed = true;
                decode_jpeg_scaled_fallback(bytes, wanted_scale, gray_out)
                    .inspect_err(|_| jpeg_decoder_failed = true)
                    .ok()
            }
        }
        .map(|image| (image, wanted_scale));
    }
    let mut first_error = None;
    if decoded.is_none() && header.zune {
        match decode_jpeg_zune(bytes, gray_out, header.has_luma_channel) {
            Ok(image) => decoded = Some((image, 1)),
            Err(e) => first_error = Some(e),
        }
    }
    if decoded.is_none() && !libjpeg_failed {
        match decode_jpeg_libjpeg(bytes, 1, gray_out, (width, height)) {
            Ok(image) => decoded = Some((image, 1)),
            Err(e) => {
                first_error.get_or_insert(e);
            }
        }
    }
    if decoded.is_none() && !jpeg_decoder_failed {
        if let Ok(image) = decode_jpeg_scaled_fallback(bytes, 1, gray_out) {
            decoded = Some((image, 1));
        }
    }
    let Some((mut image, scale)) = decoded else {
        return Err(first_error.unwrap_or_else(|| jpeg_error("no decoder could read the file")));
    };
    image.apply_orientation(orientation);
    let (width, height) = if is_transposing(orientation) {
        (height, width)
    } else {
        (width, height)
    };
    Ok(Decoded {
        image,
        width,
        height,
        scale,
    })
}

/// Full-size decode with zune-jpeg (strict mode). Grey output is zune's Y channel
/// for grey and YCbCr files; RGB, CMYK and YCCK files, which zune cannot map to
/// grey, are decoded to RGB and converted like every other grey output.
fn decode_jpeg_zune(
    bytes: &[u8],
    gray: bool,
    has_luma_channel: bool,
) -> Result<DynamicImage, ImageOpError> {
    use zune_core::colorspace::ColorSpace;
    let luma_out = gray && has_luma_channel;
    let out = if luma_out {
        ColorSpace::Luma
    } else {
        ColorSpace::RGB
    };
    let mut dec = zune_jpeg::JpegDecoder::new_with_options(
        zune_core::bytestream::ZCursor::new(bytes),
        zune_options().jpeg_set_out_colorspace(out),
    );
    let pixels = dec.decode().map_err(jpeg_error)?;
    let (w, h) = dec
        .dimensions()
        .ok_or_else(|| jpeg_error("no frame header"))?;
    let (w, h) = (w as u32, h as u32);
    let image = if luma_out {
        ImageBuffer::<Luma<u8>, _>::from_raw(w, h, pixels).map(DynamicImage::ImageLuma8)
    } else {
        ImageBuffer::<Rgb<u8>, _>::from_raw(w, h, pixels).map(DynamicImage::ImageRgb8)
    }
    .ok_or_else(|| jpeg_error("decoder returned a short buffer"))?;
    Ok(if gray && !luma_out {
        to_gray(image)
    } else {
        image
    })
}

fn is_transposing(o: image::metadata::Orientation) -> bool {
    use image::metadata::Orientation::*;
    matches!(o, Rotate90 | Rotate270 | Rotate90FlipH | Rotate270FlipH)
}

/// Decode a JPEG at 1/`scale` into `w`×`h` pixels (the header size divided by
/// `scale`, rounded up) with libjpeg-turbo's decoder, when it takes the file cleanly
/// (grey, YCbCr or RGB; Huffman or arithmetic coding; no warning).
fn decode_jpeg_libjpeg(
    bytes: &[u8],
    scale: u32,
    gray: bool,
    (w, h): (u32, u32),
) -> Result<DynamicImage, ImageOpError> {
    let pixels = crate::libjpeg::decode_scaled(bytes, scale, gray, w, h).map_err(|e| match e {
        crate::libjpeg::Outcome::Error(m) | crate::libjpeg::Outcome::Warning(m) => jpeg_error(m),
        crate::libjpeg::Outcome::Unsupported => jpeg_error("colour space not supported by libjpeg"),
        crate::libjpeg::Outcome::Geometry => jpeg_error("unexpected output size"),
    })?;
    let image = if gray {
        ImageBuffer::<Luma<u8>, _>::from_raw(w, h, pixels).map(DynamicImage::ImageLuma8)
    } else {
        ImageBuffer::<Rgb<u8>, _>::from_raw(w, h, pixels).map(DynamicImage::ImageRgb8)
    };
    image.ok_or_else(|| jpeg_error("decoder returned a short buffer"))
}

/// Decode a JPEG at 1/`scale` with jpeg-decoder's scaled IDCT (pure Rust; CMYK and
/// 12-bit included, and strict about truncation).
fn decode_jpeg_scaled_fallback(
    bytes: &[u8],
    scale: u32,
    gray: bool,
) -> Result<DynamicImage, ImageOpError> {
    use jpeg_decoder::PixelFormat;
    let mut dec = jpeg_decoder::Decoder::new(bytes);
    dec.read_info().map_err(jpeg_error)?;
    let info = dec.info().ok_or_else(|| jpeg_error("no frame header"))?;
    let want_w = u32::from(info.width).div_ceil(scale);
    let want_h = u32::from(info.height).div_ceil(scale);
    // Both values fit u16: they are at most the u16 header values.
    let (w, h) = dec
        .scale(want_w as u16, want_h as u16)
        .map_err(jpeg_error)?;
    let (w, h) = (u32::from(w), u32::from(h));
    let pixels = dec.decode().map_err(jpeg_error)?;
    let short = || jpeg_error("decoder returned a short buffer");
    let image = match info.pixel_format {
        PixelFormat::L8 => {
            DynamicImage::ImageLuma8(ImageBuffer::from_raw(w, h, pixels).ok_or_else(short)?)
        }
        PixelFormat::L16 => {
            // 12-bit JPEG samples, big-endian u16.
            let px: Vec<u8> = pixels.chunks_exact(2).map(|c| c[0]).collect();
            DynamicImage::ImageLuma8(ImageBuffer::from_raw(w, h, px).ok_or_else(short)?)
        }
        PixelFormat::RGB24 => {
            DynamicImage::ImageRgb8(ImageBuffer::from_raw(w, h, pixels).ok_or_else(short)?)
        }
        PixelFormat::CMYK32 => {
            let px = cmyk_to_rgb(&pixels);
            DynamicImage::ImageRgb8(ImageBuffer::from_raw(w, h, px).ok_or_else(short)?)
        }
    };
    if w != want_w || h != want_h {
        return Err(jpeg_error(format!(
            "scaled decode gave {w}x{h}, expected {want_w}x{want_h}"
        )));
    }
    Ok(if gray { to_gray(image) } else { to_rgb(image) })
}

/// jpeg-decoder gives CMYK as ink amounts (Adobe's inversion already undone).
fn cmyk_to_rgb(cmyk: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(cmyk.len() / 4 * 3);
    for p in cmyk.chunks_exact(4) {
        let k = 255 - u32::from(p[3]);
        for &c in &p[..3] {
            out.push(((255 - u32::from(c)) * k / 255) as u8);
        }
    }
    out
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

fn to_rgb(image: DynamicImage) -> DynamicImage {
    match image {
        DynamicImage::ImageRgb8(_) => image,
        other => DynamicImage::ImageRgb8(other.to_rgb8()),
    }
}

/// Grey with OpenCV's BT.601 fixed-point weights (`cvtColor(..., BGR2GRAY)`).
fn to_gray(image: DynamicImage) -> DynamicImage {
    match image {
        DynamicImage::ImageLuma8(_) => image,
        DynamicImage::ImageLuma16(_)
        | DynamicImage::ImageLumaA8(_)
        | DynamicImage::ImageLumaA16(_) => DynamicImage::ImageLuma8(image.to_luma8()),
        other => {
            let rgb = other.to_rgb8();
            let (w, h) = rgb.dimensions();
            let px = rgb
                .pixels()
                .map(|p| {
                    let [r, g, b] = p.0.map(u32::from);
                    ((r * 4899 + g * 9617 + b * 1868 + 8192) >> 14) as u8
                })
                .collect();
            DynamicImage::ImageLuma8(ImageBuffer::from_raw(w, h, px).expect("w*h pixels"))
        }
    }
}

/// Resize so that the shorter side is `n` ([`shorter_side_size`]); runs even when the
/// size does not change, like im2rec.py.
pub fn resize_shorter(img: &DynamicImage, n: u32, interp: Interpolation) -> DynamicImage {
    let (w, h) = shorter_side_size(img.width(), img.height(), n);
    resize_exact(img, w, h, interp)
}

/// Resize to exactly `w`×`h`, ignoring the aspect ratio.
pub fn resize_exact(img: &DynamicImage, w: u32, h: u32, interp: Interpolation) -> DynamicImage {
    let full = (0.0, 0.0, f64::from(img.width()), f64::from(img.height()));
    resize_box(img, full, w, h, interp)
}

/// Crop the centred square ([`center_crop_box`]).
pub fn center_crop_square(img: &DynamicImage) -> DynamicImage {
    let (x, y, side) = center_crop_box(img.width(), img.height());
    img.crop_imm(x, y, side, side)
}

/// im2rec's per-image geometry on a [`Decoded`] image: optional centre crop, then
/// optional shorter-side resize to `resize`, computed on the full-size dimensions
/// and applied in one resampling pass to the (possibly DCT-reduced) pixels.
/// `interp = None` means im2rec.cc's auto choice ([`Interpolation::auto`]).
pub fn prepare(
    decoded: &Decoded,
    center_crop: bool,
    resize: Option<u32>,
    interp: Option<Interpolation>,
) -> DynamicImage {
    let ((cx, cy, cw, ch), (tw, th)) = geometry(decoded, center_crop, resize);
    if decoded.scale == 1 && resize.is_none() {
        return if center_crop {
            decoded.image.crop_imm(cx, cy, cw, ch)
        } else {
            decoded.image.clone()
        };
    }
    let interp = interp.unwrap_or_else(|| Interpolation::auto((cw, ch), (tw, th)));
    let s = f64::from(decoded.scale);
    let (iw, ih) = (
        f64::from(decoded.image.width()),
        f64::from(decoded.image.height()),
    );
    let left = (f64::from(cx) / s).min(iw);
    let top = (f64::from(cy) / s).min(ih);
    let src = (
        left,
        top,
        (f64::from(cw) / s).min(iw - left),
        (f64::from(ch) / s).min(ih - top),
    );
    resize_box(&decoded.image, src, tw, th, interp)
}

/// The crop box `(x, y, w, h)` on the full-size image and the output size of
/// [`prepare`].
fn geometry(
    decoded: &Decoded,
    center_crop: bool,
    resize: Option<u32>,
) -> ((u32, u32, u32, u32), (u32, u32)) {
    let (w, h) = (decoded.width, decoded.height);
    let (cx, cy, cw, ch) = if center_crop {
        let (x, y, s) = center_crop_box(w, h);
        (x, y, s, s)
    } else {
        (0, 0, w, h)
    };
    let (tw, th) = match resize {
        Some(n) => shorter_side_size(cw, ch, n),
        None => (cw, ch),
    };
    ((cx, cy, cw, ch), (tw.max(1), th.max(1)))
}

/// The size [`prepare`] gives, without resampling anything.
pub fn prepared_size(decoded: &Decoded, center_crop: bool, resize: Option<u32>) -> (u32, u32) {
    geometry(decoded, center_crop, resize).1
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

/// Resample the source box `(left, top, width, height)` of `img` to `w`×`h`.
fn resize_box(
    img: &DynamicImage,
    (left, top, bw, bh): (f64, f64, f64, f64),
    w: u32,
    h: u32,
    interp: Interpolation,
) -> DynamicImage {
    let w = w.max(1);
    let h = h.max(1);
    // fast_image_resize handles every 8/16-bit layout; f32 images only come from
    // callers, not from our decoders: convert those to RGBA16.
    let converted;
    let src = match img {
        DynamicImage::ImageRgb32F(_) | DynamicImage::ImageRgba32F(_) => {
            converted = DynamicImage::ImageRgba16(img.to_rgba16());
            &converted
        }
        other => other,
    };
    let mut dst = DynamicImage::new(w, h, src.color());
    let options = fr::ResizeOptions::new()
        .resize_alg(interp.algorithm())
        .crop(left, top, bw, bh)
        .use_alpha(false);
    fr::Resizer::new()
        .resize(src, &mut dst, &options)
        .expect("source and destination have the same supported pixel type");
    dst
}

/// Encode `img` as JPEG (`quality` 1–100) or PNG (`quality` is the zlib level,
/// clamped to 0–9 like OpenCV's `IMWRITE_PNG_COMPRESSION`, so im2rec's default 95
/// means 9). JPEG has no alpha and 8 bits only: alpha is dropped and 16-bit samples
/// are reduced, as OpenCV's `imencode` does.
pub fn encode(
    img: &DynamicImage,
    encoding: Encoding,
    quality: u8,
) -> Result<Vec<u8>, ImageOpError> {
    match encoding {
        Encoding::Jpg => encode_jpeg(img, quality),
        Encoding::Png => encode_png(img, quality),
    }
}

fn encode_jpeg(img: &DynamicImage, quality: u8) -> Result<Vec<u8>, ImageOpError> {
    use jpeg_encoder::{ColorType, Encoder, SamplingFactor};
    let (w, h) = (img.width(), img.height());
    if w > MAX_SIDE || h > MAX_SIDE {
        return Err(ImageOpError::Encode(format!(
            "{w}x{h} is larger than JPEG's {MAX_SIDE} pixels per side"
        )));
    }
    let converted;
    let (bytes, color): (&[u8], ColorType) = match img {
        DynamicImage::ImageLuma8(b) => (b.as_raw(), ColorType::Luma),
        DynamicImage::ImageRgb8(b) => (b.as_raw(), ColorType::Rgb),
        DynamicImage::ImageRgba8(b) => (b.as_raw(), ColorType::Rgba),
        DynamicImage::ImageLuma16(_)
        | DynamicImage::ImageLumaA8(_)
        | DynamicImage::ImageLumaA16(_) => {
            converted = img.to_luma8();
            (converted.as_raw(), ColorType::Luma)
        }
        _ => return encode_jpeg(&DynamicImage::ImageRgb8(img.to_rgb8()), quality),
    };
    let mut out = Vec::with_capacity(bytes.len() / 4 + 1024);
    let mut encoder = Encoder::new(&mut out, quality.clamp(1, 100));
    encoder.set_sampling_factor(SamplingFactor::F_2_2);
    encoder
        .encode(bytes, w as u16, h as u16, color)
        .map_err(|e| ImageOpError::Encode(e.to_string()))?;
    Ok(out)
}

fn encode_png(img: &DynamicImage, quality: u8) -> Result<Vec<u8>, ImageOpError> {
    use image::codecs::png::{CompressionType, FilterType, PngEncoder};
    let level = quality.min(9);
    let compression = if level == 0 {
        CompressionType::Uncompressed
    } else {
        CompressionType::Level(level)
    };
    let mut out = Vec::new();
    let encoder = PngEncoder::new_with_quality(&mut out, compression, FilterType::Adaptive);
    img.write_with_encoder(encoder)
        .map_err(|e| ImageOpError::Encode(e.to_string()))?;
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn noise(w: u32, h: u32) -> DynamicImage {
        let mut state = 12345u32;
        let px = (0..w * h * 3)
            .map(|i| {
                state = state.wrapping_mul(1_103_515_245).wrapping_add(12345);
                ((i % 251) as u8).wrapping_add((state >> 24) as u8 / 8)
            })
            .collect();
        DynamicImage::ImageRgb8(ImageBuffer::from_raw(w, h, px).unwrap())
    }

    #[test]
    fn shorter_side_arithmetic_matches_im2rec_py() {
        assert_eq!(shorter_side_size(500, 375, 256), (341, 256));
        assert_eq!(shorter_side_size(375, 500, 256), (256, 341));
        assert_eq!(shorter_side_size(256, 256, 256), (256, 256));
        assert_eq!(shorter_side_size(100, 50, 256), (512, 256)); // upscales
        assert_eq!(shorter_side_size(4000, 3000, 224), (298, 224));
        assert_eq!(shorter_side_size(3, 1000, 2), (2, 666));
    }

    #[test]
    fn center_crop_offsets() {
        assert_eq!(center_crop_box(500, 375), (62, 0, 375));
        assert_eq!(center_crop_box(375, 500), (0, 62, 375));
        assert_eq!(center_crop_box(7, 4), (1, 0, 4));
        assert_eq!(center_crop_box(9, 9), (0, 0, 9));
        let img = noise(7, 4);
        let crop = center_crop_square(&img);
        assert_eq!((crop.width(), crop.height()), (4, 4));
        assert_eq!(
            crop.to_rgb8().get_pixel(0, 0),
            img.to_rgb8().get_pixel(1, 0)
        );
    }

    #[test]
    fn dct_scale_keeps_the_shorter_side() {
        assert_eq!(dct_scale(4000, 3000, 256), 8); // 375 >= 256
        assert_eq!(dct_scale(4000, 3000, 400), 4); // 750
        assert_eq!(dct_scale(1000, 600, 256), 2); // 300
        assert_eq!(dct_scale(500, 375, 256), 1);
        assert_eq!(dct_scale(512, 512, 256), 2);
        assert_eq!(dct_scale(511, 2000, 256), 1);
        assert_eq!(dct_scale(10, 10, 0), 8);
    }

    #[test]
    fn scaled_jpeg_decode_keeps_geometry() {
        let jpg = encode(&noise(1030, 777), Encoding::Jpg, 90).unwrap();
        let full = decode_scaled(&jpg, ColorMode::Color, None).unwrap();
        assert_eq!((full.width, full.height, full.scale), (1030, 777, 1));
        let d = decode_scaled(&jpg, ColorMode::Color, Some(100)).unwrap();
        assert_eq!((d.width, d.height, d.scale), (1030, 777, 4));
        assert_eq!((d.image.width(), d.image.height()), (258, 195)); // ceil(/4)
        let out = prepare(&d, false, Some(100), None);
        assert_eq!(
            (out.width(), out.height()),
            shorter_side_size(1030, 777, 100)
        );
        let out = prepare(&d, true, Some(100), Some(Interpolation::Bilinear));
        assert_eq!((out.width(), out.height()), (100, 100));
        // Same geometry as the full-size path, and similar pixels.
        let reference = prepare(&full, true, Some(100), Some(Interpolation::Bilinear));
        assert_eq!(reference.dimensions_pair(), out.dimensions_pair());
    }

    #[test]
    fn scaled_decode_paths_agree() {
        // Baseline YCbCr goes through libjpeg; the pure-Rust fallback gives nearly
        // the same pixels on photo-like content (different IDCT and chroma
        // upsampling: on pixel-level noise they differ much more).
        let smooth = ImageBuffer::from_fn(1030, 777, |x, y| {
            let t = ((x * 7 + y * 13) % 32) as u8;
            Rgb([(x * 255 / 1030) as u8, (y * 255 / 777) as u8, 96 + t])
        });
        let jpg = encode(&DynamicImage::ImageRgb8(smooth), Encoding::Jpg, 90).unwrap();
        for gray in [false, true] {
            let fast = decode_jpeg_libjpeg(&jpg, 4, gray, (258, 195)).unwrap();
            let slow = decode_jpeg_scaled_fallback(&jpg, 4, gray).unwrap();
            assert_eq!(fast.color(), slow.color());
            assert_eq!(fast.dimensions_pair(), (258, 195));
            assert_eq!(slow.dimensions_pair(), (258, 195));
            let (a, b) = (fast.as_bytes(), slow.as_bytes());
            let diff: u64 = a
                .iter()
                .zip(b)
                .map(|(&x, &y)| u64::from(x.abs_diff(y)))
                .sum();
            let mean = diff as f64 / a.len() as f64;
            assert!(mean < 2.0, "gray {gray}: mean difference {mean}");
        }
        // CMYK is left to the fallback, which converts it to RGB.
        let cmyk: Vec<u8> = (0..640 * 480 * 4).map(|i| (i % 200) as u8).collect();
        let mut bytes = Vec::new();
        jpeg_encoder::Encoder::new(&mut bytes, 90)
            .encode(&cmyk, 640, 480, jpeg_encoder::ColorType::Cmyk)
            .unwrap();
        let d = decode_scaled(&bytes, ColorMode::Color, Some(60)).unwrap();
        assert_eq!((d.scale, d.image.width(), d.image.height()), (8, 80, 60));
        assert!(matches!(d.image, DynamicImage::ImageRgb8(_)));
    }

    fn encoded(img: &DynamicImage, format: ImageFormat) -> Vec<u8> {
        let mut out = Cursor::new(Vec::new());
        img.write_to(&mut out, format).unwrap();
        out.into_inner()
    }

    #[test]
    fn webp_bmp_tiff_pnm_decode_like_opencv() {
        let rgb = noise(33, 22);
        let rgba = DynamicImage::ImageRgba8(rgb.to_rgba8());
        let grey = DynamicImage::ImageLuma8(rgb.to_luma8());
        let grey16 = DynamicImage::ImageLuma16(rgb.to_luma16());
        // (file, channels for --color 1, 0, -1); OpenCV 4.11 gives the same.
        let cases = [
            (encoded(&rgb, ImageFormat::WebP), "rgb webp", 3),
            (encoded(&rgba, ImageFormat::WebP), "rgba webp", 4),
            (encoded(&rgb, ImageFormat::Bmp), "rgb bmp", 3),
            (encoded(&rgb, ImageFormat::Tiff), "rgb tiff", 3),
            (encoded(&rgba, ImageFormat::Tiff), "rgba tiff", 4),
            (encoded(&grey, ImageFormat::Tiff), "grey tiff", 1),
            (encoded(&rgb, ImageFormat::Pnm), "ppm", 3),
            (encoded(&grey, ImageFormat::Pnm), "pgm", 1),
        ];
        for (bytes, what, unchanged) in &cases {
            for (mode, channels) in [
                (ColorMode::Color, 3),
                (ColorMode::Gray, 1),
                (ColorMode::Unchanged, *unchanged),
            ] {
                let d = decode_scaled(bytes, mode, Some(10)).unwrap();
                assert_eq!((d.width, d.height, d.scale), (33, 22, 1), "{what}");
                assert_eq!(d.image.dimensions_pair(), (33, 22), "{what}");
                assert_eq!(d.image.color().channel_count(), channels, "{what} {mode:?}");
            }
        }
        // Lossless formats keep the pixels.
        let d = decode(&cases[0].0, ColorMode::Color, None).unwrap();
        assert_eq!(d, rgb, "lossless WebP");
        let d = decode(
            &encoded(&grey16, ImageFormat::Tiff),
            ColorMode::Unchanged,
            None,
        )
        .unwrap();
        assert_eq!(d, grey16, "16-bit grey TIFF kept as it is");
        // GIF stays unsupported (OpenCV 4.11 as built for MXNet does not read it).
        assert_eq!(
            decode(
                b"GIF89a\x01\x00\x01\x00\x00\x00\x00;",
                ColorMode::Color,
                None
            )
            .unwrap_err(),
            ImageOpError::Unsupported("gif".into())
        );
        // Damaged files are typed errors naming the format.
        let webp = &cases[0].0;
        assert!(matches!(
            decode(&webp[..webp.len() / 2], ColorMode::Color, None).unwrap_err(),
            ImageOpError::Corrupt { format: "WebP", .. }
        ));
    }

    /// A 4×2 BMP with a `bpp`-bit palette of `palette` (BGRA entries), or a 32-bit one
    /// with the given compression; every byte of the pixel data is 1 (palette index 1)
    /// for palette files, 0x40 otherwise.
    fn bmp(bpp: u16, compression: u32, palette: &[[u8; 4]]) -> Vec<u8> {
        let (w, h) = (4u32, 2u32);
        let row = ((w * u32::from(bpp)).div_ceil(32) * 4) as usize;
        let extra = if compression == 3 { 16 } else { 0 }; // masks, V4-style
        let header_len = 40 + extra;
        let offset = 14 + header_len + palette.len() as u32 * 4;
        let mut b = Vec::new();
        b.extend(b"BM");
        b.extend((offset + row as u32 * h).to_le_bytes());
        b.extend([0; 4]);
        b.extend(offset.to_le_bytes());
        b.extend(header_len.to_le_bytes());
        b.extend(w.to_le_bytes());
        b.extend(h.to_le_bytes());
        b.extend(1u16.to_le_bytes());
        b.extend(bpp.to_le_bytes());
        b.extend(compression.to_le_bytes());
        b.extend([0; 12]);
        b.extend((palette.len() as u32).to_le_bytes());
        b.extend([0; 4]);
        if compression == 3 {
            for mask in [0x00FF_0000u32, 0x0000_FF00, 0x0000_00FF, 0] {
                b.extend(mask.to_le_bytes());
            }
        }
        for p in palette {
            b.extend(p);
        }
        let fill = if bpp <= 8 { 1 } else { 0x40 };
        b.extend(vec![fill; row * h as usize]);
        b
    }

    #[test]
    fn bmp_channels_follow_opencv() {
        let unchanged = |bytes: &[u8]| {
            let img = decode(bytes, ColorMode::Unchanged, None).unwrap();
            (img.color().channel_count(), img.dimensions_pair())
        };
        let grey = [[0, 0, 0, 0], [0x40, 0x40, 0x40, 0], [255, 255, 255, 0]];
        let colour = [[0, 0, 0, 0], [0x40, 0x40, 0x40, 0], [255, 0, 0, 0]];
        assert_eq!(unchanged(&bmp(8, 0, &grey)), (1, (4, 2)));
        assert_eq!(unchanged(&bmp(8, 0, &colour)), (3, (4, 2)));
        assert_eq!(unchanged(&bmp(32, 0, &[])), (3, (4, 2)));
        // 32-bit with bit masks: four channels, alpha 255 when there is no alpha mask.
        let img = decode(&bmp(32, 3, &[]), ColorMode::Unchanged, None).unwrap();
        assert_eq!(
            img,
            DynamicImage::ImageRgba8(ImageBuffer::from_pixel(
                4,
                2,
                image::Rgba([0x40, 0x40, 0x40, 255])
            ))
        );
        assert_eq!(
            decode(&bmp(32, 3, &[]), ColorMode::Color, None)
                .unwrap()
                .color()
                .channel_count(),
            3
        );
        // The grey palette image decodes to its grey values.
        let img = decode(&bmp(8, 0, &grey), ColorMode::Unchanged, None).unwrap();
        assert_eq!(
            img,
            DynamicImage::ImageLuma8(ImageBuffer::from_pixel(4, 2, Luma([0x40])))
        );
    }

    #[test]
    fn a_jpeg_without_its_final_eoi_decodes_with_resize() {
        let smooth =
            ImageBuffer::from_fn(640, 480, |x, y| Rgb([(x % 256) as u8, (y % 256) as u8, 90]));
        let jpg = encode(&DynamicImage::ImageRgb8(smooth), Encoding::Jpg, 90).unwrap();
        assert_eq!(jpg[jpg.len() - 2..], [0xFF, 0xD9]);
        let cut = &jpg[..jpg.len() - 2];
        for mode in [ColorMode::Color, ColorMode::Gray] {
            let whole = decode_scaled(&jpg, mode, Some(60)).unwrap();
            assert_eq!((whole.scale, whole.image.width()), (8, 80));
            // Both scaled decoders refuse it; the full-size one takes it.
            let d = decode_scaled(cut, mode, Some(60)).unwrap();
            assert_eq!((d.width, d.height, d.scale), (640, 480, 1), "{mode:?}");
            assert_eq!(d.image.dimensions_pair(), (640, 480));
            let out = prepare(&d, false, Some(60), Some(Interpolation::Bilinear));
            assert_eq!(out.dimensions_pair(), (80, 60));
            let reference = prepare(&whole, false, Some(60), Some(Interpolation::Bilinear));
            let diff: u64 = out
                .as_bytes()
                .iter()
                .zip(reference.as_bytes())
                .map(|(&a, &b)| u64::from(a.abs_diff(b)))
                .sum();
            assert!(diff as f64 / (out.as_bytes().len() as f64) < 3.0);
        }
        // Cut inside the image data: still an error, whatever the scale.
        for hint in [None, Some(60)] {
            assert!(matches!(
                decode_scaled(&jpg[..jpg.len() / 2], ColorMode::Color, hint).unwrap_err(),
                ImageOpError::Corrupt { format: "JPEG", .. }
            ));
        }
    }

    #[test]
    fn grey_output_from_cmyk_and_rgb_jpegs() {
        let cmyk: Vec<u8> = (0..64 * 48 * 4).map(|i| (i % 200) as u8).collect();
        let mut bytes = Vec::new();
        jpeg_encoder::Encoder::new(&mut bytes, 90)
            .encode(&cmyk, 64, 48, jpeg_encoder::ColorType::Cmyk)
            .unwrap();
        let rgb_jpg = include_bytes!("../tests/fixtures/rgb_colorspace.jpg");
        for (file, size) in [(&bytes[..], (64, 48)), (&rgb_jpg[..], (48, 32))] {
            let colour = decode(file, ColorMode::Color, None).unwrap();
            let grey = decode(file, ColorMode::Gray, None).unwrap();
            assert!(matches!(grey, DynamicImage::ImageLuma8(_)));
            assert_eq!(grey.dimensions_pair(), size);
            // The same BT.601 conversion as every other grey output.
            assert_eq!(grey, to_gray(colour));
        }
    }

    #[test]
    fn arithmetic_coded_jpegs_decode_with_their_exif_orientation() {
        let arith = include_bytes!("../tests/fixtures/arith_exif6.jpg");
        let huffman = include_bytes!("../tests/fixtures/huffman_exif6.jpg");
        // The same coefficients (jpegtran -arithmetic of the Huffman file): libjpeg
        // decodes both to the same pixels.
        let want = decode_jpeg_libjpeg(huffman, 1, false, (48, 32)).unwrap();
        assert_eq!(
            decode_jpeg_libjpeg(arith, 1, false, (48, 32)).unwrap(),
            want
        );
        for (mode, size) in [
            (ColorMode::Color, (32, 48)), // EXIF orientation 6: rotated
            (ColorMode::Gray, (32, 48)),
            (ColorMode::Unchanged, (48, 32)), // not applied, as in OpenCV
        ] {
            for hint in [None, Some(16)] {
                let d = decode_scaled(arith, mode, hint).unwrap();
                assert_eq!((d.width, d.height), size, "{mode:?} {hint:?}");
                let h = decode_scaled(huffman, mode, hint).unwrap();
                assert_eq!((h.width, h.height, h.scale), (d.width, d.height, d.scale));
            }
        }
        let mut rotated = want.clone();
        rotated.apply_orientation(image::metadata::Orientation::Rotate90);
        assert_eq!(decode(arith, ColorMode::Color, None).unwrap(), rotated);
        assert_eq!(jpeg_exif(huffman).map(<[u8]>::len), Some(26));
        assert_eq!(jpeg_exif(&huffman[..30]), None); // cut inside the segment
    }

    /// `png` with the chunk `kind` + `data` inserted after IHDR.
    fn with_chunk(png: &[u8], kind: &[u8; 4], data: &[u8]) -> Vec<u8> {
        let mut chunk = Vec::new();
        chunk.extend((data.len() as u32).to_be_bytes());
        chunk.extend(kind);
        chunk.extend(data);
        chunk.extend(crc32(&chunk[4..]).to_be_bytes());
        [&png[..33], &chunk[..], &png[33..]].concat()
    }

    #[test]
    fn png_exif_orientation_is_applied_in_colour_and_grey_modes() {
        let img = noise(6, 4);
        let png = encode(&img, Encoding::Png, 3).unwrap();
        // Big-endian TIFF header, one IFD entry: Orientation (0x0112) = 6.
        let mut exif = b"MM\x00\x2a\x00\x00\x00\x08\x00\x01".to_vec();
        exif.extend([0x01, 0x12, 0, 3, 0, 0, 0, 1, 0, 6, 0, 0, 0, 0, 0, 0]);
        let png6 = with_chunk(&png, b"eXIf", &exif);
        let mut rotated = img.clone();
        rotated.apply_orientation(image::metadata::Orientation::Rotate90);
        assert_eq!(decode(&png6, ColorMode::Color, None).unwrap(), rotated);
        let grey = decode_scaled(&png6, ColorMode::Gray, Some(2)).unwrap();
        assert_eq!((grey.width, grey.height), (4, 6));
        assert_eq!(decode(&png6, ColorMode::Unchanged, None).unwrap(), img);
    }

    #[test]
    fn grey_png_with_trns_stays_grey_unchanged() {
        let grey = DynamicImage::ImageLuma8(noise(5, 3).to_luma8());
        let png = encode(&grey, Encoding::Png, 3).unwrap();
        let first = grey.as_bytes()[0];
        let trns = with_chunk(&png, b"tRNS", &[0, first]);
        assert_eq!(decode(&trns, ColorMode::Unchanged, None).unwrap(), grey);
        assert_eq!(
            decode(&trns, ColorMode::Color, None)
                .unwrap()
                .color()
                .channel_count(),
            3
        );
        // RGB with tRNS gets alpha, as in OpenCV.
        let rgb = noise(5, 3);
        let png = encode(&rgb, Encoding::Png, 3).unwrap();
        let trns = with_chunk(&png, b"tRNS", &[0, 1, 0, 2, 0, 3]);
        assert!(matches!(
            decode(&trns, ColorMode::Unchanged, None).unwrap(),
            DynamicImage::ImageRgba8(_)
        ));
    }

    #[test]
    fn output_size_is_checked_before_resizing() {
        let thin = Decoded {
            image: DynamicImage::new_rgb8(1, 20000),
            width: 1,
            height: 20000,
            scale: 1,
        };
        let (w, h) = prepared_size(&thin, false, Some(256));
        assert_eq!((w, h), (256, 5_120_000));
        assert_eq!(
            check_output_size(w, h, Encoding::Png),
            Err(ImageOpError::OutputTooLarge {
                width: 256,
                height: 5_120_000
            })
        );
        assert!(check_output_size(256, 76_800, Encoding::Png).is_ok());
        assert!(check_output_size(256, 76_800, Encoding::Jpg).is_err());
        assert_eq!(prepared_size(&thin, true, Some(256)), (256, 256));
        assert_eq!(prepared_size(&thin, false, None), (1, 20000));
    }

    trait Dims {
        fn dimensions_pair(&self) -> (u32, u32);
    }
    impl Dims for DynamicImage {
        fn dimensions_pair(&self) -> (u32, u32) {
            (self.width(), self.height())
        }
    }

    #[test]
    fn color_modes() {
        let jpg = encode(&noise(40, 30), Encoding::Jpg, 95).unwrap();
        assert!(matches!(
            decode(&jpg, ColorMode::Color, None).unwrap(),
            DynamicImage::ImageRgb8(_)
        ));
        assert!(matches!(
            decode(&jpg, ColorMode::Gray, None).unwrap(),
            DynamicImage::ImageLuma8(_)
        ));
        let rgba = DynamicImage::ImageRgba8(noise(5, 4).to_rgba8());
        let png = encode(&rgba, Encoding::Png, 95).unwrap();
        assert!(matches!(
            decode(&png, ColorMode::Unchanged, None).unwrap(),
            DynamicImage::ImageRgba8(_)
        ));
        assert!(matches!(
            decode(&png, ColorMode::Color, None).unwrap(),
            DynamicImage::ImageRgb8(_)
        ));
        // PNG is lossless: the round trip keeps every sample.
        assert_eq!(decode(&png, ColorMode::Unchanged, None).unwrap(), rgba);
    }

    #[test]
    fn bad_inputs_are_typed_errors() {
        assert_eq!(
            decode(b"", ColorMode::Color, None).unwrap_err(),
            ImageOpError::Empty
        );
        assert_eq!(
            decode(b"hello, world", ColorMode::Color, None).unwrap_err(),
            ImageOpError::NotAnImage
        );
        let jpg = encode(&noise(64, 48), Encoding::Jpg, 95).unwrap();
        let cut = &jpg[..jpg.len() / 2];
        assert!(matches!(
            decode(cut, ColorMode::Color, None).unwrap_err(),
            ImageOpError::Corrupt { format: "JPEG", .. }
        ));
        assert!(matches!(
            decode_scaled(
                &encode(&noise(640, 480), Encoding::Jpg, 95).unwrap()[..2000],
                ColorMode::Color,
                Some(60)
            )
            .unwrap_err(),
            ImageOpError::Corrupt { format: "JPEG", .. }
        ));
        let png = encode(&noise(64, 48), Encoding::Png, 1).unwrap();
        assert!(matches!(
            decode(&png[..png.len() - 40], ColorMode::Color, None).unwrap_err(),
            ImageOpError::Corrupt { format: "PNG", .. }
        ));
        // A PNG header announcing 100000 x 100000 pixels.
        let mut huge = png[..33].to_vec();
        huge[16..20].copy_from_slice(&100_000u32.to_be_bytes());
        huge[20..24].copy_from_slice(&100_000u32.to_be_bytes());
        let crc = crc32(&huge[12..29]);
        huge[29..33].copy_from_slice(&crc.to_be_bytes());
        assert!(matches!(
            decode(&huge, ColorMode::Color, None).unwrap_err(),
            ImageOpError::TooLarge { .. } | ImageOpError::Corrupt { .. }
        ));
    }

    fn crc32(data: &[u8]) -> u32 {
        let mut crc = 0xFFFF_FFFFu32;
        for &b in data {
            crc ^= u32::from(b);
            for _ in 0..8 {
                crc = if crc & 1 != 0 {
                    (crc >> 1) ^ 0xEDB8_8320
                } else {
                    crc >> 1
                };
            }
        }
        !crc
    }

    #[test]
    fn probe_reads_headers() {
        let jpg = encode(&noise(40, 30), Encoding::Jpg, 95).unwrap();
        assert_eq!(
            probe(&jpg),
            Some(ImageInfo {
                format: "jpeg".into(),
                width: 40,
                height: 30,
                channels: 3
            })
        );
        let png = encode(
            &DynamicImage::ImageLuma8(noise(3, 2).to_luma8()),
            Encoding::Png,
            3,
        )
        .unwrap();
        assert_eq!(probe(&png).unwrap().channels, 1);
        assert_eq!(probe(b"text"), None);
        let webp = encoded(&noise(7, 5), ImageFormat::WebP);
        assert_eq!(
            probe(&webp),
            Some(ImageInfo {
                format: "webp".into(),
                width: 7,
                height: 5,
                channels: 3
            })
        );
        let tiff = encoded(
            &DynamicImage::ImageRgba8(noise(3, 4).to_rgba8()),
            ImageFormat::Tiff,
        );
        assert_eq!(
            probe(&tiff).map(|i| (i.format, i.width, i.height, i.channels)),
            Some(("tiff".into(), 3, 4, 4))
        );
    }

    #[test]
    fn resize_and_interpolations() {
        let img = noise(500, 375);
        for code in [0, 1, 2, 3, 4] {
            let interp = Interpolation::from_cv2_code(code).unwrap();
            let out = resize_shorter(&img, 256, interp);
            assert_eq!((out.width(), out.height()), (341, 256));
        }
        assert_eq!(
            Interpolation::auto((10, 10), (20, 20)),
            Interpolation::Cubic
        );
        assert_eq!(Interpolation::auto((10, 10), (5, 5)), Interpolation::Area);
        assert_eq!(
            Interpolation::auto((10, 10), (20, 5)),
            Interpolation::Bilinear
        );
        assert_eq!(Interpolation::from_cv2_code(9), None);
    }
}
