//! The colour conversions of the colour modes, OpenCV's: to three channels, and to
//! grey with BT.601 fixed-point weights; shared by every decoder.

use image::{DynamicImage, ImageBuffer};

/// Three channels (8-bit RGB), as OpenCV's `IMREAD_COLOR`.
pub(super) fn to_rgb(image: DynamicImage) -> DynamicImage {
    match image {
        DynamicImage::ImageRgb8(_) => image,
        other => DynamicImage::ImageRgb8(other.to_rgb8()),
    }
}

/// Grey with OpenCV's BT.601 fixed-point weights (`cvtColor(..., BGR2GRAY)`).
pub(super) fn to_gray(image: DynamicImage) -> DynamicImage {
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
