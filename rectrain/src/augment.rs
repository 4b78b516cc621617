//! Training augmentation, named as SageMaker names it (`augmentation_type`,
//! reference §4.5 and §5.1), applied in MXNet `ImageRecordIter`'s order (§4.2):
//!
//! | type | adds |
//! |---|---|
//! | none | centre crop (exactly the validation path) |
//! | `crop` | random crop position + horizontal flip with probability ½ |
//! | `crop_color` | + random hue ±36, saturation ±50, lightness ±50 in OpenCV's 8-bit HLS (H 0–180, L/S 0–255, clamped) |
//! | `crop_color_transform` | + rotation ≤ 10°, shear ≤ 0.1, aspect change ≤ 0.25 as one affine warp (white fill) |
//!
//! Steps: decode → `resize` (shorter side) → affine warp → upscale if smaller than
//! H×W → crop (random or centred) → HLS jitter → normalise to CHW, flipping while
//! writing. Decoding, resizing, cropping and normalisation are
//! [`resnet::preprocess`]'s, so training differs from validation only by the random
//! draws. All randomness comes from the RNG the caller passes (the loader derives
//! one per record from seed, epoch and record index).

use std::fmt;
use std::str::FromStr;

use rand::{Rng, RngExt};
use serde::{Deserialize, Serialize};

use resnet::preprocess::{
    self, center_offsets, check_out, cover, decode_resized, Pixels, Prepared, PreprocessConfig,
    PreprocessError,
};

/// SageMaker's `augmentation_type`.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Default, Hash)]
#[serde(rename_all = "snake_case")]
pub enum AugmentationType {
    /// No augmentation: centre crop (the hyperparameter left unset).
    #[default]
    None,
    /// `crop`: random crop and random horizontal flip.
    Crop,
    /// `crop_color`: `crop` plus random hue/saturation/lightness.
    CropColor,
    /// `crop_color_transform`: `crop_color` plus rotation, shear and aspect change.
    CropColorTransform,
}

/// An `augmentation_type` value that is not one of SageMaker's names.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("augmentation_type {0:?}: expected crop, crop_color or crop_color_transform (or none)")]
pub struct ParseAugmentationError(pub String);

impl AugmentationType {
    /// The SageMaker name (`none` for [`AugmentationType::None`]).
    pub fn as_str(self) -> &'static str {
        match self {
            AugmentationType::None => "none",
            AugmentationType::Crop => "crop",
            AugmentationType::CropColor => "crop_color",
            AugmentationType::CropColorTransform => "crop_color_transform",
        }
    }

    /// The ImageRecordIter settings this level stands for (MXNet's
    /// `set_data_aug_level` 1–3, whose numbers SageMaker documents).
    pub fn params(self) -> AugmentParams {
        let mut p = AugmentParams::default();
        if self == AugmentationType::None {
            return p;
        }
        p.rand_crop = true;
        p.rand_mirror = true;
        if self == AugmentationType::Crop {
            return p;
        }
        p.random_h = 36;
        p.random_s = 50;
        p.random_l = 50;
        if self == AugmentationType::CropColor {
            return p;
        }
        p.max_rotate_angle = 10;
        p.max_shear_ratio = 0.1;
        p.max_aspect_ratio = 0.25;
        p
    }
}

impl fmt::Display for AugmentationType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for AugmentationType {
    type Err = ParseAugmentationError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.trim() {
            "" | "none" | "None" => Ok(AugmentationType::None),
            "crop" => Ok(AugmentationType::Crop),
            "crop_color" => Ok(AugmentationType::CropColor),
            "crop_color_transform" => Ok(AugmentationType::CropColorTransform),
            other => Err(ParseAugmentationError(other.to_string())),
        }
    }
}

/// The individual ImageRecordIter augmentation parameters (reference §4.1).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct AugmentParams {
    /// Crop at a random position instead of the centre.
    pub rand_crop: bool,
    /// Flip left-right with probability ½.
    pub rand_mirror: bool,
    /// Hue offset bound, OpenCV units (0–180 scale).
    pub random_h: i32,
    /// Saturation offset bound (0–255 scale).
    pub random_s: i32,
    /// Lightness offset bound (0–255 scale).
    pub random_l: i32,
    /// Rotation bound in whole degrees.
    pub max_rotate_angle: i32,
    /// Shear bound.
    pub max_shear_ratio: f32,
    /// Aspect-ratio change bound: the ratio is drawn from `[1 − r, 1 + r]`.
    pub max_aspect_ratio: f32,
    /// Fill value for pixels the warp brings in from outside the image.
    pub fill_value: u8,
}

impl Default for AugmentParams {
    fn default() -> Self {
        AugmentParams {
            rand_crop: false,
            rand_mirror: false,
            random_h: 0,
            random_s: 0,
            random_l: 0,
            max_rotate_angle: 0,
            max_shear_ratio: 0.0,
            max_aspect_ratio: 0.0,
            fill_value: 255,
        }
    }
}

impl AugmentParams {
    fn affine_active(&self) -> bool {
        self.max_rotate_angle > 0 || self.max_shear_ratio > 0.0 || self.max_aspect_ratio > 0.0
    }

    fn color_active(&self) -> bool {
        self.random_h != 0 || self.random_s != 0 || self.random_l != 0
    }
}

/// What the augmentation did to one image (for tests and notices).
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct Augmented {
    /// Size after decode/resize and whether the image had to be upscaled.
    pub prepared: Prepared,
    /// Top-left corner of the H×W window in the (warped, upscaled) image.
    pub crop: (u32, u32),
    /// The size the window was taken from.
    pub crop_source: (u32, u32),
    /// Flipped left-right.
    pub mirrored: bool,
    /// Hue, saturation, lightness offsets applied.
    pub hsl: (i32, i32, i32),
    /// The affine warp's rotation (degrees), shear and aspect ratio, when applied.
    pub affine: Option<(i32, f32, f32)>,
}

/// Decode, augment and normalise one training image into `out` (C·H·W floats).
pub fn augment_train<R: Rng + ?Sized>(
    bytes: &[u8],
    cfg: &PreprocessConfig,
    params: &AugmentParams,
    rng: &mut R,
    out: &mut [f32],
) -> Result<Augmented, PreprocessError> {
    cfg.validate()?;
    check_out(cfg, out)?;
    let img = decode_resized(bytes, cfg)?;
    Ok(augment_pixels(img, cfg, params, rng, out))
}

/// [`augment_train`] on an image that is already decoded and resized.
/// `out` must hold C·H·W floats and `img` must have C channels.
pub fn augment_pixels<R: Rng + ?Sized>(
    img: Pixels,
    cfg: &PreprocessConfig,
    params: &AugmentParams,
    rng: &mut R,
    out: &mut [f32],
) -> Augmented {
    let (th, tw) = (cfg.height() as u32, cfg.width() as u32);
    let mut report = Augmented {
        prepared: Prepared {
            source_size: (img.width(), img.height()),
            upscaled: false,
        },
        ..Augmented::default()
    };
    let draw_crop = |rng: &mut R, w: u32, h: u32| {
        if params.rand_crop {
            (rng.random_range(0..=w - tw), rng.random_range(0..=h - th))
        } else {
            center_offsets(w, h, tw, th)
        }
    };
    // After this block `window` is the H×W crop (pixels owned) or `None` when the
    // crop is still a window of `img` at `report.crop`.
    let (img, mut window) = if params.affine_active() {
        let (m, drawn) = draw_affine(&img, params, rng);
        report.affine = Some(drawn);
        let (w, h) = (img.width(), img.height());
        if w >= tw && h >= th {
            // The warp keeps the size, so the crop is known before warping: warp only
            // the window (the same pixels a full warp followed by the crop gives).
            report.crop_source = (w, h);
            report.crop = draw_crop(rng, w, h);
            let (x, y) = report.crop;
            let window = warp_affine_window(&img, &m, params.fill_value, x, y, tw, th);
            (img, Some(window))
        } else {
            let warped = warp_affine(&img, &m, params.fill_value);
            (warped, None)
        }
    } else {
        (img, None)
    };
    let img = if window.is_none() {
        let (img, upscaled) = cover(img, tw, th);
        report.prepared.upscaled = upscaled;
        let (w, h) = (img.width(), img.height());
        report.crop_source = (w, h);
        report.crop = draw_crop(rng, w, h);
        img
    } else {
        img
    };
    if params.color_active() && img.channels() == 3 {
        let (x, y) = report.crop;
        let win = window.get_or_insert_with(|| img.crop(x, y, tw, th));
        let d = draw_hls(params, rng);
        report.hsl = d;
        hls_jitter(win.as_raw_mut(), d.0, d.1, d.2);
    }
    report.mirrored = params.rand_mirror && rng.random_bool(0.5);
    let (src, sx, sy) = match &window {
        Some(win) => (win, 0, 0),
        None => (&img, report.crop.0, report.crop.1),
    };
    preprocess::write_chw_window(
        src,
        sx,
        sy,
        tw,
        th,
        &cfg.normalization,
        report.mirrored,
        out,
    );
    report
}

/// MXNet's draw: `int h = U(0,1)·2·random_h − random_h` (truncated toward zero).
fn draw_hls<R: Rng + ?Sized>(p: &AugmentParams, rng: &mut R) -> (i32, i32, i32) {
    let mut draw = |bound: i32| -> i32 {
        let u: f32 = rng.random();
        (u * bound as f32 * 2.0 - bound as f32) as i32
    };
    let h = draw(p.random_h);
    let s = draw(p.random_s);
    let l = draw(p.random_l);
    (h, s, l)
}

/// Shift every RGB pixel of `rgb` (interleaved) in OpenCV's 8-bit HLS space by
/// (`dh`, `ds`, `dl`), clamping H to 0–180 and L, S to 0–255 (MXNet clamps, it does
/// not wrap the hue).
pub fn hls_jitter(rgb: &mut [u8], dh: i32, ds: i32, dl: i32) {
    if dh == 0 && ds == 0 && dl == 0 {
        return;
    }
    for px in rgb.chunks_exact_mut(3) {
        let [h, l, s] = rgb_to_hls([px[0], px[1], px[2]]);
        let h = (i32::from(h) + dh).clamp(0, 180) as u8;
        let l = (i32::from(l) + dl).clamp(0, 255) as u8;
        let s = (i32::from(s) + ds).clamp(0, 255) as u8;
        px.copy_from_slice(&hls_to_rgb([h, l, s]));
    }
}

/// Round a non-negative value to the nearest u8, saturating (the `as` cast clamps
/// and maps NaN to 0); cheaper than `f32::round`, which is a libm call.
#[inline(always)]
fn sat_u8(v: f32) -> u8 {
    (v + 0.5) as u8
}

/// OpenCV `COLOR_RGB2HLS` for 8-bit images: H in 0–180 (degrees / 2), L and S in 0–255.
#[inline(always)]
pub fn rgb_to_hls(rgb: [u8; 3]) -> [u8; 3] {
    const INV255: f32 = 1.0 / 255.0;
    let r = f32::from(rgb[0]) * INV255;
    let g = f32::from(rgb[1]) * INV255;
    let b = f32::from(rgb[2]) * INV255;
    let vmax = r.max(g).max(b);
    let vmin = r.min(g).min(b);
    let diff = vmax - vmin;
    let sum = vmax + vmin;
    let l = sum * 0.5;
    if diff <= f32::EPSILON {
        return [0, sat_u8(l * 255.0), 0];
    }
    let s = if l < 0.5 {
        diff / sum
    } else {
        diff / (2.0 - sum)
    };
    let k = 60.0 / diff;
    let mut h = if vmax == r {
        (g - b) * k
    } else if vmax == g {
        (b - r) * k + 120.0
    } else {
        (r - g) * k + 240.0
    };
    if h < 0.0 {
        h += 360.0;
    }
    [sat_u8(h * 0.5), sat_u8(l * 255.0), sat_u8(s * 255.0)]
}

/// OpenCV `COLOR_HLS2RGB` for 8-bit images (the inverse of [`rgb_to_hls`]).
#[inline(always)]
pub fn hls_to_rgb(hls: [u8; 3]) -> [u8; 3] {
    const INV255: f32 = 1.0 / 255.0;
    let l = f32::from(hls[1]) * INV255;
    let s = f32::from(hls[2]) * INV255;
    if hls[2] == 0 {
        let v = sat_u8(l * 255.0);
        return [v, v, v];
    }
    let p2 = if l <= 0.5 {
        l * (1.0 + s)
    } else {
        l + s - l * s
    };
    let p1 = 2.0 * l - p2;
    // H is 0..=180 (degrees / 2), so h = H·2/60 is in 0..=6.
    let mut h = f32::from(hls[0]) * (1.0 / 30.0);
    if h >= 6.0 {
        h -= 6.0;
    }
    let sector = (h as usize).min(5);
    let f = h - sector as f32;
    let tab = [p2, p1, p1 + (p2 - p1) * (1.0 - f), p1 + (p2 - p1) * f];
    // OpenCV's table gives (b, g, r) indices per sector.
    const SECTOR: [[usize; 3]; 6] = [
        [1, 3, 0],
        [1, 0, 2],
        [3, 0, 1],
        [0, 2, 1],
        [0, 1, 3],
        [2, 1, 0],
    ];
    let [bi, gi, ri] = SECTOR[sector];
    [
        sat_u8(tab[ri] * 255.0),
        sat_u8(tab[gi] * 255.0),
        sat_u8(tab[bi] * 255.0),
    ]
}

/// MXNet's affine augmentation matrix (forward map, source → destination) for a
/// `w`×`h` image: rotation `angle` degrees, shear `s`, aspect `ratio`, scale 1,
/// centred so the image centre stays the centre.
pub fn affine_matrix(w: u32, h: u32, angle: i32, s: f32, ratio: f32) -> [[f32; 3]; 2] {
    let rad = f64::from(angle) / 180.0 * std::f64::consts::PI;
    let (a, b) = (rad.cos() as f32, rad.sin() as f32);
    let scale = 1.0f32;
    let hs = 2.0 * scale / (1.0 + ratio);
    let ws = ratio * hs;
    let m00 = hs * a - s * b * ws;
    let m10 = -b * ws;
    let m01 = hs * b + s * a * ws;
    let m11 = a * ws;
    let (cols, rows) = (w as f32, h as f32);
    let new_w = scale * cols;
    let new_h = scale * rows;
    let m02 = (new_w - (m00 * cols + m01 * rows)) / 2.0;
    let m12 = (new_h - (m10 * cols + m11 * rows)) / 2.0;
    [[m00, m01, m02], [m10, m11, m12]]
}

/// Draw MXNet's affine parameters for `img` (in MXNet's order: shear, angle, aspect).
/// Returns the forward matrix and (angle, shear, ratio).
fn draw_affine<R: Rng + ?Sized>(
    img: &Pixels,
    p: &AugmentParams,
    rng: &mut R,
) -> ([[f32; 3]; 2], (i32, f32, f32)) {
    let u: f32 = rng.random();
    let shear = u * p.max_shear_ratio * 2.0 - p.max_shear_ratio;
    let angle = if p.max_rotate_angle > 0 {
        rng.random_range(-p.max_rotate_angle..=p.max_rotate_angle)
    } else {
        0
    };
    let u: f32 = rng.random();
    let ratio = u * p.max_aspect_ratio * 2.0 - p.max_aspect_ratio + 1.0;
    let m = affine_matrix(img.width(), img.height(), angle, shear, ratio);
    (m, (angle, shear, ratio))
}

/// `cv::warpAffine(src, dst, m, src.size(), INTER_LINEAR, BORDER_CONSTANT, fill)`:
/// every output pixel samples the source at `m⁻¹ · (x, y)` bilinearly; neighbours
/// outside the source count as `fill`. A singular `m` gives a filled image.
pub fn warp_affine(img: &Pixels, m: &[[f32; 3]; 2], fill: u8) -> Pixels {
    warp_affine_window(img, m, fill, 0, 0, img.width(), img.height())
}

/// The `ow`×`oh` window at (`x0`, `y0`) of [`warp_affine`]'s output (same pixels,
/// without computing the rest of the image).
pub fn warp_affine_window(
    img: &Pixels,
    m: &[[f32; 3]; 2],
    fill: u8,
    x0: u32,
    y0: u32,
    ow: u32,
    oh: u32,
) -> Pixels {
    let (w, h) = (img.width() as usize, img.height() as usize);
    let ch = img.channels();
    let mut out = match img {
        Pixels::Rgb(_) => Pixels::Rgb(image::RgbImage::from_pixel(ow, oh, image::Rgb([fill; 3]))),
        Pixels::Gray(_) => Pixels::Gray(image::GrayImage::from_pixel(ow, oh, image::Luma([fill]))),
    };
    let [[a, b, c], [d, e, f]] = m.map(|r| r.map(f64::from));
    let det = a * e - b * d;
    if det.abs() < 1e-12 || w == 0 || h == 0 {
        return out;
    }
    // Inverse of [[a b c] [d e f]]: x_src = ia*x + ib*y + ic, y_src = id*x + ie*y + if.
    let (ia, ib, id, ie) = (e / det, -b / det, -d / det, a / det);
    let ic = -(ia * c + ib * f);
    let if_ = -(id * c + ie * f);
    let src = img.as_raw();
    let dst = out.as_raw_mut();
    let stride = w * ch;
    let fillf = f32::from(fill);
    let (wf, hf) = (w as f64, h as f64);
    let (ow, oh) = (ow as usize, oh as usize);
    let sample = |xi: isize, yi: isize, k: usize| -> f32 {
        if xi < 0 || yi < 0 || xi as usize >= w || yi as usize >= h {
            fillf
        } else {
            f32::from(src[yi as usize * stride + xi as usize * ch + k])
        }
    };
    for oy in 0..oh {
        let y = (y0 as usize + oy) as f64;
        let (row_x, row_y) = (ib * y + ic, ie * y + if_);
        let dst_row = &mut dst[oy * ow * ch..(oy + 1) * ow * ch];
        for ox in 0..ow {
            let x = (x0 as usize + ox) as f64;
            let sx = ia * x + row_x;
            let sy = id * x + row_y;
            if !(sx > -1.0 && sy > -1.0 && sx < wf && sy < hf) {
                continue; // all four neighbours are outside: stays `fill`
            }
            let (xf, yf) = (sx.floor(), sy.floor());
            let (fx, fy) = ((sx - xf) as f32, (sy - yf) as f32);
            let (xi, yi) = (xf as isize, yf as isize);
            let px = &mut dst_row[ox * ch..(ox + 1) * ch];
            if xi >= 0 && yi >= 0 && (xi as usize) + 1 < w && (yi as usize) + 1 < h {
                // Interior: all four neighbours inside, no bounds tests per sample.
                let i00 = yi as usize * stride + xi as usize * ch;
                let (r0, r1) = (
                    &src[i00..i00 + 2 * ch],
                    &src[i00 + stride..i00 + stride + 2 * ch],
                );
                for k in 0..ch {
                    let (p00, p10) = (f32::from(r0[k]), f32::from(r0[ch + k]));
                    let (p01, p11) = (f32::from(r1[k]), f32::from(r1[ch + k]));
                    let top = p00 + (p10 - p00) * fx;
                    let bottom = p01 + (p11 - p01) * fx;
                    px[k] = sat_u8(top + (bottom - top) * fy);
                }
            } else {
                for (k, v) in px.iter_mut().enumerate() {
                    let p00 = sample(xi, yi, k);
                    let p10 = sample(xi + 1, yi, k);
                    let p01 = sample(xi, yi + 1, k);
                    let p11 = sample(xi + 1, yi + 1, k);
                    let top = p00 + (p10 - p00) * fx;
                    let bottom = p01 + (p11 - p01) * fx;
                    *v = sat_u8(top + (bottom - top) * fy);
                }
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;
    use rand_pcg::Pcg64Mcg;
    use resnet::preprocess::{preprocess_eval, EvalMode, IMAGENET_MEAN, IMAGENET_STD};
    use resnet::testing::{coords, denorm, png_rgb};

    fn rng(seed: u64) -> Pcg64Mcg {
        Pcg64Mcg::seed_from_u64(seed)
    }

    fn photo(w: u32, h: u32) -> Vec<u8> {
        png_rgb(w, h, |x, y| {
            [
                (x * 7 % 256) as u8,
                (y * 5 % 256) as u8,
                ((x * y) % 251) as u8,
            ]
        })
    }

    #[test]
    fn names_parse_and_print_like_sagemaker() {
        for t in [
            AugmentationType::None,
            AugmentationType::Crop,
            AugmentationType::CropColor,
            AugmentationType::CropColorTransform,
        ] {
            assert_eq!(t.as_str().parse::<AugmentationType>().unwrap(), t);
            let json = serde_json::to_string(&t).unwrap();
            assert_eq!(json, format!("\"{}\"", t.as_str()));
        }
        assert!("crop-color".parse::<AugmentationType>().is_err());
        let p = AugmentationType::CropColorTransform.params();
        assert_eq!((p.random_h, p.random_s, p.random_l), (36, 50, 50));
        assert_eq!(p.max_rotate_angle, 10);
        assert_eq!((p.max_shear_ratio, p.max_aspect_ratio), (0.1, 0.25));
        assert!(AugmentationType::Crop.params().rand_mirror);
        assert!(!AugmentationType::Crop.params().color_active());
        assert!(!AugmentationType::CropColor.params().affine_active());
    }

    #[test]
    fn none_is_exactly_the_validation_path() {
        let cfg = PreprocessConfig::new([3, 16, 16], Some(20));
        let bytes = photo(40, 30);
        let mut a = vec![0.0; cfg.len()];
        let mut b = vec![0.0; cfg.len()];
        let params = AugmentationType::None.params();
        augment_train(&bytes, &cfg, &params, &mut rng(1), &mut a).unwrap();
        preprocess_eval(&bytes, &cfg, EvalMode::ResizeCrop, &mut b).unwrap();
        assert_eq!(a, b);
    }

    #[test]
    fn same_seed_same_output_other_seed_differs() {
        let cfg = PreprocessConfig::new([3, 24, 24], Some(32));
        let bytes = photo(60, 40);
        let params = AugmentationType::CropColorTransform.params();
        let run = |seed| {
            let mut out = vec![0.0; cfg.len()];
            let rep = augment_train(&bytes, &cfg, &params, &mut rng(seed), &mut out).unwrap();
            (out, rep)
        };
        let (a, ra) = run(42);
        let (b, rb) = run(42);
        assert_eq!(a, b);
        assert_eq!(ra, rb);
        let differs = (43..48).filter(|s| run(*s).0 != a).count();
        assert_eq!(differs, 5, "every other seed should give different pixels");
    }

    #[test]
    fn flip_really_mirrors() {
        // Crop only: find one seed that flips and one that doesn't at the same
        // crop (fixed crop: image exactly the target size).
        let cfg = PreprocessConfig::new([3, 6, 10], None);
        let bytes = png_rgb(10, 6, coords);
        let params = AugmentationType::Crop.params();
        let mut seen = [false, false];
        for seed in 0..64 {
            let mut out = vec![0.0; cfg.len()];
            let rep = augment_train(&bytes, &cfg, &params, &mut rng(seed), &mut out).unwrap();
            assert_eq!(rep.crop, (0, 0));
            for row in 0..6 {
                for col in 0..10 {
                    let x = if rep.mirrored { 9 - col } else { col };
                    assert_eq!(denorm(out[row * 10 + col], 0) as usize, x);
                    assert_eq!(denorm(out[60 + row * 10 + col], 1) as usize, row);
                }
            }
            seen[rep.mirrored as usize] = true;
        }
        assert_eq!(seen, [true, true], "both flip outcomes occur");
    }

    #[test]
    fn random_crop_stays_in_bounds_and_takes_the_right_window() {
        let cfg = PreprocessConfig::new([3, 8, 12], None);
        let bytes = png_rgb(30, 20, coords);
        let params = AugmentParams {
            rand_crop: true,
            ..AugmentParams::default()
        };
        let mut positions = std::collections::HashSet::new();
        for seed in 0..200 {
            let mut out = vec![0.0; cfg.len()];
            let rep = augment_train(&bytes, &cfg, &params, &mut rng(seed), &mut out).unwrap();
            let (x, y) = rep.crop;
            assert!(x + 12 <= 30 && y + 8 <= 20, "{x},{y}");
            positions.insert((x, y));
            // The window's top-left pixel is (x, y) in the source.
            assert_eq!(denorm(out[0], 0) as u32, x);
            assert_eq!(denorm(out[96], 1) as u32, y);
        }
        assert!(positions.len() > 50, "crops spread: {}", positions.len());
        assert!(positions.iter().any(|p| p.0 == 0) && positions.iter().any(|p| p.0 == 18));
    }

    #[test]
    fn hls_conversion_matches_opencv_on_known_colours() {
        assert_eq!(rgb_to_hls([255, 0, 0]), [0, 128, 255]);
        assert_eq!(rgb_to_hls([0, 255, 0]), [60, 128, 255]);
        assert_eq!(rgb_to_hls([0, 0, 255]), [120, 128, 255]);
        assert_eq!(rgb_to_hls([128, 128, 128]), [0, 128, 0]);
        // L = 128 is a hair above 0.5, so the minimum channel comes back as 1, as in
        // OpenCV (2·128/255 − 1 = 0.0039 → 1).
        assert_eq!(hls_to_rgb([60, 128, 255]), [1, 255, 1]);
        assert_eq!(hls_to_rgb([0, 127, 255]), [254, 0, 0]);
        assert_eq!(hls_to_rgb([90, 64, 0]), [64, 64, 64]);
        // Hue +60 (120°) turns red into green.
        let mut px = [255, 0, 0];
        hls_jitter(&mut px, 60, 0, 0);
        assert_eq!(px, [1, 255, 1]);
        // Round trip within rounding for a sweep of colours (H is stored in 2° steps,
        // which moves a saturated channel by up to 255/60 ≈ 4.3).
        for r in (0..=255).step_by(15) {
            for g in (0..=255).step_by(17) {
                for b in (0..=255).step_by(51) {
                    let back = hls_to_rgb(rgb_to_hls([r, g, b]));
                    for (x, y) in back.iter().zip([r, g, b]) {
                        assert!((*x as i32 - y as i32).abs() <= 5, "{r},{g},{b} -> {back:?}");
                    }
                }
            }
        }
    }

    #[test]
    fn colour_jitter_keeps_values_in_range() {
        let cfg = PreprocessConfig::new([3, 16, 16], None);
        let bytes = photo(16, 16);
        let params = AugmentationType::CropColor.params();
        let lo: Vec<f32> = (0..3)
            .map(|c| -IMAGENET_MEAN[c] / IMAGENET_STD[c])
            .collect();
        let hi: Vec<f32> = (0..3)
            .map(|c| (1.0 - IMAGENET_MEAN[c]) / IMAGENET_STD[c])
            .collect();
        let mut any_change = false;
        let mut plain = vec![0.0; cfg.len()];
        preprocess_eval(&bytes, &cfg, EvalMode::ResizeCrop, &mut plain).unwrap();
        for seed in 0..20 {
            let mut out = vec![0.0; cfg.len()];
            let rep = augment_train(&bytes, &cfg, &params, &mut rng(seed), &mut out).unwrap();
            let (h, s, l) = rep.hsl;
            assert!(
                h.abs() <= 36 && s.abs() <= 50 && l.abs() <= 50,
                "{:?}",
                rep.hsl
            );
            for (i, v) in out.iter().enumerate() {
                let c = i / 256;
                assert!(*v >= lo[c] - 1e-5 && *v <= hi[c] + 1e-5);
            }
            any_change |= rep.hsl != (0, 0, 0) && !rep.mirrored && out != plain;
        }
        assert!(any_change);
        // Extreme offsets saturate rather than wrap.
        let mut px = vec![10, 200, 30, 250, 250, 250];
        hls_jitter(&mut px, 180, 255, 255);
        assert_eq!(px, vec![255, 255, 255, 255, 255, 255]);
    }

    #[test]
    fn affine_identity_is_exact_and_warp_keeps_size() {
        let img = Pixels::Rgb(image::RgbImage::from_fn(9, 7, |x, y| {
            image::Rgb(coords(x, y))
        }));
        let m = affine_matrix(9, 7, 0, 0.0, 1.0);
        assert_eq!(m, [[1.0, 0.0, 0.0], [0.0, 1.0, 0.0]]);
        assert_eq!(warp_affine(&img, &m, 255), img);
        // 180° rotation about the centre maps (x, y) to (w-1-x, h-1-y)... up to the
        // half-pixel convention: OpenCV rotates about (w/2, h/2), so pixel x lands at
        // w - x: the column that falls outside is filled.
        let m = affine_matrix(9, 7, 180, 0.0, 1.0);
        let r = warp_affine(&img, &m, 255);
        assert_eq!((r.width(), r.height()), (9, 7));
        let px = |p: &Pixels, x: usize, y: usize| p.as_raw()[(y * 9 + x) * 3];
        assert_eq!(px(&r, 1, 1), px(&img, 8, 6));
        assert_eq!(px(&r, 0, 3), 255, "column 0 comes from x = 9, outside");
        let cfg = PreprocessConfig::new([3, 20, 20], Some(24));
        let bytes = photo(50, 30);
        let params = AugmentationType::CropColorTransform.params();
        for seed in 0..10 {
            let mut out = vec![0.0; cfg.len()];
            let rep = augment_train(&bytes, &cfg, &params, &mut rng(seed), &mut out).unwrap();
            let (angle, shear, ratio) = rep.affine.unwrap();
            assert!(angle.abs() <= 10 && shear.abs() <= 0.1 && (ratio - 1.0).abs() <= 0.25);
            // Warp output has the resized size (40x24); crop within it.
            assert_eq!(rep.crop_source, (40, 24));
            assert!(out.iter().all(|v| v.is_finite()));
        }
    }

    #[test]
    fn warping_a_window_equals_cropping_the_full_warp() {
        let img = Pixels::Rgb(image::RgbImage::from_fn(41, 29, |x, y| {
            image::Rgb([(x * 6) as u8, (y * 8) as u8, ((x * y) % 256) as u8])
        }));
        for (angle, shear, ratio) in [(7, 0.05, 1.2), (-10, -0.1, 0.75), (3, 0.0, 1.0)] {
            let m = affine_matrix(41, 29, angle, shear, ratio);
            let full = warp_affine(&img, &m, 255);
            for (x, y) in [(0, 0), (5, 3), (21, 13)] {
                let win = warp_affine_window(&img, &m, 255, x, y, 20, 16);
                assert_eq!(
                    win,
                    full.crop(x, y, 20, 16),
                    "{angle} {shear} {ratio} at {x},{y}"
                );
            }
            // Corners come from outside the rotated source: filled white.
            if angle != 3 {
                assert_eq!(&full.as_raw()[..3], &[255, 255, 255]);
            }
        }
        let gray = Pixels::Gray(image::GrayImage::from_fn(10, 10, |x, _| {
            image::Luma([x as u8])
        }));
        let m = affine_matrix(10, 10, 0, 0.0, 1.0);
        assert_eq!(warp_affine(&gray, &m, 0), gray);
    }

    #[test]
    fn upscale_notice_in_training_too() {
        let cfg = PreprocessConfig::new([3, 16, 16], None);
        let bytes = photo(8, 12);
        let mut out = vec![0.0; cfg.len()];
        let params = AugmentationType::Crop.params();
        let rep = augment_train(&bytes, &cfg, &params, &mut rng(3), &mut out).unwrap();
        assert!(rep.prepared.upscaled);
        assert_eq!(rep.crop_source, (16, 24));
        assert_eq!(rep.crop.0, 0);
        assert!(rep.crop.1 <= 8);
    }
}
