//! Seed corpora for the fuzz targets in fuzz/fuzz_targets (see fuzz/Cargo.toml):
//! small, valid inputs of every kind each target reads, so that libFuzzer starts from
//! the interesting paths (split records, multi-label headers, every image format and
//! colour type, the libjpeg-only arithmetic-coded JPEG) instead of from nothing.

use std::fs;
use std::io::Cursor;
use std::path::{Path, PathBuf};

use im2rec::recordio::{pack_image_record, IndexWriter, RecordWriter, MAGIC};
use image::{DynamicImage, ImageBuffer, ImageFormat};

fn main() {
    let out = PathBuf::from(
        std::env::args()
            .nth(1)
            .unwrap_or_else(|| "fuzz/corpus".into()),
    );
    let repo = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    let fixtures = repo.join("im2rec/tests/fixtures");
    let read = |p: &Path| fs::read(p).unwrap_or_else(|e| panic!("{}: {e}", p.display()));
    let write = |target: &str, name: &str, bytes: &[u8]| {
        let dir = out.join(target);
        fs::create_dir_all(&dir).unwrap();
        fs::write(dir.join(name), bytes).unwrap();
    };

    // Images: the JPEG fixtures (Huffman, arithmetic-coded, RGB colour space, EXIF
    // orientation), two Fashion-MNIST PNGs and tiny images in every other format.
    let mut images: Vec<(String, Vec<u8>)> = Vec::new();
    for name in ["huffman_exif6.jpg", "arith_exif6.jpg", "rgb_colorspace.jpg"] {
        images.push((name.into(), read(&fixtures.join(name))));
    }
    for name in ["bag/train_00394.png", "bag/train_00930.png"] {
        let bytes = read(&repo.join("data/fashion-mnist").join(name));
        images.push((name.replace('/', "_"), bytes));
    }
    let rgb = DynamicImage::ImageRgb8(ImageBuffer::from_fn(9, 6, |x, y| {
        image::Rgb([(x * 28) as u8, (y * 40) as u8, ((x + y) * 17) as u8])
    }));
    let rgba = DynamicImage::ImageRgba8(ImageBuffer::from_fn(5, 7, |x, y| {
        image::Rgba([(x * 50) as u8, (y * 30) as u8, 99, ((x * y) * 9) as u8])
    }));
    let grey = DynamicImage::ImageLuma8(ImageBuffer::from_fn(8, 8, |x, y| {
        image::Luma([((x ^ y) * 31) as u8])
    }));
    let grey16 = DynamicImage::ImageLuma16(ImageBuffer::from_fn(6, 4, |x, y| {
        image::Luma([(x * 9000 + y * 700) as u16])
    }));
    let encoded = |img: &DynamicImage, format: ImageFormat| {
        let mut out = Cursor::new(Vec::new());
        img.write_to(&mut out, format).unwrap();
        out.into_inner()
    };
    for (name, img, format) in [
        ("rgb.webp", &rgb, ImageFormat::WebP),
        ("rgba.webp", &rgba, ImageFormat::WebP),
        ("rgb.bmp", &rgb, ImageFormat::Bmp),
        ("grey.bmp", &grey, ImageFormat::Bmp),
        ("rgb.tiff", &rgb, ImageFormat::Tiff),
        ("grey16.tiff", &grey16, ImageFormat::Tiff),
        ("rgb.ppm", &rgb, ImageFormat::Pnm),
        ("grey.pgm", &grey, ImageFormat::Pnm),
        ("rgba.png", &rgba, ImageFormat::Png),
        ("grey16.png", &grey16, ImageFormat::Png),
        ("grey.jpg", &grey, ImageFormat::Jpeg),
        ("rgb.jpg", &rgb, ImageFormat::Jpeg),
    ] {
        images.push((name.into(), encoded(img, format)));
    }
    // Control bytes (see fuzz_targets/image.rs): plain decode + JPEG out; Gray with a
    // resize to 7 (DCT-scaled JPEG decoding) + centre crop; Unchanged, resize 1, PNG out.
    for (name, bytes) in &images {
        for control in [0x00u8, 0x2d, 0x46] {
            let mut seed = vec![control];
            seed.extend_from_slice(bytes);
            write("image", &format!("{control:02x}_{name}"), &seed);
        }
    }

    // Records: MXNet's own file, and files from our writer with split records
    // (aligned magic in the payload), multi-label headers and a real image.
    let mxnet_rec = read(&fixtures.join("mxnet_small.rec"));
    let mxnet_idx = read(&fixtures.join("mxnet_small.idx"));
    let magic = MAGIC.to_le_bytes();
    let mut payloads = vec![
        pack_image_record(1, &[3.0], false, b"jpeg bytes"),
        pack_image_record(2, &[1.0, 0.5, 2.0], true, &[magic, magic].concat()),
        pack_image_record(3, &[7.0], true, b""),
        [b"abcd".as_slice(), &magic, b"efgh", &magic, b"i"].concat(),
        Vec::new(),
    ];
    payloads.push(pack_image_record(4, &[1.0], false, &images[0].1));
    for (name, payload) in payloads.iter().enumerate() {
        write("image_record", &format!("payload_{name}"), payload);
    }
    let (ours_rec, ours_idx) = rec_and_idx(&payloads[..5]);
    let (one_rec, one_idx) = rec_and_idx(&payloads[5..]);
    write("recordio", "mxnet_small.rec", &mxnet_rec);
    write("recordio", "split_multi.rec", &ours_rec);
    write("recordio", "one_jpeg.rec", &one_rec);
    write("idx", "mxnet_small.idx", &mxnet_idx);
    write("idx", "split_multi.idx", &ours_idx);
    write("idx", "spaces.idx", b"1\t0\n 2 \t 8 \r\n\n3\t16");
    for (name, idx, rec) in [
        ("mxnet_small", &mxnet_idx, &mxnet_rec),
        ("split_multi", &ours_idx, &ours_rec),
        ("one_jpeg", &one_idx, &one_rec),
    ] {
        let mut seed = (idx.len() as u16).to_le_bytes().to_vec();
        seed.extend_from_slice(idx);
        seed.extend_from_slice(rec);
        write("rec_idx", name, &seed);
    }

    // .lst rows: what im2list writes, and the variants the reader accepts.
    let golden = repo.join("im2list/tests/golden/tree23");
    write("lst", "flat.lst", &read(&golden.join("flat/data.lst")));
    write(
        "lst",
        "split_82_train.lst",
        &read(&golden.join("split_82/data_train.lst")),
    );
    write(
        "lst",
        "variants.lst",
        "0\t1.000000\ta/b.jpg\r\n1\t2\t0.5\t1e-3\tmulti label.png\r2\t1_0\tnan\tinf\t-0.0\tx\n\n +3 \t 4.0 \t c d.jpg \x1c\n"
            .as_bytes(),
    );
}

/// A `.rec` and its `.idx` (keys 0, 1, ...) holding `payloads`.
fn rec_and_idx(payloads: &[Vec<u8>]) -> (Vec<u8>, Vec<u8>) {
    let mut rec = RecordWriter::new(Vec::new());
    let mut idx = IndexWriter::new(Vec::new());
    for (key, payload) in payloads.iter().enumerate() {
        let offset = rec.write_record(payload).unwrap();
        idx.write(key as u64, offset).unwrap();
    }
    (rec.into_inner().unwrap(), idx.into_inner().unwrap())
}
