//! The one preprocessing path shared by training, validation and `recpredict`.
//!
//! Every image goes through the same steps as MXNet's `ImageRecordIter` (reference
//! §4.2), so the numbers a model sees at prediction time match what it saw while it
//! was validated:
//!
//! 1. decode (JPEG/PNG) as RGB when `image_shape` C = 3 (gray images are expanded,
//!    alpha dropped) or as gray when C = 1;
//! 2. `resize`: the shorter side becomes `resize` (MXNet's integer formula, upscaling
//!    too); without `resize` the image keeps its size;
//! 3. if the image is smaller than H×W in either dimension it is upscaled, keeping
//!    its aspect, so that each side is at least the target (MXNet ≥ 1.3). SageMaker
//!    documents a failure here instead; we upscale and report it
//!    ([`Prepared::upscaled`]) so the caller can print a notice;
//! 4. an H×W window: centred at `((rows−H)/2, (cols−W)/2)` (integer division) for
//!    validation/prediction, at a random position for training (`augment`);
//! 5. [`image_to_chw`]: RGB order, `(pixel/255 − mean) / std` per channel, CHW f32.
//!
//! [`EvalMode::Squash`] is the SageMaker endpoint's path instead: resize to exactly
//! W×H ignoring aspect, no crop (reference §5.5).
//!
//! Nothing here prints; notices are returned.

use im2rec::imageops::{self, ColorMode, ImageOpError, Interpolation};
use image::{DynamicImage, GrayImage, RgbImage};
use serde::{Deserialize, Serialize};

/// ImageNet channel means (RGB, on 0..1 pixels): torchvision's values.
pub const IMAGENET_MEAN: [f32; 3] = [0.485, 0.456, 0.406];
/// ImageNet channel standard deviations (RGB, on 0..1 pixels).
pub const IMAGENET_STD: [f32; 3] = [0.229, 0.224, 0.225];

/// The interpolation used for every resize (like OpenCV's `INTER_LINEAR`, MXNet's
/// default `inter_method=1`).
pub const INTERPOLATION: Interpolation = Interpolation::Bilinear;

/// The largest image_shape height or width (JPEG's and im2rec's limit per side).
pub const MAX_SIDE: usize = imageops::MAX_SIDE as usize;

/// Per-channel normalisation on 0..1 pixels: `out = (p/255 − mean) / std`.
/// For a 1-channel `image_shape` the first entries are used.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
pub struct Normalization {
    /// Channel means, RGB order.
    pub mean: [f32; 3],
    /// Channel standard deviations, RGB order.
    pub std: [f32; 3],
}

impl Normalization {
    /// ImageNet's statistics (what torchvision's pretrained ResNets expect).
    pub fn imagenet() -> Self {
        Normalization {
            mean: IMAGENET_MEAN,
            std: IMAGENET_STD,
        }
    }

    /// No normalisation: the raw 0–255 pixel values (mean 0, std 1/255), what MXNet
    /// image-classification symbols such as SageMaker's ResNet take (they normalise
    /// with a BatchNorm on the input).
    pub fn raw() -> Self {
        Normalization {
            mean: [0.0; 3],
            std: [1.0 / 255.0; 3],
        }
    }

    /// Per-channel `(scale, bias)` such that `out = pixel_u8 · scale + bias`.
    fn affine(&self) -> [(f32, f32); 3] {
        let mut coef = [(0.0, 0.0); 3];
        for (c, slot) in coef.iter_mut().enumerate() {
            let std = self.std[c];
            *slot = (1.0 / (255.0 * std), -self.mean[c] / std);
        }
        coef
    }
}

impl Default for Normalization {
    fn default() -> Self {
        Normalization::imagenet()
    }
}

/// How validation/prediction fits an image to `image_shape`.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum EvalMode {
    /// Training's geometry without the randomness: shorter side to `resize` (when
    /// set), upscale if smaller than H×W, then the centred H×W window. This is what
    /// the validation accuracy is measured on.
    #[default]
    ResizeCrop,
    /// The SageMaker endpoint: resize to exactly W×H, aspect ignored, no crop.
    Squash,
}

/// The preprocessing settings, stored in the model artifact so that prediction
/// repeats training's preprocessing.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
pub struct PreprocessConfig {
    /// `[C, H, W]`; C is 1 (gray) or 3 (RGB).
    pub image_shape: [usize; 3],
    /// Shorter side in pixels before cropping (SageMaker's `resize`), if any.
    pub resize: Option<u32>,
    /// Pixel normalisation.
    pub normalization: Normalization,
}

impl PreprocessConfig {
    /// A config with ImageNet normalisation.
    pub fn new(image_shape: [usize; 3], resize: Option<u32>) -> Self {
        PreprocessConfig {
            image_shape,
            resize,
            normalization: Normalization::imagenet(),
        }
    }

    /// Channels (C).
    pub fn channels(&self) -> usize {
        self.image_shape[0]
    }

    /// Output height (H).
    pub fn height(&self) -> usize {
        self.image_shape[1]
    }

    /// Output width (W).
    pub fn width(&self) -> usize {
        self.image_shape[2]
    }

    /// Floats per image: C·H·W.
    pub fn len(&self) -> usize {
        self.image_shape.iter().product()
    }

    /// True when `image_shape` has a zero dimension.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Check the shape, the resize value and the normalisation.
    pub fn validate(&self) -> Result<(), PreprocessError> {
        let [c, h, w] = self.image_shape;
        if c != 1 && c != 3 {
            return Err(PreprocessError::Config(format!(
                "image_shape {c},{h},{w}: the channel count must be 1 or 3"
            )));
        }
        if h == 0 || w == 0 || h > MAX_SIDE || w > MAX_SIDE {
            return Err(PreprocessError::Config(format!(
                "image_shape {c},{h},{w}: height and width must be between 1 and {MAX_SIDE}"
            )));
        }
        if self.resize == Some(0) {
            return Err(PreprocessError::Config("resize must be positive".into()));
        }
        let n = &self.normalization;
        if n.std.iter().any(|s| !s.is_finite() || *s <= 0.0)
            || n.mean.iter().any(|m| !m.is_finite())
        {
            return Err(PreprocessError::Config(format!(
                "normalization mean {:?} std {:?}: std must be positive and all values finite",
                n.mean, n.std
            )));
        }
        Ok(())
    }

    fn color_mode(&self) -> ColorMode {
        if self.channels() == 1 {
            ColorMode::Gray
        } else {
            ColorMode::Color
        }
    }
}

/// Why an image could not be preprocessed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum PreprocessError {
    /// The image bytes could not be decoded.
    #[error("cannot decode the image: {0}")]
    Decode(#[source] ImageOpError),
    /// The configuration is unusable.
    #[error("invalid preprocessing settings: {0}")]
    Config(String),
    /// The output slice does not have C·H·W floats.
    #[error("output buffer holds {got} floats, C*H*W = {expected} needed")]
    OutputLen {
        /// C·H·W.
        expected: usize,
        /// The slice length given.
        got: usize,
    },
}

/// What happened to one image on its way to the tensor.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Prepared {
    /// Width and height after decoding (and `resize`), before fitting to H×W.
    pub source_size: (u32, u32),
    /// The image was smaller than H×W and was upscaled (the caller may print a notice).
    pub upscaled: bool,
}

/// An 8-bit image as the pipeline handles it: RGB for C = 3, gray for C = 1.
#[derive(Debug, Clone, PartialEq)]
pub enum Pixels {
    /// 3 interleaved channels.
    Rgb(RgbImage),
    /// 1 channel.
    Gray(GrayImage),
}

impl Pixels {
    /// Convert a decoded image to the pixel format `image_shape` asks for.
    pub fn from_dynamic(img: DynamicImage, channels: usize) -> Self {
        if channels == 1 {
            Pixels::Gray(img.into_luma8())
        } else {
            Pixels::Rgb(img.into_rgb8())
        }
    }

    /// Wrap back into a `DynamicImage` (no copy).
    pub fn into_dynamic(self) -> DynamicImage {
        match self {
            Pixels::Rgb(i) => DynamicImage::ImageRgb8(i),
            Pixels::Gray(i) => DynamicImage::ImageLuma8(i),
        }
    }

    /// Width in pixels.
    pub fn width(&self) -> u32 {
        match self {
            Pixels::Rgb(i) => i.width(),
            Pixels::Gray(i) => i.width(),
        }
    }

    /// Height in pixels.
    pub fn height(&self) -> u32 {
        match self {
            Pixels::Rgb(i) => i.height(),
            Pixels::Gray(i) => i.height(),
        }
    }

    /// Channels per pixel (3 or 1).
    pub fn channels(&self) -> usize {
        match self {
            Pixels::Rgb(_) => 3,
            Pixels::Gray(_) => 1,
        }
    }

    /// The interleaved bytes, row-major.
    pub fn as_raw(&self) -> &[u8] {
        match self {
            Pixels::Rgb(i) => i.as_raw(),
            Pixels::Gray(i) => i.as_raw(),
        }
    }

    /// The interleaved bytes, mutable.
    pub fn as_raw_mut(&mut self) -> &mut [u8] {
        match self {
            Pixels::Rgb(i) => i,
            Pixels::Gray(i) => i,
        }
    }

    /// Copy the `w`×`h` window at (`x`, `y`); the window must lie inside the image.
    pub fn crop(&self, x: u32, y: u32, w: u32, h: u32) -> Pixels {
        use image::GenericImageView;
        match self {
            Pixels::Rgb(i) => Pixels::Rgb(i.view(x, y, w, h).to_image()),
            Pixels::Gray(i) => Pixels::Gray(i.view(x, y, w, h).to_image()),
        }
    }

    fn resize_exact(self, w: u32, h: u32) -> Pixels {
        let channels = self.channels();
        let out = imageops::resize_exact(&self.into_dynamic(), w, h, INTERPOLATION);
        Pixels::from_dynamic(out, channels)
    }
}

/// Decode `bytes` in the colour mode that `image_shape` asks for and apply
/// `resize` (shorter side) when it is set. With `resize`, JPEGs are decoded at a
/// reduced DCT scale when that still leaves the shorter side ≥ `resize`.
pub fn decode_resized(bytes: &[u8], cfg: &PreprocessConfig) -> Result<Pixels, PreprocessError> {
    let hint = cfg.resize;
    let decoded =
        imageops::decode_scaled(bytes, cfg.color_mode(), hint).map_err(PreprocessError::Decode)?;
    let img = match cfg.resize {
        // The target size comes from the full-size geometry, so a DCT-reduced decode
        // gives exactly the size a full decode would.
        Some(n) => {
            let (w, h) = imageops::shorter_side_size(decoded.width, decoded.height, n);
            imageops::resize_exact(&decoded.image, w, h, INTERPOLATION)
        }
        None => decoded.image,
    };
    Ok(Pixels::from_dynamic(img, cfg.channels()))
}

/// The size that an image of `w`×`h` is upscaled to so that it covers `tw`×`th`
/// keeping its aspect (MXNet: `scale = max(th/h, tw/w)`, sides truncated), or `None`
/// when it already covers the target.
pub fn cover_size(w: u32, h: u32, tw: u32, th: u32) -> Option<(u32, u32)> {
    if w >= tw && h >= th {
        return None;
    }
    let (w, h) = (w.max(1), h.max(1));
    let scale = (f64::from(th) / f64::from(h)).max(f64::from(tw) / f64::from(w));
    // Truncate like MXNet's `static_cast<int>`, but never below the target: a scale
    // such as 7/3 can land a hair under the integer it should reach.
    let nw = ((f64::from(w) * scale + 1e-9) as u32).max(tw);
    let nh = ((f64::from(h) * scale + 1e-9) as u32).max(th);
    Some((nw, nh))
}

/// Upscale `img` (keeping aspect) when it is smaller than `tw`×`th`; returns whether
/// it was upscaled.
pub fn cover(img: Pixels, tw: u32, th: u32) -> (Pixels, bool) {
    match cover_size(img.width(), img.height(), tw, th) {
        None => (img, false),
        Some((nw, nh)) => (img.resize_exact(nw, nh), true),
    }
}

/// The top-left corner of the centred `tw`×`th` window of a `w`×`h` image
/// (`((cols−W)/2, (rows−H)/2)`, integer division). The image must cover the window.
pub fn center_offsets(w: u32, h: u32, tw: u32, th: u32) -> (u32, u32) {
    (w.saturating_sub(tw) / 2, h.saturating_sub(th) / 2)
}

/// Validation and prediction preprocessing: decode `bytes`, fit to `image_shape`
/// per `mode`, normalise into `out` (C·H·W floats, CHW, RGB).
pub fn preprocess_eval(
    bytes: &[u8],
    cfg: &PreprocessConfig,
    mode: EvalMode,
    out: &mut [f32],
) -> Result<(), PreprocessError> {
    preprocess_eval_report(bytes, cfg, mode, out).map(|_| ())
}

/// [`preprocess_eval`], also saying whether the image had to be upscaled.
pub fn preprocess_eval_report(
    bytes: &[u8],
    cfg: &PreprocessConfig,
    mode: EvalMode,
    out: &mut [f32],
) -> Result<Prepared, PreprocessError> {
    cfg.validate()?;
    check_out(cfg, out)?;
    let (th, tw) = (cfg.height() as u32, cfg.width() as u32);
    match mode {
        EvalMode::ResizeCrop => {
            let img = decode_resized(bytes, cfg)?;
            let source_size = (img.width(), img.height());
            let (img, upscaled) = cover(img, tw, th);
            let (x, y) = center_offsets(img.width(), img.height(), tw, th);
            write_chw_window(&img, x, y, tw, th, &cfg.normalization, false, out);
            Ok(Prepared {
                source_size,
                upscaled,
            })
        }
        EvalMode::Squash => {
            // A DCT-reduced decode is safe as long as both sides stay >= the target.
            let hint = Some(tw.max(th));
            let img =
                imageops::decode(bytes, cfg.color_mode(), hint).map_err(PreprocessError::Decode)?;
            let source_size = (img.width(), img.height());
            let img = Pixels::from_dynamic(img, cfg.channels()).resize_exact(tw, th);
            write_chw_window(&img, 0, 0, tw, th, &cfg.normalization, false, out);
            Ok(Prepared {
                source_size,
                upscaled: false,
            })
        }
    }
}

/// Normalise an image that already has `image_shape`'s H×W into `out` (CHW f32,
/// RGB order; a colour image is reduced to gray for C = 1 and a gray one expanded
/// for C = 3). Training and evaluation both end here.
///
/// # Panics
/// If the image is not W×H or `out` is not C·H·W long: a programming error, never
/// caused by input data (the pipeline sizes both).
pub fn image_to_chw(img: &DynamicImage, cfg: &PreprocessConfig, out: &mut [f32]) {
    let (th, tw) = (cfg.height() as u32, cfg.width() as u32);
    assert_eq!(
        (img.width(), img.height()),
        (tw, th),
        "image_to_chw: the image must already be W x H"
    );
    assert_eq!(
        out.len(),
        cfg.len(),
        "image_to_chw: out must hold C*H*W floats"
    );
    let px = Pixels::from_dynamic(img.clone(), cfg.channels());
    write_chw_window(&px, 0, 0, tw, th, &cfg.normalization, false, out);
}

/// Checks that `out` holds exactly one preprocessed image of `cfg`.
pub fn check_out(cfg: &PreprocessConfig, out: &[f32]) -> Result<(), PreprocessError> {
    if out.len() != cfg.len() {
        return Err(PreprocessError::OutputLen {
            expected: cfg.len(),
            got: out.len(),
        });
    }
    Ok(())
}

/// Write the `tw`×`th` window at (`x`, `y`) of `img` into `out` as normalised CHW
/// floats, mirrored left-right when `mirror` (MXNet flips while writing, §4.2 step 9).
/// `out` must hold `channels · tw · th` floats and the window must be inside `img`.
#[allow(clippy::too_many_arguments)]
pub fn write_chw_window(
    img: &Pixels,
    x: u32,
    y: u32,
    tw: u32,
    th: u32,
    norm: &Normalization,
    mirror: bool,
    out: &mut [f32],
) {
    let ch = img.channels();
    let (x, y, tw, th) = (x as usize, y as usize, tw as usize, th as usize);
    let stride = img.width() as usize * ch;
    debug_assert!(x + tw <= img.width() as usize && y + th <= img.height() as usize);
    debug_assert_eq!(out.len(), ch * tw * th);
    let raw = img.as_raw();
    let coef = norm.affine();
    let plane = tw * th;
    for c in 0..ch {
        // 256-entry table: the same `p · scale + bias` per value, computed once.
        let (scale, bias) = coef[c];
        let mut lut = [0.0f32; 256];
        for (p, v) in lut.iter_mut().enumerate() {
            *v = p as f32 * scale + bias;
        }
        let dst_plane = &mut out[c * plane..(c + 1) * plane];
        for (row, dst_row) in dst_plane.chunks_exact_mut(tw).enumerate() {
            let start = (y + row) * stride + x * ch;
            let src_row = &raw[start..start + tw * ch];
            let pixels = src_row.chunks_exact(ch);
            if mirror {
                for (d, px) in dst_row.iter_mut().zip(pixels.rev()) {
                    *d = lut[usize::from(px[c])];
                }
            } else {
                for (d, px) in dst_row.iter_mut().zip(pixels) {
                    *d = lut[usize::from(px[c])];
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::{coords, denorm, png_rgb};
    use image::{ImageFormat, Luma};
    use std::io::Cursor;

    /// `Normalization::raw` gives exactly the pixel values (scale 1.0, bias 0.0).
    #[test]
    fn raw_normalization_is_exact() {
        for (scale, bias) in Normalization::raw().affine() {
            assert_eq!((scale, bias), (1.0, 0.0));
        }
    }

    fn norm_value(p: u8, c: usize) -> f32 {
        (f32::from(p) / 255.0 - IMAGENET_MEAN[c]) / IMAGENET_STD[c]
    }

    #[test]
    fn known_pixel_normalises_exactly_in_rgb_order() {
        let cfg = PreprocessConfig::new([3, 1, 1], None);
        let bytes = png_rgb(1, 1, |_, _| [255, 0, 128]);
        let mut out = vec![0.0; 3];
        preprocess_eval(&bytes, &cfg, EvalMode::ResizeCrop, &mut out).unwrap();
        let expected = [
            (1.0 - 0.485) / 0.229,
            (0.0 - 0.456) / 0.224,
            (128.0 / 255.0 - 0.406) / 0.225,
        ];
        for c in 0..3 {
            assert!(
                (out[c] - expected[c]).abs() < 1e-5,
                "channel {c}: {} vs {}",
                out[c],
                expected[c]
            );
        }
        // Red really is channel 0: 2.2489..., the largest possible value for R.
        assert!((out[0] - 2.248_908_3).abs() < 1e-5);
    }

    #[test]
    fn chw_layout_and_centre_crop_offsets() {
        // 10x6 coordinate image, crop 4x2: offsets ((10-4)/2, (6-2)/2) = (3, 2).
        let cfg = PreprocessConfig::new([3, 2, 4], None);
        let bytes = png_rgb(10, 6, coords);
        let mut out = vec![0.0; cfg.len()];
        let rep = preprocess_eval_report(&bytes, &cfg, EvalMode::ResizeCrop, &mut out).unwrap();
        assert_eq!(rep.source_size, (10, 6));
        assert!(!rep.upscaled);
        let plane = 8;
        for row in 0..2 {
            for col in 0..4 {
                let i = row * 4 + col;
                assert_eq!(denorm(out[i], 0), 3 + col as u8, "R = x at {row},{col}");
                assert_eq!(denorm(out[plane + i], 1), 2 + row as u8, "G = y");
                assert_eq!(denorm(out[2 * plane + i], 2), 7, "B");
            }
        }
        // Odd remainder: 7 wide, crop 4 → offset 1 (integer division).
        assert_eq!(center_offsets(7, 5, 4, 2), (1, 1));
        assert_eq!(center_offsets(341, 256, 224, 224), (58, 16));
    }

    #[test]
    fn shorter_side_resize_then_centre_crop() {
        // 500x375 with resize 256 → 341x256 (500*256/375 = 341.33), crop 224.
        let cfg = PreprocessConfig::new([3, 224, 224], Some(256));
        let bytes = png_rgb(500, 375, |x, y| [(x % 256) as u8, (y % 256) as u8, 0]);
        let mut out = vec![0.0; cfg.len()];
        let rep = preprocess_eval_report(&bytes, &cfg, EvalMode::ResizeCrop, &mut out).unwrap();
        assert_eq!(rep.source_size, (341, 256));
        assert!(!rep.upscaled);
        // Portrait: 300x400 with resize 100 → 100x133.
        let cfg = PreprocessConfig::new([3, 32, 32], Some(100));
        let bytes = png_rgb(300, 400, coords);
        let mut out = vec![0.0; cfg.len()];
        let rep = preprocess_eval_report(&bytes, &cfg, EvalMode::ResizeCrop, &mut out).unwrap();
        assert_eq!(rep.source_size, (100, 133));
    }

    #[test]
    fn small_images_are_upscaled_keeping_aspect() {
        assert_eq!(cover_size(20, 10, 16, 16), Some((32, 16)));
        assert_eq!(cover_size(10, 40, 16, 16), Some((16, 64)));
        assert_eq!(cover_size(3, 3, 7, 7), Some((7, 7)));
        assert_eq!(cover_size(16, 16, 16, 16), None);
        assert_eq!(cover_size(100, 15, 16, 16), Some((106, 16)));
        let cfg = PreprocessConfig::new([3, 16, 16], None);
        let bytes = png_rgb(20, 10, |_, _| [10, 20, 30]);
        let mut out = vec![0.0; cfg.len()];
        let rep = preprocess_eval_report(&bytes, &cfg, EvalMode::ResizeCrop, &mut out).unwrap();
        assert!(rep.upscaled);
        assert_eq!(rep.source_size, (20, 10));
        // A flat image stays flat through the upscale.
        assert!(out[..256].iter().all(|v| denorm(*v, 0) == 10));
        assert!(out[512..].iter().all(|v| denorm(*v, 2) == 30));
    }

    #[test]
    fn squash_resizes_to_exact_shape_without_crop() {
        // Left half red, right half blue, 40x10 → squashed to 8x8: left columns red.
        let cfg = PreprocessConfig::new([3, 8, 8], None);
        let bytes = png_rgb(
            40,
            10,
            |x, _| if x < 20 { [255, 0, 0] } else { [0, 0, 255] },
        );
        let mut out = vec![0.0; cfg.len()];
        let rep = preprocess_eval_report(&bytes, &cfg, EvalMode::Squash, &mut out).unwrap();
        assert_eq!(rep.source_size, (40, 10));
        // Column 0 is red, column 7 is blue: nothing was cropped away.
        assert_eq!(denorm(out[0], 0), 255);
        assert_eq!(denorm(out[7], 0), 0);
        assert_eq!(denorm(out[128 + 7], 2), 255);
        // ResizeCrop on the same image keeps only the middle (the red/blue border).
        let mut crop = vec![0.0; cfg.len()];
        preprocess_eval(&bytes, &cfg, EvalMode::ResizeCrop, &mut crop).unwrap();
        assert_ne!(crop, out);
    }

    #[test]
    fn gray_is_expanded_for_three_channels_and_kept_for_one() {
        let img = GrayImage::from_fn(4, 4, |x, _| Luma([x as u8 * 50]));
        let mut buf = Cursor::new(Vec::new());
        DynamicImage::ImageLuma8(img)
            .write_to(&mut buf, ImageFormat::Png)
            .unwrap();
        let bytes = buf.into_inner();
        let cfg = PreprocessConfig::new([3, 4, 4], None);
        let mut out = vec![0.0; cfg.len()];
        preprocess_eval(&bytes, &cfg, EvalMode::ResizeCrop, &mut out).unwrap();
        for c in 0..3 {
            assert_eq!(denorm(out[c * 16 + 3], c), 150, "channel {c}");
        }
        let cfg1 = PreprocessConfig::new([1, 4, 4], None);
        let mut out1 = vec![0.0; 16];
        preprocess_eval(&bytes, &cfg1, EvalMode::ResizeCrop, &mut out1).unwrap();
        assert!((out1[3] - norm_value(150, 0)).abs() < 1e-5);
    }

    #[test]
    fn image_to_chw_matches_the_eval_path() {
        let cfg = PreprocessConfig::new([3, 5, 6], None);
        let bytes = png_rgb(6, 5, |x, y| [x as u8 * 40, y as u8 * 50, 200]);
        let mut a = vec![0.0; cfg.len()];
        preprocess_eval(&bytes, &cfg, EvalMode::ResizeCrop, &mut a).unwrap();
        let img = image::load_from_memory(&bytes).unwrap();
        let mut b = vec![0.0; cfg.len()];
        image_to_chw(&img, &cfg, &mut b);
        assert_eq!(a, b);
    }

    #[test]
    fn bad_input_and_bad_config_are_errors() {
        let cfg = PreprocessConfig::new([3, 4, 4], None);
        let mut out = vec![0.0; cfg.len()];
        let err = preprocess_eval(b"not an image", &cfg, EvalMode::ResizeCrop, &mut out);
        assert!(matches!(err, Err(PreprocessError::Decode(_))), "{err:?}");
        let mut short = vec![0.0; 5];
        let bytes = png_rgb(4, 4, coords);
        assert!(matches!(
            preprocess_eval(&bytes, &cfg, EvalMode::Squash, &mut short),
            Err(PreprocessError::OutputLen {
                expected: 48,
                got: 5
            })
        ));
        let bad = PreprocessConfig::new([2, 4, 4], None);
        assert!(matches!(bad.validate(), Err(PreprocessError::Config(_))));
        let mut zero_std = PreprocessConfig::new([3, 4, 4], None);
        zero_std.normalization.std[1] = 0.0;
        assert!(zero_std.validate().is_err());
    }

    #[test]
    fn config_round_trips_through_json() {
        let cfg = PreprocessConfig::new([3, 224, 224], Some(256));
        let text = serde_json::to_string(&cfg).unwrap();
        assert_eq!(
            serde_json::from_str::<PreprocessConfig>(&text).unwrap(),
            cfg
        );
        let mode: EvalMode = serde_json::from_str("\"Squash\"").unwrap();
        assert_eq!(mode, EvalMode::Squash);
    }
}
