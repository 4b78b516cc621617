//! Command-line behaviour of the `im2rec` binary: usage errors, exit codes, the
//! empty-list case, and command lines, lists, image formats and output names that
//! im2rec.py handles (with small images made here). The main image tests are in
//! `tests/im2rec.rs` at the workspace root.

use std::process::{Command, Output};

fn im2rec(args: &[&str], dir: &std::path::Path) -> Output {
    Command::new(pipeline_tests::bin("im2rec"))
        .args(args)
        .current_dir(dir)
        .output()
        .expect("spawn im2rec")
}

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

#[test]
fn usage_errors_exit_2() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    for args in [
        &["only-prefix"][..],
        &["--color", "3", "p", "."],
        &["--inter-method", "7", "p", "."],
        &["--encoding", "jpg", "p", "."],
    ] {
        let out = im2rec(args, d);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {}", stderr(&out));
        assert!(out.stdout.is_empty());
    }
}

/// `im2rec --list` is im2rec.py's list mode (im2list's lists), packing options ignored.
#[test]
fn list_mode_makes_lists() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    for f in [
        "imgs/a/0.jpg",
        "imgs/a/1.jpg",
        "imgs/b/2.png",
        "imgs/b/3.jpg",
    ] {
        std::fs::create_dir_all(d.join(f).parent().unwrap()).unwrap();
        std::fs::write(d.join(f), b"").unwrap();
    }
    let out = im2rec(
        &[
            "--list",
            "--recursive",
            "--no-shuffle",
            "--train-ratio",
            "0.5",
            "--resize",
            "32",
            "--pass-through",
            "p",
            "imgs",
        ],
        d,
    );
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let read = |name: &str| std::fs::read_to_string(d.join(name)).unwrap();
    assert_eq!(
        read("p_train.lst"),
        "0\t0.000000\ta/0.jpg\n1\t0.000000\ta/1.jpg\n"
    );
    assert_eq!(
        read("p_val.lst"),
        "2\t1.000000\tb/2.png\n3\t1.000000\tb/3.jpg\n"
    );
    assert!(
        stderr(&out).contains("--resize 32 --pass-through: packing options, ignored with --list"),
        "{}",
        stderr(&out)
    );
    assert!(!d.join("p_train.rec").exists());
    // An empty folder: im2list's own error.
    std::fs::create_dir_all(d.join("none")).unwrap();
    let out = im2rec(&["--list", "q", "none"], d);
    assert_eq!(out.status.code(), Some(2));
    assert!(
        stderr(&out).contains("im2list: error: no images"),
        "{}",
        stderr(&out)
    );
}

#[test]
fn no_matching_list_is_an_error() {
    let dir = tempfile::tempdir().unwrap();
    let out = im2rec(&["nothing", "."], dir.path());
    assert_eq!(out.status.code(), Some(2));
    assert!(
        stderr(&out).starts_with("im2rec: error: no .lst file found with prefix "),
        "{}",
        stderr(&out)
    );
    // stdin list without -o
    let out = im2rec(&["-", "."], dir.path());
    assert_eq!(out.status.code(), Some(2));
    assert!(stderr(&out).contains("-o OUT.rec"), "{}", stderr(&out));
}

#[test]
fn empty_list_gives_empty_outputs() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    std::fs::write(d.join("e.lst"), "").unwrap();
    let out = im2rec(&["e", "."], d);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert_eq!(std::fs::read(d.join("e.rec")).unwrap(), b"");
    assert_eq!(std::fs::read(d.join("e.idx")).unwrap(), b"");
    assert_eq!(
        stderr(&out).trim_end(),
        format!(
            "im2rec: packed 0, skipped 0 -> {}",
            d.join("e.rec").display()
        )
    );
}

#[test]
fn help_mentions_every_flag() {
    let out = Command::new(pipeline_tests::bin("im2rec"))
        .arg("--help")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(0));
    let help = String::from_utf8(out.stdout).unwrap();
    for flag in [
        "--resize",
        "--center-crop",
        "--quality",
        "--encoding",
        "--color",
        "--pass-through",
        "--pack-label",
        "--num-thread",
        "--inter-method",
        "--strict",
        "--inspect",
        "--no-progress",
        "--output",
        "--recursive",
        "--no-shuffle",
        "--exts",
        "--chunks",
        "--train-ratio",
        "--test-ratio",
    ] {
        assert!(help.contains(flag), "{flag} missing from --help");
    }
}

/// Runs im2rec with `stdin` as its input.
fn im2rec_stdin(args: &[&str], dir: &std::path::Path, stdin: &[u8]) -> Output {
    use std::io::Write;
    let mut child = Command::new(pipeline_tests::bin("im2rec"))
        .args(args)
        .current_dir(dir)
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("spawn im2rec");
    // im2rec may exit before reading its input (a usage error): a broken pipe here
    // is expected then.
    let _ = child.stdin.take().unwrap().write_all(stdin);
    child.wait_with_output().unwrap()
}

/// One JSON object per record, from `im2rec --inspect`.
fn inspect(rec: &std::path::Path) -> Vec<serde_json::Value> {
    let out = Command::new(pipeline_tests::bin("im2rec"))
        .arg("--inspect")
        .arg(rec)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    String::from_utf8(out.stdout)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

fn field(records: &[serde_json::Value], name: &str) -> Vec<String> {
    records.iter().map(|r| r[name].to_string()).collect()
}

/// A 33×22 RGB picture.
fn picture() -> image::DynamicImage {
    image::DynamicImage::ImageRgb8(image::ImageBuffer::from_fn(33, 22, |x, y| {
        image::Rgb([(x * 7) as u8, (y * 11) as u8, 128])
    }))
}

fn write_image(path: &std::path::Path, format: image::ImageFormat) {
    let mut bytes = std::io::Cursor::new(Vec::new());
    picture().write_to(&mut bytes, format).unwrap();
    std::fs::write(path, bytes.into_inner()).unwrap();
}

#[test]
fn im2rec_py_command_lines_are_accepted() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    write_image(&d.join("a.png"), image::ImageFormat::Png);
    std::fs::write(d.join("x.lst"), "0\t1\ta.png\n").unwrap();
    let note = "im2rec: note: --recursive, --no-shuffle, --exts, --chunks, --train-ratio, \
                --test-ratio: list-making options (im2rec.py --list; here: im2list), ignored \
                when packing\n";
    for args in [
        &[
            "--recursive",
            "--no-shuffle",
            "--exts",
            ".jpg",
            ".png",
            "--chunks",
            "2",
            "--train-ratio",
            "0.8",
            "--test-ratio",
            "0.1",
            "--",
            "x",
            ".",
        ][..],
        &[
            "x", ".", "--rec", "--no-sh", "--chunks", "2", "--train", "0.8", "--test", "0.1",
            "--exts", ".jpg",
        ],
    ] {
        let out = im2rec(args, d);
        assert_eq!(out.status.code(), Some(0), "{args:?}: {}", stderr(&out));
        assert!(stderr(&out).starts_with(note), "{}", stderr(&out));
        assert!(out.stdout.is_empty());
    }
    // Prefixes of long options, negative numbers, out-of-range qualities.
    let out = im2rec(
        &[
            "--res",
            "11",
            "--num-thread",
            "-1",
            "--quality",
            "0",
            "--no-pro",
            "x",
            ".",
        ],
        d,
    );
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert!(
        stderr(&out).starts_with(
            "im2rec: warning: --quality 0 is out of range (JPEG quality is 1-100): using 1\n"
        ),
        "{}",
        stderr(&out)
    );
    let recs = inspect(&d.join("x.rec"));
    assert_eq!(field(&recs, "width"), ["16"]);
    assert_eq!(field(&recs, "height"), ["11"]);
    let out = im2rec(
        &["--pass", "--quality", "-1", "--encoding", ".png", "x", "."],
        d,
    );
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert_eq!(
        std::fs::read(d.join("a.png")).unwrap(),
        inspect_image(&d.join("x.rec"))
    );
    // Ambiguous prefixes are still errors, as in argparse.
    let out = im2rec(&["--re", "3", "x", "."], d);
    assert_eq!(out.status.code(), Some(2));
}

/// The image bytes of the only record of `rec`.
fn inspect_image(rec: &std::path::Path) -> Vec<u8> {
    let bytes = std::fs::read(rec).unwrap();
    let mut reader = im2rec::recordio::RecordReader::new(&bytes[..]);
    let record = reader.next_record().unwrap().unwrap();
    assert!(reader.next_record().unwrap().is_none());
    im2rec::recordio::unpack_image_record(&record.payload)
        .unwrap()
        .image
        .to_vec()
}

#[test]
fn webp_bmp_tiff_and_pnm_files_are_packed_whatever_their_names() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    use image::ImageFormat as F;
    let files = [
        ("webp_as.jpg", F::WebP),
        ("bmp_as.jpg", F::Bmp),
        ("t.tiff", F::Tiff),
        ("p.ppm", F::Pnm),
        ("w.webp", F::WebP),
    ];
    let mut list = String::new();
    for (i, (name, format)) in files.iter().enumerate() {
        write_image(&d.join(name), *format);
        list.push_str(&format!("{i}\t0\t{name}\n"));
    }
    std::fs::write(d.join("g.gif"), b"GIF89a\x01\x00\x01\x00\x00\x00\x00;").unwrap();
    list.push_str("5\t0\tg.gif\n");
    let out = im2rec_stdin(
        &["-", ".", "-o", "o.rec", "--resize", "44"],
        d,
        list.as_bytes(),
    );
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    assert_eq!(
        stderr(&out),
        format!(
            "im2rec: {}: unsupported image format: gif\nim2rec: packed 5, skipped 1 -> o.rec\n",
            d.join("g.gif").display()
        )
    );
    let recs = inspect(&d.join("o.rec"));
    assert_eq!(field(&recs, "id"), ["0", "1", "2", "3", "4"]);
    assert_eq!(field(&recs, "format"), vec!["\"jpeg\""; 5]);
    assert_eq!(field(&recs, "width"), vec!["66"; 5]);
    assert_eq!(field(&recs, "height"), vec!["44"; 5]);
}

#[test]
fn lists_are_read_like_python_read_list() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    for name in ["a.bin", "b.bin", "c.bin"] {
        std::fs::write(d.join(name), name).unwrap();
    }
    // Lone CRs end lines; `1_0` is 10.0 as Python's float() reads it.
    let list = b"0\t1_0\ta.bin\r1\t2\tb.bin\r\n2\t3\tc.bin\r";
    let out = im2rec_stdin(&["--pass-through", "-", ".", "-o", "o.rec"], d, list);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let recs = inspect(&d.join("o.rec"));
    assert_eq!(field(&recs, "label"), ["10.0", "2.0", "3.0"]);
    // A line that is not UTF-8 is skipped and named.
    let list = b"0\t1\ta.bin\n1\t1\tcaf\xe9.bin\n2\t1\tc.bin\n";
    let out = im2rec_stdin(&["--pass-through", "-", ".", "-o", "o.rec"], d, list);
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    assert_eq!(
        stderr(&out),
        "im2rec: <stdin>: line 2: not valid UTF-8 (first bad byte at offset 7 in the line)\n\
         im2rec: packed 2, skipped 1 -> o.rec\n"
    );
}

#[test]
fn bad_output_names_are_refused_before_anything_is_written() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    std::fs::write(d.join("a.bin"), "a").unwrap();
    std::fs::create_dir(d.join("od")).unwrap();
    std::fs::create_dir(d.join("taken.rec")).unwrap();
    let list = b"0\t0\ta.bin\n";
    for (out_name, message) in [
        (
            "od",
            "-o od: a folder name; -o takes the output file name (OUT.rec)",
        ),
        (
            "new/",
            "-o new/: a folder name; -o takes the output file name (OUT.rec)",
        ),
        (
            "taken.rec",
            "-o taken.rec: a folder name; -o takes the output file name (OUT.rec)",
        ),
        (
            "same.idx",
            "-o same.idx: name the .rec; the index is written beside it as .idx",
        ),
    ] {
        let out = im2rec_stdin(&["--pass-through", "-", ".", "-o", out_name], d, list);
        assert_eq!(out.status.code(), Some(2), "{out_name}");
        assert_eq!(stderr(&out), format!("im2rec: error: {message}\n"));
    }
    // A list whose .idx name is taken by a folder.
    std::fs::write(d.join("l.lst"), list).unwrap();
    std::fs::create_dir(d.join("l.idx")).unwrap();
    let out = im2rec(&["--pass-through", "l", "."], d);
    assert_eq!(out.status.code(), Some(2));
    assert_eq!(
        stderr(&out),
        format!(
            "im2rec: error: {}: is a folder (an output file was expected)\n",
            d.join("l.idx").display()
        )
    );
    let mut names: Vec<_> = std::fs::read_dir(d)
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    names.sort();
    assert_eq!(names, ["a.bin", "l.idx", "l.lst", "od", "taken.rec"]);
}

#[test]
fn huge_upscales_are_skipped_before_allocating() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let thin = image::DynamicImage::ImageLuma8(image::ImageBuffer::from_pixel(
        1,
        20000,
        image::Luma([128]),
    ));
    thin.save(d.join("thin.png")).unwrap();
    write_image(&d.join("ok.png"), image::ImageFormat::Png);
    let list = b"0\t0\tthin.png\n1\t0\tok.png\n";
    let out = im2rec_stdin(&["--resize", "256", "-", ".", "-o", "o.rec"], d, list);
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    assert_eq!(
        stderr(&out),
        format!(
            "im2rec: {}: output image too large: 256x5120000 (limits: 268435456 pixels, and \
             65535 per side for JPEG)\nim2rec: packed 1, skipped 1 -> o.rec\n",
            d.join("thin.png").display()
        )
    );
}
