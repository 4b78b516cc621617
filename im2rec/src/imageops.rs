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
//! - **EXIF orientation** of JPEGs is applied in `Color` and `Gray` modes and ignored
//!   in `Unchanged` mode, like `cv2.imread`.
//! - **Pixels are not bit-identical** to OpenCV: resizing uses convolution filters
//!   (anti-aliased, like PIL), not OpenCV's 2×2-tap bilinear; decoders and encoders are
//!   different implementations of the same standards.
//! - **Big JPEGs** can be decoded at 1/2, 1/4 or 1/8 scale with the scaled IDCT
//!   when the caller only needs a shorter side of `n` ([`decode_scaled`]), by
//!   libjpeg-turbo's decoder (C, like OpenCV's); files it does not take cleanly (CMYK,
//!   12-bit, or any libjpeg warning such as truncated data) go to the pure-Rust
//!   `jpeg-decoder`, whose result or error stands. The crop and
//!   resize are then done on the reduced image with fractional source coordinates
//!   ([`prepare`]), so the output size is exactly the one full-size decoding gives.
//! - **Bad input** gives an [`ImageOpError`]: empty, not an image, corrupt or truncated
//!   (JPEGs are decoded in strict mode: a premature end is an error, where OpenCV
//!   would pad with grey and carry on), or larger than [`MAX_PIXELS`].

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
        ImageFormat::Png => {
            let image = decode_png(bytes, color)?;
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
/// decoding pixels. `None` when the bytes are not a JPEG or PNG with a valid header.
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
        ImageFormat::Png => {
            let dec = image::codecs::png::PngDecoder::new(Cursor::new(bytes)).ok()?;
            let (width, height) = dec.dimensions();
            Some(ImageInfo {
                format: "png".into(),
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

fn decode_jpeg(
    bytes: &[u8],
    color: ColorMode,
    min_shorter_side: Option<u32>,
) -> Result<Decoded, ImageOpError> {
    use zune_core::colorspace::ColorSpace;
    let mut dec = zune_jpeg::JpegDecoder::new_with_options(
        zune_core::bytestream::ZCursor::new(bytes),
        zune_options(),
    );
    dec.decode_headers().map_err(jpeg_error)?;
    let info = dec.info().ok_or_else(|| jpeg_error("no frame header"))?;
    let (width, height) = (u32::from(info.width), u32::from(info.height));
    check_size(width, height)?;
    let orientation = match color {
        ColorMode::Unchanged => image::metadata::Orientation::NoTransforms,
        _ => dec
            .exif()
            .and_then(|exif| image::metadata::Orientation::from_exif_chunk(exif))
            .unwrap_or(image::metadata::Orientation::NoTransforms),
    };
    let input = dec.input_colorspace().unwrap_or(ColorSpace::RGB);
    let gray_out = match color {
        ColorMode::Gray => true,
        ColorMode::Color => false,
        ColorMode::Unchanged => input == ColorSpace::Luma,
    };
    let scale = min_shorter_side.map_or(1, |n| dct_scale(width, height, n));
    let mut image = if scale > 1 {
        decode_jpeg_scaled(bytes, scale, gray_out, (width, height))?
    } else {
        let out = if gray_out {
            ColorSpace::Luma
        } else {
            ColorSpace::RGB
        };
        dec.set_options(zune_options().jpeg_set_out_colorspace(out));
        let pixels = dec.decode().map_err(jpeg_error)?;
        let (w, h) = dec
            .dimensions()
            .ok_or_else(|| jpeg_error("no frame header"))?;
        let (w, h) = (w as u32, h as u32);
        if gray_out {
            ImageBuffer::<Luma<u8>, _>::from_raw(w, h, pixels).map(DynamicImage::ImageLuma8)
        } else {
            ImageBuffer::<Rgb<u8>, _>::from_raw(w, h, pixels).map(DynamicImage::ImageRgb8)
        }
        .ok_or_else(|| jpeg_error("decoder returned a short buffer"))?
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

fn is_transposing(o: image::metadata::Orientation) -> bool {
    use image::metadata::Orientation::*;
    matches!(o, Rotate90 | Rotate270 | Rotate90FlipH | Rotate270FlipH)
}

/// Decode a `width`×`height` (header size) JPEG at 1/`scale`: with libjpeg-turbo's
/// decoder when it takes the file cleanly (baseline or progressive, grey, YCbCr or
/// RGB, no warning), else with jpeg-decoder, whose result or error then stands.
fn decode_jpeg_scaled(
    bytes: &[u8],
    scale: u32,
    gray: bool,
    (width, height): (u32, u32),
) -> Result<DynamicImage, ImageOpError> {
    let (w, h) = (width.div_ceil(scale), height.div_ceil(scale));
    if let Ok(pixels) = crate::libjpeg::decode_scaled(bytes, scale, gray, w, h) {
        let image = if gray {
            ImageBuffer::<Luma<u8>, _>::from_raw(w, h, pixels).map(DynamicImage::ImageLuma8)
        } else {
            ImageBuffer::<Rgb<u8>, _>::from_raw(w, h, pixels).map(DynamicImage::ImageRgb8)
        };
        return image.ok_or_else(|| jpeg_error("decoder returned a short buffer"));
    }
    decode_jpeg_scaled_fallback(bytes, scale, gray)
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

fn decode_png(bytes: &[u8], color: ColorMode) -> Result<DynamicImage, ImageOpError> {
    let corrupt = |e: image::ImageError| ImageOpError::Corrupt {
        format: "PNG",
        detail: e.to_string(),
    };
    let mut dec = image::codecs::png::PngDecoder::new(Cursor::new(bytes)).map_err(corrupt)?;
    let (width, height) = dec.dimensions();
    check_size(width, height)?;
    let png_error = |e: image::ImageError| match e {
        image::ImageError::Limits(_) => ImageOpError::TooLarge { width, height },
        other => corrupt(other),
    };
    let mut limits = image::Limits::default();
    limits.max_alloc = Some(MAX_PIXELS * 8);
    dec.set_limits(limits).map_err(png_error)?;
    let image = DynamicImage::from_decoder(dec).map_err(png_error)?;
    Ok(match color {
        ColorMode::Color => to_rgb(image),
        ColorMode::Gray => to_gray(image),
        ColorMode::Unchanged => match image {
            DynamicImage::ImageLumaA8(_) => DynamicImage::ImageRgba8(image.to_rgba8()),
            DynamicImage::ImageLumaA16(_) => DynamicImage::ImageRgba16(image.to_rgba16()),
            other => other,
        },
    })
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
            let fast = decode_jpeg_scaled(&jpg, 4, gray, (1030, 777)).unwrap();
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
