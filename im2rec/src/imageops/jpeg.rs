//! JPEG decoding: the header (zune-jpeg, or libjpeg for arithmetic-coded files, with
//! the EXIF orientation), the choice of DCT scale ([`dct_scale`]) and the decoders
//! tried in turn ([`decode_jpeg`]): libjpeg-turbo and jpeg-decoder at a reduced
//! scale, zune-jpeg, libjpeg-turbo and jpeg-decoder at full size.

use image::{DynamicImage, ImageBuffer, Luma, Rgb};

use super::color::{to_gray, to_rgb};
use super::{check_size, libjpeg, ColorMode, Decoded, ImageOpError, MAX_SIDE};

/// The largest DCT downscale (8, 4, 2, else 1) that keeps the shorter side of a
/// `width`×`height` JPEG at least `min_shorter_side` pixels.
pub fn dct_scale(width: u32, height: u32, min_shorter_side: u32) -> u32 {
    let short = u64::from(width.min(height));
    [8u32, 4, 2]
        .into_iter()
        .find(|&d| short >= u64::from(min_shorter_side.max(1)) * u64::from(d))
        .unwrap_or(1)
}
pub(super) fn zune_options() -> zune_core::options::DecoderOptions {
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
pub(super) struct JpegHeader {
    pub(super) width: u32,
    pub(super) height: u32,
    /// Components in the file (1 grey, 3 YCbCr/RGB, 4 CMYK/YCCK).
    pub(super) components: u8,
    /// Stored as one grey component.
    luma: bool,
    /// Stored as grey or YCbCr: grey output is the Y channel. Otherwise (RGB, CMYK,
    /// YCCK) grey output is computed from the RGB output.
    has_luma_channel: bool,
    /// zune-jpeg parsed the headers, so it may decode the file.
    zune: bool,
    exif_orientation: Option<image::metadata::Orientation>,
}

/// The frame header as the decoders will see it: zune-jpeg's reader, else
/// libjpeg-turbo's (which reads files zune-jpeg refuses). [`super::probe`] uses it too,
/// so that a JPEG that decodes always probes with the size it decodes to.
pub(super) fn jpeg_header(bytes: &[u8]) -> Result<JpegHeader, ImageOpError> {
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
                components: info.components,
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
        Err(zune_error) => match libjpeg::read_header(bytes) {
            Ok(h) => Ok(JpegHeader {
                width: h.width,
                height: h.height,
                components: if h.gray { 1 } else { 3 },
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
pub(super) fn jpeg_exif(bytes: &[u8]) -> Option<&[u8]> {
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
pub(super) fn decode_jpeg(
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
pub(super) fn decode_jpeg_libjpeg(
    bytes: &[u8],
    scale: u32,
    gray: bool,
    (w, h): (u32, u32),
) -> Result<DynamicImage, ImageOpError> {
    let pixels = libjpeg::decode_scaled(bytes, scale, gray, w, h).map_err(|e| match e {
        libjpeg::Outcome::Error(m) | libjpeg::Outcome::Warning(m) => jpeg_error(m),
        libjpeg::Outcome::Unsupported => jpeg_error("colour space not supported by libjpeg"),
        libjpeg::Outcome::Geometry => jpeg_error("unexpected output size"),
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
pub(super) fn decode_jpeg_scaled_fallback(
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
