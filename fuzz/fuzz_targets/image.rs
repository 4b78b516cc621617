//! im2rec's per-image transform, as `im2rec::pack::encode_item` runs it: decode (every
//! format; JPEGs through zune-jpeg, jpeg-decoder and libjpeg-turbo's C decoder behind
//! its setjmp shim), crop/resize, encode. Also the header probe.
//!
//! Input layout: one control byte, then the image file. Control bits: 0-1 colour mode
//! (Color, Gray, Unchanged, Color), 2 resize on (DCT-scaled JPEG decoding, the
//! libjpeg path), 3-4 the shorter side (1, 7, 16, 40), 5 centre crop, 6 PNG output
//! (else JPEG), 7 nearest-neighbour (else im2rec's auto filter).
//!
//! Properties: no panic, no abort (the C decoder's fatal errors must come back as
//! errors), and a decoded image has the size the decoder reported.
#![no_main]

use im2rec::imageops::{self, ColorMode, Encoding, Interpolation};
use libfuzzer_sys::fuzz_target;

/// Images that declare more pixels than this (512×512) are only probed: decoding one is
/// bounded by `imageops::MAX_PIXELS` (2^28, checked before allocating, with unit tests),
/// but filling hundreds of MB per input would slow the campaign to a crawl. (At 2^22,
/// 4-megapixel decode + resize + encode cycles held the campaign at 100–235 inputs/s;
/// the code paths are the same at any size above a few pixels.)
const FUZZ_MAX_PIXELS: u64 = 1 << 18;

fuzz_target!(|data: &[u8]| {
    let Some((&control, bytes)) = data.split_first() else {
        return;
    };
    let color = match control & 3 {
        1 => ColorMode::Gray,
        2 => ColorMode::Unchanged,
        _ => ColorMode::Color,
    };
    let resize = (control & 4 != 0).then(|| [1, 7, 16, 40][usize::from((control >> 3) & 3)]);
    let center_crop = control & 32 != 0;
    let encoding = if control & 64 != 0 {
        Encoding::Png
    } else {
        Encoding::Jpg
    };
    let interpolation = (control & 128 != 0).then_some(Interpolation::Nearest);

    if let Some(info) = imageops::probe(bytes) {
        if u64::from(info.width) * u64::from(info.height) > FUZZ_MAX_PIXELS {
            return;
        }
    }
    let Ok(decoded) = imageops::decode_scaled(bytes, color, resize) else {
        return;
    };
    assert!(matches!(decoded.scale, 1 | 2 | 4 | 8));
    assert!(decoded.image.width() >= decoded.width / decoded.scale);
    assert!(decoded.image.width() <= decoded.width.div_ceil(decoded.scale));
    assert!(decoded.image.height() <= decoded.height.div_ceil(decoded.scale));
    let (w, h) = imageops::prepared_size(&decoded, center_crop, resize);
    if imageops::check_output_size(w, h, encoding).is_err()
        || u64::from(w) * u64::from(h) > FUZZ_MAX_PIXELS
    {
        return;
    }
    let img = imageops::prepare(&decoded, center_crop, resize, interpolation);
    assert_eq!(
        (img.width(), img.height()),
        (w, h),
        "prepare gave another size"
    );
    let encoded = imageops::encode(&img, encoding, 90).expect("a prepared image encodes");
    assert!(
        imageops::probe(&encoded).is_some(),
        "own output does not probe"
    );
});
