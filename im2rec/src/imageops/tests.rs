//! Unit tests of the image operations.

use std::io::Cursor;

use image::{DynamicImage, ImageBuffer, ImageFormat, Luma, Rgb};

use super::color::to_gray;
use super::jpeg::{decode_jpeg_libjpeg, decode_jpeg_scaled_fallback, jpeg_exif};
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
        let fast = decode_jpeg_libjpeg(&jpg, 4, gray, (258, 195)).unwrap();
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

fn encoded(img: &DynamicImage, format: ImageFormat) -> Vec<u8> {
    let mut out = Cursor::new(Vec::new());
    img.write_to(&mut out, format).unwrap();
    out.into_inner()
}

#[test]
fn webp_bmp_tiff_pnm_decode_like_opencv() {
    let rgb = noise(33, 22);
    let rgba = DynamicImage::ImageRgba8(rgb.to_rgba8());
    let grey = DynamicImage::ImageLuma8(rgb.to_luma8());
    let grey16 = DynamicImage::ImageLuma16(rgb.to_luma16());
    // (file, channels for --color 1, 0, -1); OpenCV 4.11 gives the same.
    let cases = [
        (encoded(&rgb, ImageFormat::WebP), "rgb webp", 3),
        (encoded(&rgba, ImageFormat::WebP), "rgba webp", 4),
        (encoded(&rgb, ImageFormat::Bmp), "rgb bmp", 3),
        (encoded(&rgb, ImageFormat::Tiff), "rgb tiff", 3),
        (encoded(&rgba, ImageFormat::Tiff), "rgba tiff", 4),
        (encoded(&grey, ImageFormat::Tiff), "grey tiff", 1),
        (encoded(&rgb, ImageFormat::Pnm), "ppm", 3),
        (encoded(&grey, ImageFormat::Pnm), "pgm", 1),
    ];
    for (bytes, what, unchanged) in &cases {
        for (mode, channels) in [
            (ColorMode::Color, 3),
            (ColorMode::Gray, 1),
            (ColorMode::Unchanged, *unchanged),
        ] {
            let d = decode_scaled(bytes, mode, Some(10)).unwrap();
            assert_eq!((d.width, d.height, d.scale), (33, 22, 1), "{what}");
            assert_eq!(d.image.dimensions_pair(), (33, 22), "{what}");
            assert_eq!(d.image.color().channel_count(), channels, "{what} {mode:?}");
        }
    }
    // Lossless formats keep the pixels.
    let d = decode(&cases[0].0, ColorMode::Color, None).unwrap();
    assert_eq!(d, rgb, "lossless WebP");
    let d = decode(
        &encoded(&grey16, ImageFormat::Tiff),
        ColorMode::Unchanged,
        None,
    )
    .unwrap();
    assert_eq!(d, grey16, "16-bit grey TIFF kept as it is");
    // GIF stays unsupported (OpenCV 4.11 as built for MXNet does not read it).
    assert_eq!(
        decode(
            b"GIF89a\x01\x00\x01\x00\x00\x00\x00;",
            ColorMode::Color,
            None
        )
        .unwrap_err(),
        ImageOpError::Unsupported("gif".into())
    );
    // Damaged files are typed errors naming the format.
    let webp = &cases[0].0;
    assert!(matches!(
        decode(&webp[..webp.len() / 2], ColorMode::Color, None).unwrap_err(),
        ImageOpError::Corrupt { format: "WebP", .. }
    ));
}

/// A 4×2 BMP with a `bpp`-bit palette of `palette` (BGRA entries), or a 32-bit one
/// with the given compression; every byte of the pixel data is 1 (palette index 1)
/// for palette files, 0x40 otherwise.
fn bmp(bpp: u16, compression: u32, palette: &[[u8; 4]]) -> Vec<u8> {
    let (w, h) = (4u32, 2u32);
    let row = ((w * u32::from(bpp)).div_ceil(32) * 4) as usize;
    let extra = if compression == 3 { 16 } else { 0 }; // masks, V4-style
    let header_len = 40 + extra;
    let offset = 14 + header_len + palette.len() as u32 * 4;
    let mut b = Vec::new();
    b.extend(b"BM");
    b.extend((offset + row as u32 * h).to_le_bytes());
    b.extend([0; 4]);
    b.extend(offset.to_le_bytes());
    b.extend(header_len.to_le_bytes());
    b.extend(w.to_le_bytes());
    b.extend(h.to_le_bytes());
    b.extend(1u16.to_le_bytes());
    b.extend(bpp.to_le_bytes());
    b.extend(compression.to_le_bytes());
    b.extend([0; 12]);
    b.extend((palette.len() as u32).to_le_bytes());
    b.extend([0; 4]);
    if compression == 3 {
        for mask in [0x00FF_0000u32, 0x0000_FF00, 0x0000_00FF, 0] {
            b.extend(mask.to_le_bytes());
        }
    }
    for p in palette {
        b.extend(p);
    }
    let fill = if bpp <= 8 { 1 } else { 0x40 };
    b.extend(vec![fill; row * h as usize]);
    b
}

#[test]
fn bmp_channels_follow_opencv() {
    let unchanged = |bytes: &[u8]| {
        let img = decode(bytes, ColorMode::Unchanged, None).unwrap();
        (img.color().channel_count(), img.dimensions_pair())
    };
    let grey = [[0, 0, 0, 0], [0x40, 0x40, 0x40, 0], [255, 255, 255, 0]];
    let colour = [[0, 0, 0, 0], [0x40, 0x40, 0x40, 0], [255, 0, 0, 0]];
    assert_eq!(unchanged(&bmp(8, 0, &grey)), (1, (4, 2)));
    assert_eq!(unchanged(&bmp(8, 0, &colour)), (3, (4, 2)));
    assert_eq!(unchanged(&bmp(32, 0, &[])), (3, (4, 2)));
    // 32-bit with bit masks: four channels, alpha 255 when there is no alpha mask.
    let img = decode(&bmp(32, 3, &[]), ColorMode::Unchanged, None).unwrap();
    assert_eq!(
        img,
        DynamicImage::ImageRgba8(ImageBuffer::from_pixel(
            4,
            2,
            image::Rgba([0x40, 0x40, 0x40, 255])
        ))
    );
    assert_eq!(
        decode(&bmp(32, 3, &[]), ColorMode::Color, None)
            .unwrap()
            .color()
            .channel_count(),
        3
    );
    // The grey palette image decodes to its grey values.
    let img = decode(&bmp(8, 0, &grey), ColorMode::Unchanged, None).unwrap();
    assert_eq!(
        img,
        DynamicImage::ImageLuma8(ImageBuffer::from_pixel(4, 2, Luma([0x40])))
    );
}

#[test]
fn a_jpeg_without_its_final_eoi_decodes_with_resize() {
    let smooth = ImageBuffer::from_fn(640, 480, |x, y| Rgb([(x % 256) as u8, (y % 256) as u8, 90]));
    let jpg = encode(&DynamicImage::ImageRgb8(smooth), Encoding::Jpg, 90).unwrap();
    assert_eq!(jpg[jpg.len() - 2..], [0xFF, 0xD9]);
    let cut = &jpg[..jpg.len() - 2];
    for mode in [ColorMode::Color, ColorMode::Gray] {
        let whole = decode_scaled(&jpg, mode, Some(60)).unwrap();
        assert_eq!((whole.scale, whole.image.width()), (8, 80));
        // Both scaled decoders refuse it; the full-size one takes it.
        let d = decode_scaled(cut, mode, Some(60)).unwrap();
        assert_eq!((d.width, d.height, d.scale), (640, 480, 1), "{mode:?}");
        assert_eq!(d.image.dimensions_pair(), (640, 480));
        let out = prepare(&d, false, Some(60), Some(Interpolation::Bilinear));
        assert_eq!(out.dimensions_pair(), (80, 60));
        let reference = prepare(&whole, false, Some(60), Some(Interpolation::Bilinear));
        let diff: u64 = out
            .as_bytes()
            .iter()
            .zip(reference.as_bytes())
            .map(|(&a, &b)| u64::from(a.abs_diff(b)))
            .sum();
        assert!(diff as f64 / (out.as_bytes().len() as f64) < 3.0);
    }
    // Cut inside the image data: still an error, whatever the scale.
    for hint in [None, Some(60)] {
        assert!(matches!(
            decode_scaled(&jpg[..jpg.len() / 2], ColorMode::Color, hint).unwrap_err(),
            ImageOpError::Corrupt { format: "JPEG", .. }
        ));
    }
}

#[test]
fn grey_output_from_cmyk_and_rgb_jpegs() {
    let cmyk: Vec<u8> = (0..64 * 48 * 4).map(|i| (i % 200) as u8).collect();
    let mut bytes = Vec::new();
    jpeg_encoder::Encoder::new(&mut bytes, 90)
        .encode(&cmyk, 64, 48, jpeg_encoder::ColorType::Cmyk)
        .unwrap();
    let rgb_jpg = include_bytes!("../../tests/fixtures/rgb_colorspace.jpg");
    for (file, size) in [(&bytes[..], (64, 48)), (&rgb_jpg[..], (48, 32))] {
        let colour = decode(file, ColorMode::Color, None).unwrap();
        let grey = decode(file, ColorMode::Gray, None).unwrap();
        assert!(matches!(grey, DynamicImage::ImageLuma8(_)));
        assert_eq!(grey.dimensions_pair(), size);
        // The same BT.601 conversion as every other grey output.
        assert_eq!(grey, to_gray(colour));
    }
}

#[test]
fn arithmetic_coded_jpegs_decode_with_their_exif_orientation() {
    let arith = include_bytes!("../../tests/fixtures/arith_exif6.jpg");
    let huffman = include_bytes!("../../tests/fixtures/huffman_exif6.jpg");
    // The same coefficients (jpegtran -arithmetic of the Huffman file): libjpeg
    // decodes both to the same pixels.
    let want = decode_jpeg_libjpeg(huffman, 1, false, (48, 32)).unwrap();
    assert_eq!(
        decode_jpeg_libjpeg(arith, 1, false, (48, 32)).unwrap(),
        want
    );
    for (mode, size) in [
        (ColorMode::Color, (32, 48)), // EXIF orientation 6: rotated
        (ColorMode::Gray, (32, 48)),
        (ColorMode::Unchanged, (48, 32)), // not applied, as in OpenCV
    ] {
        for hint in [None, Some(16)] {
            let d = decode_scaled(arith, mode, hint).unwrap();
            assert_eq!((d.width, d.height), size, "{mode:?} {hint:?}");
            let h = decode_scaled(huffman, mode, hint).unwrap();
            assert_eq!((h.width, h.height, h.scale), (d.width, d.height, d.scale));
        }
    }
    let mut rotated = want.clone();
    rotated.apply_orientation(image::metadata::Orientation::Rotate90);
    assert_eq!(decode(arith, ColorMode::Color, None).unwrap(), rotated);
    assert_eq!(jpeg_exif(huffman).map(<[u8]>::len), Some(26));
    assert_eq!(jpeg_exif(&huffman[..30]), None); // cut inside the segment
}

/// `png` with the chunk `kind` + `data` inserted after IHDR.
fn with_chunk(png: &[u8], kind: &[u8; 4], data: &[u8]) -> Vec<u8> {
    let mut chunk = Vec::new();
    chunk.extend((data.len() as u32).to_be_bytes());
    chunk.extend(kind);
    chunk.extend(data);
    chunk.extend(crc32(&chunk[4..]).to_be_bytes());
    [&png[..33], &chunk[..], &png[33..]].concat()
}

#[test]
fn png_exif_orientation_is_applied_in_colour_and_grey_modes() {
    let img = noise(6, 4);
    let png = encode(&img, Encoding::Png, 3).unwrap();
    // Big-endian TIFF header, one IFD entry: Orientation (0x0112) = 6.
    let mut exif = b"MM\x00\x2a\x00\x00\x00\x08\x00\x01".to_vec();
    exif.extend([0x01, 0x12, 0, 3, 0, 0, 0, 1, 0, 6, 0, 0, 0, 0, 0, 0]);
    let png6 = with_chunk(&png, b"eXIf", &exif);
    let mut rotated = img.clone();
    rotated.apply_orientation(image::metadata::Orientation::Rotate90);
    assert_eq!(decode(&png6, ColorMode::Color, None).unwrap(), rotated);
    let grey = decode_scaled(&png6, ColorMode::Gray, Some(2)).unwrap();
    assert_eq!((grey.width, grey.height), (4, 6));
    assert_eq!(decode(&png6, ColorMode::Unchanged, None).unwrap(), img);
}

#[test]
fn grey_png_with_trns_stays_grey_unchanged() {
    let grey = DynamicImage::ImageLuma8(noise(5, 3).to_luma8());
    let png = encode(&grey, Encoding::Png, 3).unwrap();
    let first = grey.as_bytes()[0];
    let trns = with_chunk(&png, b"tRNS", &[0, first]);
    assert_eq!(decode(&trns, ColorMode::Unchanged, None).unwrap(), grey);
    assert_eq!(
        decode(&trns, ColorMode::Color, None)
            .unwrap()
            .color()
            .channel_count(),
        3
    );
    // RGB with tRNS gets alpha, as in OpenCV.
    let rgb = noise(5, 3);
    let png = encode(&rgb, Encoding::Png, 3).unwrap();
    let trns = with_chunk(&png, b"tRNS", &[0, 1, 0, 2, 0, 3]);
    assert!(matches!(
        decode(&trns, ColorMode::Unchanged, None).unwrap(),
        DynamicImage::ImageRgba8(_)
    ));
}

#[test]
fn output_size_is_checked_before_resizing() {
    let thin = Decoded {
        image: DynamicImage::new_rgb8(1, 20000),
        width: 1,
        height: 20000,
        scale: 1,
    };
    let (w, h) = prepared_size(&thin, false, Some(256));
    assert_eq!((w, h), (256, 5_120_000));
    assert_eq!(
        check_output_size(w, h, Encoding::Png),
        Err(ImageOpError::OutputTooLarge {
            width: 256,
            height: 5_120_000
        })
    );
    assert!(check_output_size(256, 76_800, Encoding::Png).is_ok());
    assert!(check_output_size(256, 76_800, Encoding::Jpg).is_err());
    assert_eq!(prepared_size(&thin, true, Some(256)), (256, 256));
    assert_eq!(prepared_size(&thin, false, None), (1, 20000));
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
    // A header of 0 x 5 pixels is not "too large".
    let mut empty = png[..33].to_vec();
    empty[16..20].copy_from_slice(&0u32.to_be_bytes());
    empty[20..24].copy_from_slice(&5u32.to_be_bytes());
    let crc = crc32(&empty[12..29]);
    empty[29..33].copy_from_slice(&crc.to_be_bytes());
    let err = decode(&empty, ColorMode::Color, None).unwrap_err();
    assert!(
        matches!(
            err,
            ImageOpError::NoPixels {
                width: 0,
                height: 5
            } | ImageOpError::Corrupt { .. }
        ),
        "{err}"
    );
    assert_eq!(
        super::check_size(0, 5).unwrap_err().to_string(),
        "no pixels: the header gives a size of 0x5"
    );
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
    let webp = encoded(&noise(7, 5), ImageFormat::WebP);
    assert_eq!(
        probe(&webp),
        Some(ImageInfo {
            format: "webp".into(),
            width: 7,
            height: 5,
            channels: 3
        })
    );
    let tiff = encoded(
        &DynamicImage::ImageRgba8(noise(3, 4).to_rgba8()),
        ImageFormat::Tiff,
    );
    assert_eq!(
        probe(&tiff).map(|i| (i.format, i.width, i.height, i.channels)),
        Some(("tiff".into(), 3, 4, 4))
    );
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

/// Found by the `image` fuzz target (a 10-second timeout): zune-jpeg refuses this
/// JPEG's headers while libjpeg-turbo reads them (12850×8272, 106 megapixels, with 1 kB
/// of data that the decoder pads), so `probe` gave nothing and a size check made on the
/// probe let the whole decode through. Probe and decoders now read one header.
#[test]
fn a_jpeg_that_decodes_probes_with_its_size() {
    let bytes = include_bytes!("../../tests/fixtures/probe_zune_refuses.jpg");
    let info = probe(bytes).expect("a JPEG libjpeg-turbo reads probes");
    assert_eq!((info.width, info.height, info.channels), (12850, 8272, 3));
    assert_eq!(info.format, "jpeg");
}
