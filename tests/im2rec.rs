//! `im2rec` end to end: the real binary on generated folders (baseline, progressive,
//! grey and CMYK JPEGs; RGBA, grey and 16-bit PNGs; broken files), checked by reading
//! the `.rec`/`.idx` back with the RecordIO library.

use std::fs;
use std::path::{Path, PathBuf};

use im2list::lst::LstEntry;
use im2rec::imageops;
use im2rec::recordio::{unpack_image_record, RecordReader};
use image::{DynamicImage, ImageBuffer, Rgb};
use pipeline_tests::{check_code, run_expect, run_with_stdin, stderr_text, stdout_text, tool};

/// Usage errors, exit codes and the command lines, lists and names im2rec.py handles.
#[path = "im2rec/cli.rs"]
mod cli;

/// A photo-like RGB image: gradients plus deterministic noise.
fn photo(w: u32, h: u32, seed: u32) -> image::RgbImage {
    let mut state = seed.wrapping_mul(2_654_435_761).wrapping_add(1);
    ImageBuffer::from_fn(w, h, |x, y| {
        state ^= state << 13;
        state ^= state >> 17;
        state ^= state << 5;
        let n = (state >> 27) as u8;
        Rgb([
            ((x * 255 / w.max(1)) as u8).wrapping_add(n),
            ((y * 255 / h.max(1)) as u8).wrapping_add(n / 2),
            (((x + y + seed) * 3) as u8) ^ n,
        ])
    })
}

fn jpeg(img: &image::RgbImage, progressive: bool) -> Vec<u8> {
    let mut out = Vec::new();
    let mut enc = jpeg_encoder::Encoder::new(&mut out, 90);
    enc.set_progressive(progressive);
    enc.encode(
        img.as_raw(),
        img.width() as u16,
        img.height() as u16,
        jpeg_encoder::ColorType::Rgb,
    )
    .unwrap();
    out
}

fn png(img: &DynamicImage) -> Vec<u8> {
    let mut out = std::io::Cursor::new(Vec::new());
    img.write_to(&mut out, image::ImageFormat::Png).unwrap();
    out.into_inner()
}

/// Name, bytes, width, height and the channels `--color -1` keeps.
struct Fixture {
    name: &'static str,
    bytes: Vec<u8>,
    size: (u32, u32),
}

fn good_images() -> Vec<Fixture> {
    let base = photo(500, 375, 1);
    let cmyk: Vec<u8> = photo(120, 80, 4)
        .pixels()
        .flat_map(|p| {
            let [r, g, b] = p.0;
            let k = 255 - r.max(g).max(b);
            [255 - r - k, 255 - g - k, 255 - b - k, k]
        })
        .collect();
    let mut cmyk_jpg = Vec::new();
    jpeg_encoder::Encoder::new(&mut cmyk_jpg, 90)
        .encode(&cmyk, 120, 80, jpeg_encoder::ColorType::Cmyk)
        .unwrap();
    vec![
        Fixture {
            name: "cat/base.jpg",
            bytes: jpeg(&base, false),
            size: (500, 375),
        },
        Fixture {
            name: "cat/prog.jpg",
            bytes: jpeg(&photo(240, 320, 2), true),
            size: (240, 320),
        },
        Fixture {
            name: "dog/gray.jpg",
            bytes: {
                let g = DynamicImage::ImageRgb8(photo(90, 60, 3)).to_luma8();
                let mut out = Vec::new();
                jpeg_encoder::Encoder::new(&mut out, 90)
                    .encode(g.as_raw(), 90, 60, jpeg_encoder::ColorType::Luma)
                    .unwrap();
                out
            },
            size: (90, 60),
        },
        Fixture {
            name: "dog/cmyk.jpg",
            bytes: cmyk_jpg,
            size: (120, 80),
        },
        Fixture {
            name: "dog/rgba.png",
            bytes: png(&DynamicImage::ImageRgba8(
                DynamicImage::ImageRgb8(photo(64, 48, 5)).to_rgba8(),
            )),
            size: (64, 48),
        },
        Fixture {
            name: "fish/gray.png",
            bytes: png(&DynamicImage::ImageLuma8(
                DynamicImage::ImageRgb8(photo(50, 70, 6)).to_luma8(),
            )),
            size: (50, 70),
        },
        Fixture {
            name: "fish/deep.png",
            bytes: png(&DynamicImage::ImageRgb16(
                DynamicImage::ImageRgb8(photo(40, 30, 7)).to_rgb16(),
            )),
            size: (40, 30),
        },
        // Big enough for a DCT-scaled decode with --resize 64 (1536 / 8 >= 64).
        Fixture {
            name: "fish/big.jpg",
            bytes: jpeg(&photo(2048, 1536, 8), false),
            size: (2048, 1536),
        },
    ]
}

/// Write the good images under `root` and return list rows: index = 10 * i + 3
/// (not 0..n, to check that ids and .idx keys come from the list), label = i % 3.
fn make_tree(root: &Path) -> (Vec<Fixture>, Vec<LstEntry>) {
    let fixtures = good_images();
    let mut rows = Vec::new();
    for (i, f) in fixtures.iter().enumerate() {
        let path = root.join(f.name);
        fs::create_dir_all(path.parent().unwrap()).unwrap();
        fs::write(&path, &f.bytes).unwrap();
        rows.push(LstEntry::new(10 * i as u64 + 3, (i % 3) as f64, f.name));
    }
    (fixtures, rows)
}

fn list_text(rows: &[LstEntry]) -> String {
    rows.iter().map(LstEntry::to_line).collect()
}

struct Rec {
    id: u64,
    flag: u32,
    label: f32,
    labels: Vec<f32>,
    image: Vec<u8>,
    offset: u64,
}

fn read_rec(path: &Path) -> Vec<Rec> {
    let bytes = fs::read(path).unwrap();
    let mut reader = RecordReader::new(&bytes[..]);
    let mut out = Vec::new();
    while let Some(r) = reader.next_record().unwrap() {
        let ir = unpack_image_record(&r.payload).unwrap();
        out.push(Rec {
            id: ir.header.id,
            flag: ir.header.flag,
            label: ir.header.label,
            labels: ir.labels.clone(),
            image: ir.image.to_vec(),
            offset: r.offset,
        });
        assert_eq!(ir.header.id2, 0);
    }
    out
}

fn idx_lines(recs: &[Rec]) -> String {
    recs.iter()
        .map(|r| format!("{}\t{}\n", r.id, r.offset))
        .collect()
}

#[test]
fn packs_every_format_in_list_order_identically_with_1_and_4_threads() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("images");
    let (fixtures, rows) = make_tree(&root);
    let list = list_text(&rows);

    // Threads 1 from a list file (PREFIX mode), threads 4 from stdin.
    fs::write(dir.path().join("one.lst"), &list).unwrap();
    let out = run_expect(
        tool("im2rec")
            .args(["--resize", "64", "--num-thread", "1", "--no-progress"])
            .arg(dir.path().join("one"))
            .arg(&root),
        0,
    );
    assert_eq!(stdout_text(&out), "");
    assert_eq!(
        stderr_text(&out),
        format!(
            "im2rec: packed 8, skipped 0 -> {}\n",
            dir.path().join("one.rec").display()
        )
    );
    let four = dir.path().join("four.rec");
    let mut cmd = tool("im2rec");
    cmd.args(["--resize", "64", "--num-thread", "4", "-", "-o"])
        .arg(&four)
        .arg(&root);
    let out = run_with_stdin(&mut cmd, list.as_bytes());
    check_code(&cmd, &out, 0);

    let one_bytes = fs::read(dir.path().join("one.rec")).unwrap();
    assert_eq!(
        one_bytes,
        fs::read(&four).unwrap(),
        "1 and 4 threads differ"
    );
    assert_eq!(
        fs::read_to_string(dir.path().join("one.idx")).unwrap(),
        fs::read_to_string(dir.path().join("four.idx")).unwrap()
    );

    let recs = read_rec(&four);
    assert_eq!(recs.len(), fixtures.len());
    assert_eq!(
        fs::read_to_string(dir.path().join("four.idx")).unwrap(),
        idx_lines(&recs)
    );
    for ((rec, row), f) in recs.iter().zip(&rows).zip(&fixtures) {
        assert_eq!(rec.id, row.index, "{}", f.name);
        assert_eq!((rec.flag, rec.label), (0, row.labels[0] as f32));
        let img = imageops::decode(&rec.image, imageops::ColorMode::Unchanged, None).unwrap();
        let want = imageops::shorter_side_size(f.size.0, f.size.1, 64);
        assert_eq!((img.width(), img.height()), want, "{}", f.name);
        assert_eq!(
            image::guess_format(&rec.image).unwrap(),
            image::ImageFormat::Jpeg
        );
    }
    // 500x375 --resize 64 -> 85x64 (500*64/375 = 85.3).
    assert_eq!(imageops::shorter_side_size(500, 375, 64), (85, 64));
    // No temporary file is left beside the outputs.
    let left: Vec<_> = fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.ends_with(".tmp"))
        .collect();
    assert!(left.is_empty(), "{left:?}");
}

#[test]
fn broken_files_are_skipped_named_and_counted() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("images");
    let (fixtures, _) = make_tree(&root);
    let good = &fixtures[0].bytes;
    fs::write(root.join("zero.jpg"), b"").unwrap();
    fs::write(root.join("trunc.jpg"), &good[..good.len() / 2]).unwrap();
    fs::write(root.join("text.jpg"), b"this is not a picture\n").unwrap();
    let rows = [
        LstEntry::new(0, 0.0, "cat/base.jpg"),
        LstEntry::new(1, 0.0, "zero.jpg"),
        LstEntry::new(2, 1.0, "trunc.jpg"),
        LstEntry::new(3, 1.0, "text.jpg"),
        LstEntry::new(4, 1.0, "missing.jpg"),
        LstEntry::new(5, 2.0, "dog/rgba.png"),
    ];
    let mut list = list_text(&rows);
    list.push_str("6\tnot-a-number\tcat/base.jpg\n");
    fs::write(dir.path().join("bad.lst"), &list).unwrap();
    for threads in ["1", "3"] {
        let out = run_expect(
            tool("im2rec")
                .args(["--num-thread", threads, "--resize", "32"])
                .arg(dir.path().join("bad"))
                .arg(&root),
            1,
        );
        let err = stderr_text(&out);
        let lines: Vec<&str> = err.lines().collect();
        let r = root.display();
        assert_eq!(lines.len(), 6, "{err}");
        assert_eq!(
            lines[0],
            format!("im2rec: {r}/zero.jpg: empty file (0 bytes)")
        );
        assert!(
            lines[1].starts_with(&format!(
                "im2rec: {r}/trunc.jpg: corrupt or truncated JPEG: "
            )),
            "{err}"
        );
        assert_eq!(
            lines[2],
            format!("im2rec: {r}/text.jpg: not an image (unrecognised format)")
        );
        assert_eq!(lines[3], format!("im2rec: {r}/missing.jpg: no such file"));
        assert_eq!(
            lines[4],
            format!(
                "im2rec: {}: line 7: label \"not-a-number\" is not a number",
                dir.path().join("bad.lst").display()
            )
        );
        assert!(
            lines[5].starts_with("im2rec: packed 2, skipped 5 -> "),
            "{err}"
        );
        let recs = read_rec(&dir.path().join("bad.rec"));
        assert_eq!(recs.iter().map(|r| r.id).collect::<Vec<_>>(), [0, 5]);
        assert_eq!(
            fs::read_to_string(dir.path().join("bad.idx")).unwrap(),
            idx_lines(&recs)
        );
    }

    // --strict: exit 2 at the first bad image, no finished-looking output.
    let out = run_expect(
        tool("im2rec")
            .arg("--strict")
            .arg(dir.path().join("bad"))
            .arg(&root),
        2,
    );
    let err = stderr_text(&out);
    assert!(
        err.contains("zero.jpg: empty file (0 bytes) (--strict"),
        "{err}"
    );
    fs::remove_file(dir.path().join("bad.rec")).unwrap();
    let out = run_expect(
        tool("im2rec")
            .arg("--strict")
            .arg(dir.path().join("bad"))
            .arg(&root),
        2,
    );
    assert!(
        stderr_text(&out).contains("(--strict; nothing was written)"),
        "{}",
        stderr_text(&out)
    );
    // Neither a final name nor a temporary file: a failed run leaves nothing behind.
    let mut left: Vec<_> = fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    left.sort();
    assert_eq!(left, ["bad.idx", "bad.lst", "images"]);
}

#[test]
fn pack_label_layout_and_pass_through_bytes() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("images");
    let (fixtures, _) = make_tree(&root);
    let rows = [
        LstEntry {
            index: 7,
            labels: vec![1.0, 0.0, 2.0],
            path: "cat/base.jpg".into(),
        },
        LstEntry {
            index: 8,
            labels: vec![5.0],
            path: "fish/deep.png".into(),
        },
    ];
    fs::write(dir.path().join("m.lst"), list_text(&rows)).unwrap();
    run_expect(
        tool("im2rec")
            .args(["--pass-through", "--pack-label"])
            .arg(dir.path().join("m"))
            .arg(&root),
        0,
    );
    let recs = read_rec(&dir.path().join("m.rec"));
    assert_eq!(
        (recs[0].flag, recs[0].label, &recs[0].labels[..]),
        (3, 0.0, &[1.0, 0.0, 2.0][..])
    );
    assert_eq!((recs[1].flag, recs[1].label), (0, 5.0));
    assert_eq!(
        recs[0].image, fixtures[0].bytes,
        "pass-through changed the bytes"
    );
    assert_eq!(recs[1].image, fixtures[6].bytes);
    // The raw payload of a multi-label record, byte for byte (reference §1.7).
    let raw = fs::read(dir.path().join("m.rec")).unwrap();
    assert_eq!(
        raw[8..44],
        [
            3, 0, 0, 0, 0, 0, 0, 0, 7, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, //
            0, 0, 0x80, 0x3f, 0, 0, 0, 0, 0, 0, 0, 0x40
        ]
    );

    // Without --pack-label only the first label is kept (flag 0).
    run_expect(
        tool("im2rec")
            .arg("--unchanged")
            .arg(dir.path().join("m"))
            .arg(&root),
        0,
    );
    let recs = read_rec(&dir.path().join("m.rec"));
    assert_eq!(
        (recs[0].flag, recs[0].label, &recs[0].labels[..]),
        (0, 1.0, &[1.0][..])
    );
    assert_eq!(recs[0].image, fixtures[0].bytes);
}

#[test]
fn crop_color_modes_and_inspect() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("images");
    let (fixtures, rows) = make_tree(&root);
    fs::write(dir.path().join("c.lst"), list_text(&rows)).unwrap();
    let prefix = dir.path().join("c");
    let rec = dir.path().join("c.rec");
    let inspect = |rec: &Path| -> Vec<serde_json::Value> {
        let out = run_expect(tool("im2rec").arg("--inspect").arg(rec), 0);
        stdout_text(&out)
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect()
    };

    // Centre crop + resize: squares; with DCT scaling for big.jpg too.
    run_expect(
        tool("im2rec")
            .args(["--center-crop", "--resize", "48"])
            .arg(&prefix)
            .arg(&root),
        0,
    );
    for (j, f) in inspect(&rec).iter().zip(&fixtures) {
        assert_eq!(
            (j["width"].as_u64(), j["height"].as_u64()),
            (Some(48), Some(48)),
            "{}",
            f.name
        );
        assert_eq!(j["channels"], 3, "{}", f.name);
    }
    // Centre crop without resize keeps the shorter side.
    run_expect(
        tool("im2rec").arg("--center-crop").arg(&prefix).arg(&root),
        0,
    );
    let js = inspect(&rec);
    assert_eq!(
        (js[0]["width"].as_u64(), js[0]["height"].as_u64()),
        (Some(375), Some(375))
    );
    assert_eq!(
        (js[1]["width"].as_u64(), js[1]["height"].as_u64()),
        (Some(240), Some(240))
    );

    // Grey: one channel.
    run_expect(
        tool("im2rec")
            .args(["--color", "0", "--resize", "20"])
            .arg(&prefix)
            .arg(&root),
        0,
    );
    assert!(inspect(&rec).iter().all(|j| j["channels"] == 1));

    // Unchanged + PNG: RGBA keeps alpha, grey stays grey, 16-bit stays 16-bit.
    run_expect(
        tool("im2rec")
            .args(["--color", "-1", "--encoding", ".png", "--quality", "3"])
            .arg(&prefix)
            .arg(&root),
        0,
    );
    let js = inspect(&rec);
    let channels: Vec<u64> = js.iter().map(|j| j["channels"].as_u64().unwrap()).collect();
    assert_eq!(channels, [3, 3, 1, 3, 4, 1, 3, 3]);
    assert!(js.iter().all(|j| j["format"] == "png"));
    let recs = read_rec(&rec);
    let deep = imageops::decode(&recs[6].image, imageops::ColorMode::Unchanged, None).unwrap();
    assert!(matches!(deep, DynamicImage::ImageRgb16(_)));
    // PNG is lossless: the 16-bit samples survive exactly.
    let orig = imageops::decode(&fixtures[6].bytes, imageops::ColorMode::Unchanged, None).unwrap();
    assert_eq!(deep, orig);

    // Every field of one line, and `--inspect -` reads stdin the same way.
    let js = inspect(&rec);
    let first = &js[0];
    assert_eq!(first["record"], 0);
    assert_eq!(first["offset"], 0);
    assert_eq!(first["id"], 3);
    assert_eq!(first["id2"], 0);
    assert_eq!(first["flag"], 0);
    assert_eq!(first["label"], 0.0);
    assert_eq!(first["labels"], serde_json::json!([0.0]));
    assert_eq!(
        first["length"].as_u64().unwrap(),
        first["image_bytes"].as_u64().unwrap() + 24
    );
    assert_eq!(js[4]["offset"].as_u64().unwrap(), recs[4].offset);
    let mut cmd = tool("im2rec");
    cmd.args(["--inspect", "-"]);
    let out = run_with_stdin(&mut cmd, &fs::read(&rec).unwrap());
    check_code(&cmd, &out, 0);
    let from_file = run_expect(tool("im2rec").arg("--inspect").arg(&rec), 0);
    assert_eq!(out.stdout, from_file.stdout);

    // A damaged .rec: the records before the damage are printed, then exit 2.
    let mut bytes = fs::read(&rec).unwrap();
    let at = recs[2].offset as usize;
    bytes[at] ^= 0xff;
    let bad: PathBuf = dir.path().join("damaged.rec");
    fs::write(&bad, &bytes).unwrap();
    let out = run_expect(tool("im2rec").arg("--inspect").arg(&bad), 2);
    assert_eq!(stdout_text(&out).lines().count(), 2);
    assert!(
        stderr_text(&out).contains(&format!("byte {at}")),
        "{}",
        stderr_text(&out)
    );
}

#[test]
fn every_list_matching_the_prefix_is_packed() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("images");
    let (_, rows) = make_tree(&root);
    let data = dir.path().join("data");
    fs::create_dir(&data).unwrap();
    fs::write(data.join("cal_train.lst"), list_text(&rows[..3])).unwrap();
    fs::write(data.join("cal_val.lst"), list_text(&rows[3..5])).unwrap();
    fs::write(data.join("other.lst"), list_text(&rows[5..])).unwrap();
    let out = run_expect(
        tool("im2rec")
            .current_dir(dir.path())
            .args(["--pass-through", "data/cal", "images"]),
        0,
    );
    assert_eq!(stderr_text(&out).lines().count(), 2);
    assert_eq!(read_rec(&data.join("cal_train.rec")).len(), 3);
    assert_eq!(read_rec(&data.join("cal_val.rec")).len(), 2);
    assert!(data.join("cal_val.idx").exists());
    assert!(!data.join("other.rec").exists());
}
