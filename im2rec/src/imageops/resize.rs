//! Geometry and resampling: im2rec.py's shorter-side size and centre-crop box, the
//! interpolation filters, and the crop + resize of a (possibly DCT-reduced) image in
//! one `fast_image_resize` pass ([`prepare`]).

use fast_image_resize as fr;
use image::DynamicImage;

use super::Decoded;

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
