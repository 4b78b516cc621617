//! Test images for this crate's tests and those of the crates above it: PNG bytes of a
//! generated RGB image, a coordinate-coded pixel, and ImageNet normalisation inverted.

use std::io::Cursor;

use image::{DynamicImage, ImageFormat, Rgb, RgbImage};

use crate::preprocess::{IMAGENET_MEAN, IMAGENET_STD};

/// PNG bytes of an RGB image whose pixel (x, y) is `f(x, y)`.
pub fn png_rgb(w: u32, h: u32, f: impl Fn(u32, u32) -> [u8; 3]) -> Vec<u8> {
    let img = RgbImage::from_fn(w, h, |x, y| Rgb(f(x, y)));
    let mut buf = Cursor::new(Vec::new());
    DynamicImage::ImageRgb8(img)
        .write_to(&mut buf, ImageFormat::Png)
        .expect("PNG encoding into memory");
    buf.into_inner()
}

/// Pixel (x, y) of a coordinate-coded image: R = x, G = y, B = 7.
pub fn coords(x: u32, y: u32) -> [u8; 3] {
    [x as u8, y as u8, 7]
}

/// Inverts ImageNet normalisation of channel `c` back to the 0..255 byte.
pub fn denorm(v: f32, c: usize) -> u8 {
    ((v * IMAGENET_STD[c] + IMAGENET_MEAN[c]) * 255.0).round() as u8
}
