//! Encoding the output image: JPEG (`jpeg-encoder`, 4:2:0) or PNG (`image`).

use image::DynamicImage;

use super::{ImageOpError, MAX_SIDE};

/// Output codec (`--encoding`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Encoding {
    /// `.jpg`: baseline JPEG, 4:2:0 chroma subsampling (OpenCV's default).
    #[default]
    Jpg,
    /// `.png`: PNG; the quality value is the zlib level, clamped to 0–9.
    Png,
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
