//! Scaled JPEG decoding with libjpeg-turbo's decoder (the C code vendored by the
//! `mozjpeg-sys` crate), through the small C function in `libjpeg_shim.c`.
//!
//! This is the fast path for big photos: libjpeg-turbo's Huffman decoder is several
//! times faster than `jpeg-decoder`'s, and it decodes straight at 1/2, 1/4 or 1/8
//! with the scaled IDCT. libjpeg's fatal errors are caught inside the C function
//! (`setjmp`/`longjmp` never leave it), so a bad file is an [`Outcome`], never an
//! abort. The caller falls back to the pure-Rust decoders for anything this path does
//! not take cleanly: CMYK/YCCK or 12-bit files, and any file on which libjpeg warns
//! (truncated or corrupt data, which it would pad silently). Arithmetic-coded files
//! are decoded here (mozjpeg-sys's `arith_dec` feature): the pure-Rust decoders do
//! not read them.

use std::ffi::{c_char, c_int, c_uchar, c_uint, CStr};

// The shim calls into mozjpeg-sys's static library; this makes sure it is linked.
use mozjpeg_sys as _;

extern "C" {
    fn im2rec_jpeg_read_header(
        data: *const c_uchar,
        len: usize,
        width: *mut c_uint,
        height: *mut c_uint,
        gray: *mut c_int,
        msg: *mut c_char,
        msg_len: usize,
    ) -> c_int;

    fn im2rec_jpeg_decode_scaled(
        data: *const c_uchar,
        len: usize,
        scale: c_uint,
        gray: c_int,
        want_w: c_uint,
        want_h: c_uint,
        out: *mut c_uchar,
        out_len: usize,
        msg: *mut c_char,
        msg_len: usize,
    ) -> c_int;
}

/// Why libjpeg did not produce the image.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// libjpeg stopped with a fatal error (its message).
    Error(String),
    /// libjpeg decoded the image but warned (the first warning): truncated or
    /// corrupt data that it padded or guessed.
    Warning(String),
    /// A colour space left to the other decoder (CMYK, YCCK, ...).
    Unsupported,
    /// The output size or channel count was not the one asked for.
    Geometry,
}

/// What [`read_header`] found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Header {
    /// Image width.
    pub width: u32,
    /// Image height.
    pub height: u32,
    /// Stored as one grey component.
    pub gray: bool,
}

/// Read the headers of `bytes` (up to the first scan) with libjpeg: size and
/// colour space. Only the files [`decode_scaled`] may take are accepted (grey,
/// YCbCr, RGB; a warning is a failure).
pub fn read_header(bytes: &[u8]) -> Result<Header, Outcome> {
    let (mut width, mut height, mut gray): (c_uint, c_uint, c_int) = (0, 0, 0);
    let mut msg = [0u8; 200];
    // SAFETY: the pointers are valid for the whole call (`msg` for `msg.len()`
    // bytes, NUL included); the C function never unwinds or longjmps out of itself.
    let code = unsafe {
        im2rec_jpeg_read_header(
            bytes.as_ptr(),
            bytes.len(),
            &mut width,
            &mut height,
            &mut gray,
            msg.as_mut_ptr().cast::<c_char>(),
            msg.len(),
        )
    };
    match code {
        0 => Ok(Header {
            width,
            height,
            gray: gray != 0,
        }),
        code => Err(outcome(code, &msg)),
    }
}

fn outcome(code: c_int, msg: &[u8]) -> Outcome {
    let message = || {
        CStr::from_bytes_until_nul(msg)
            .map(|text| text.to_string_lossy().into_owned())
            .unwrap_or_default()
    };
    match code {
        1 => Outcome::Error(message()),
        2 => Outcome::Warning(message()),
        3 => Outcome::Unsupported,
        _ => Outcome::Geometry,
    }
}

/// Decode `bytes` at 1/`scale` (1, 2, 4 or 8) into `width`×`height` pixels, grey
/// (1 byte per pixel) or RGB (3 bytes), where `width`×`height` is the scaled size
/// libjpeg gives (the header size divided by `scale`, rounded up).
pub fn decode_scaled(
    bytes: &[u8],
    scale: u32,
    gray: bool,
    width: u32,
    height: u32,
) -> Result<Vec<u8>, Outcome> {
    let channels: usize = if gray { 1 } else { 3 };
    let len = (width as usize)
        .checked_mul(height as usize)
        .and_then(|n| n.checked_mul(channels))
        .ok_or(Outcome::Geometry)?;
    let mut out = vec![0u8; len];
    let mut msg = [0u8; 200];
    // SAFETY: every pointer is valid for the length passed with it for the whole
    // call; the C function writes at most `out.len()` bytes to `out` and at most
    // `msg.len()` bytes (NUL included) to `msg`, and it never unwinds or longjmps
    // out of itself.
    let code = unsafe {
        im2rec_jpeg_decode_scaled(
            bytes.as_ptr(),
            bytes.len(),
            scale,
            c_int::from(gray),
            width,
            height,
            out.as_mut_ptr(),
            out.len(),
            msg.as_mut_ptr().cast::<c_char>(),
            msg.len(),
        )
    };
    match code {
        0 => Ok(out),
        code => Err(outcome(code, &msg)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use jpeg_encoder::{ColorType, Encoder};

    /// A smooth colour picture with some texture, `w`×`h` RGB.
    fn picture(w: u32, h: u32) -> Vec<u8> {
        let mut px = Vec::with_capacity((w * h * 3) as usize);
        for y in 0..h {
            for x in 0..w {
                let t = ((x * 7 + y * 13) % 32) as u8;
                px.extend([(x * 255 / w) as u8, (y * 255 / h) as u8, 96 + t]);
            }
        }
        px
    }

    fn jpeg(px: &[u8], w: u32, h: u32, color: ColorType, progressive: bool) -> Vec<u8> {
        let mut out = Vec::new();
        let mut enc = Encoder::new(&mut out, 92);
        enc.set_progressive(progressive);
        enc.encode(px, w as u16, h as u16, color).unwrap();
        out
    }

    fn mean_abs_diff(a: &[u8], b: &[u8]) -> f64 {
        assert_eq!(a.len(), b.len());
        let sum: u64 = a
            .iter()
            .zip(b)
            .map(|(&x, &y)| u64::from(x.abs_diff(y)))
            .sum();
        sum as f64 / a.len() as f64
    }

    /// Reference: jpeg-decoder's scaled decode of the same file, as RGB.
    fn reference(bytes: &[u8], w: u16, h: u16) -> Vec<u8> {
        let mut dec = jpeg_decoder::Decoder::new(bytes);
        dec.read_info().unwrap();
        dec.scale(w, h).unwrap();
        dec.decode().unwrap()
    }

    #[test]
    fn scaled_rgb_matches_the_pure_rust_decoder() {
        let (w, h) = (803, 611);
        for progressive in [false, true] {
            let bytes = jpeg(&picture(w, h), w, h, ColorType::Rgb, progressive);
            for scale in [1, 2, 4, 8] {
                let (sw, sh) = (w.div_ceil(scale), h.div_ceil(scale));
                let px = decode_scaled(&bytes, scale, false, sw, sh).unwrap();
                assert_eq!(px.len(), (sw * sh * 3) as usize);
                let want = reference(&bytes, sw as u16, sh as u16);
                let d = mean_abs_diff(&px, &want);
                assert!(d < 2.0, "scale 1/{scale}, progressive {progressive}: {d}");
            }
        }
    }

    #[test]
    fn grey_output_is_the_luma_of_the_colour_output() {
        let (w, h) = (320, 240);
        let bytes = jpeg(&picture(w, h), w, h, ColorType::Rgb, false);
        let grey = decode_scaled(&bytes, 4, true, 80, 60).unwrap();
        let rgb = decode_scaled(&bytes, 4, false, 80, 60).unwrap();
        assert_eq!(grey.len(), 80 * 60);
        let luma: Vec<u8> = rgb
            .chunks_exact(3)
            .map(|p| {
                let [r, g, b] = [p[0], p[1], p[2]].map(f64::from);
                (0.299 * r + 0.587 * g + 0.114 * b).round() as u8
            })
            .collect();
        assert!(mean_abs_diff(&grey, &luma) < 1.5);
        // A grey file decodes to grey and to RGB with equal channels.
        let flat: Vec<u8> = (0..w * h).map(|i| (i % 251) as u8).collect();
        let bytes = jpeg(&flat, w, h, ColorType::Luma, false);
        let rgb = decode_scaled(&bytes, 2, false, 160, 120).unwrap();
        assert!(rgb.chunks_exact(3).all(|p| p[0] == p[1] && p[1] == p[2]));
        assert_eq!(
            decode_scaled(&bytes, 2, true, 160, 120).unwrap().len(),
            160 * 120
        );
    }

    #[test]
    fn truncated_and_corrupt_files_are_reported_not_padded() {
        let (w, h) = (640, 480);
        let bytes = jpeg(&picture(w, h), w, h, ColorType::Rgb, false);
        // Cut in the entropy-coded data: libjpeg would pad with grey and warn.
        match decode_scaled(&bytes[..bytes.len() / 2], 8, false, 80, 60) {
            Err(Outcome::Warning(msg)) => assert!(msg.contains("end of JPEG"), "{msg}"),
            other => panic!("expected a warning, got {other:?}"),
        }
        // Cut in the headers: a fatal error, caught inside the C code.
        match decode_scaled(&bytes[..100], 8, false, 80, 60) {
            Err(Outcome::Error(msg)) => assert!(!msg.is_empty()),
            other => panic!("expected an error, got {other:?}"),
        }
        // Not a JPEG at all, and nothing at all.
        assert!(matches!(
            decode_scaled(b"\xff\xd8\xff\xe0 this is not a jpeg", 2, false, 1, 1),
            Err(Outcome::Error(_))
        ));
        assert!(matches!(
            decode_scaled(b"", 2, false, 1, 1),
            Err(Outcome::Error(_))
        ));
        // The file is fine again afterwards (no state survives a failed call).
        assert!(decode_scaled(&bytes, 8, false, 80, 60).is_ok());
    }

    #[test]
    fn other_colour_spaces_and_wrong_sizes_are_declined() {
        let (w, h) = (64, 48);
        let cmyk: Vec<u8> = (0..w * h * 4).map(|i| (i % 200) as u8).collect();
        for color in [ColorType::Cmyk, ColorType::CmykAsYcck] {
            let bytes = jpeg(&cmyk, w, h, color, false);
            assert_eq!(
                decode_scaled(&bytes, 2, false, 32, 24),
                Err(Outcome::Unsupported)
            );
        }
        let bytes = jpeg(&picture(w, h), w, h, ColorType::Rgb, false);
        assert_eq!(
            decode_scaled(&bytes, 2, false, 33, 24),
            Err(Outcome::Geometry)
        );
    }

    #[test]
    fn threads_decode_independently() {
        let (w, h) = (400, 300);
        let bytes = jpeg(&picture(w, h), w, h, ColorType::Rgb, true);
        let want = decode_scaled(&bytes, 4, false, 100, 75).unwrap();
        std::thread::scope(|s| {
            let handles: Vec<_> = (0..4)
                .map(|i| {
                    let (bytes, want) = (&bytes, &want);
                    s.spawn(move || {
                        for _ in 0..10 {
                            if i % 2 == 0 {
                                assert_eq!(&decode_scaled(bytes, 4, false, 100, 75).unwrap(), want);
                            } else {
                                assert!(decode_scaled(
                                    &bytes[..bytes.len() / 3],
                                    4,
                                    false,
                                    100,
                                    75
                                )
                                .is_err());
                            }
                        }
                    })
                })
                .collect();
            for h in handles {
                h.join().unwrap();
            }
        });
    }
}
