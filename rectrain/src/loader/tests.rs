use super::*;
use im2rec::dataset::DatasetError;
use im2rec::recordio::{pack_image_record, IndexWriter, RecordWriter};
use image::{DynamicImage, ImageFormat, RgbImage};
use resnet::testing::png_rgb;
use std::collections::HashSet;
use std::fs::File;
use std::io::{Cursor, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;

fn jpeg(w: u32, h: u32, seed: u32) -> Vec<u8> {
    let img = RgbImage::from_fn(w, h, |x, y| {
        image::Rgb([
            ((x * 3 + seed * 17) % 256) as u8,
            ((y * 5 + seed * 29) % 256) as u8,
            ((x + y + seed) % 256) as u8,
        ])
    });
    let mut buf = Cursor::new(Vec::new());
    DynamicImage::ImageRgb8(img)
        .write_to(&mut buf, ImageFormat::Jpeg)
        .unwrap();
    buf.into_inner()
}

fn image_for(i: u64) -> Vec<u8> {
    // Mixed formats and sizes; a few smaller than the 16x16 target.
    let (w, h) = (12 + (i as u32 * 7) % 30, 10 + (i as u32 * 11) % 25);
    if i.is_multiple_of(2) {
        png_rgb(w, h, move |x, y| {
            [(x * 9 + i as u32) as u8, (y * 13) as u8, (i * 20) as u8]
        })
    } else {
        jpeg(w, h, i as u32)
    }
}

/// Write `n` records (id = 100 + i, label = i % 3) as `<dir>/d.rec` + `.idx`.
fn write_rec(dir: &Path, n: u64, multi: bool) -> (PathBuf, PathBuf) {
    let rec = dir.join("d.rec");
    let idx = dir.join("d.idx");
    let mut w = RecordWriter::new(File::create(&rec).unwrap());
    let mut iw = IndexWriter::new(File::create(&idx).unwrap());
    for i in 0..n {
        let labels: Vec<f32> = if multi {
            (0..3)
                .map(|k| f32::from(u8::from(k as u64 <= i % 3)))
                .collect()
        } else {
            vec![(i % 3) as f32]
        };
        let payload = pack_image_record(100 + i, &labels, multi, &image_for(i));
        let offset = w.write_record(&payload).unwrap();
        iw.write(100 + i, offset).unwrap();
    }
    w.into_inner().unwrap().flush().unwrap();
    iw.into_inner().unwrap().flush().unwrap();
    (rec, idx)
}

fn cfg(batch_size: usize, workers: usize) -> LoaderConfig {
    let mut c = LoaderConfig::new(PreprocessConfig::new([3, 16, 16], None), batch_size);
    c.workers = workers;
    c.shuffle = true;
    c.seed = 7;
    c.augmentation = AugmentationType::CropColorTransform;
    c
}

fn collect(ds: &Arc<RecDataset>, c: &LoaderConfig, epoch: usize) -> Vec<Batch> {
    epoch_batches(Arc::clone(ds), c, epoch)
        .collect::<Result<Vec<_>, _>>()
        .unwrap()
}

#[test]
fn reads_headers_with_and_without_idx() {
    let dir = tempfile::tempdir().unwrap();
    let (rec, idx) = write_rec(dir.path(), 10, false);
    let a = RecDataset::open(&rec, Some(&idx)).unwrap();
    let b = RecDataset::open(&rec, None).unwrap();
    let c = RecDataset::open_auto(&rec).unwrap();
    assert_eq!(a.len(), 10);
    assert_eq!(a.ids(), (100..110).collect::<Vec<u64>>());
    assert_eq!(a.ids(), b.ids());
    assert_eq!(a.ids(), c.ids());
    assert_eq!(a.labels(), b.labels());
    assert_eq!(a.labels()[4], vec![1.0]);
    assert!(!a.is_multi_label());
    assert_eq!((a.label_width(), a.num_classes_inferred()), (1, 3));
    for i in 0..10 {
        assert_eq!(
            a.image_bytes(i).unwrap().as_ref(),
            image_for(i as u64).as_slice()
        );
    }
    assert!(a.validate_labels(3).is_ok());
    let err = a.validate_labels(2).unwrap_err().to_string();
    assert!(err.starts_with("record id 102 ("), "{err}");
    assert!(
        err.contains("label 2 is not a class index in 0..2"),
        "{err}"
    );
}

/// Python's `recordio.pack(IRHeader(0, [2.0], id, 0), img)` stores a one-element
/// label vector (`flag == 1`): still one class index, as ImageRecordIter reads it.
#[test]
fn one_element_label_vectors_are_single_labels() {
    let dir = tempfile::tempdir().unwrap();
    let rec = dir.path().join("f1.rec");
    let mut w = RecordWriter::new(File::create(&rec).unwrap());
    for i in 0..6u64 {
        let payload = pack_image_record(i, &[(i % 3) as f32], true, &image_for(i));
        assert_eq!(u32::from_le_bytes(payload[..4].try_into().unwrap()), 1);
        w.write_record(&payload).unwrap();
    }
    w.into_inner().unwrap().flush().unwrap();
    let ds = RecDataset::open(&rec, None).unwrap();
    assert!(!ds.is_multi_label());
    assert_eq!(ds.labels()[5], vec![2.0]);
    assert_eq!((ds.label_width(), ds.num_classes_inferred()), (1, 3));
    assert!(ds.validate_labels(3).is_ok());
    assert!(ds.validate_labels(5).is_ok());
}

#[test]
fn multi_label_records_give_vectors() {
    let dir = tempfile::tempdir().unwrap();
    let (rec, idx) = write_rec(dir.path(), 4, true);
    let ds = RecDataset::open(&rec, Some(&idx)).unwrap();
    assert!(ds.is_multi_label());
    assert_eq!(ds.labels()[1], vec![1.0, 1.0, 0.0]);
    assert_eq!((ds.label_width(), ds.num_classes_inferred()), (3, 3));
    assert!(ds.validate_labels(3).is_ok());
    let err = ds.validate_labels(4).unwrap_err().to_string();
    assert!(
        err.contains("record id 100") && err.contains("has 3 labels"),
        "{err}"
    );
    let ds = Arc::new(ds);
    let batches = collect(&ds, &cfg(4, 2), 0);
    for b in &batches {
        for (k, &i) in b.indices.iter().enumerate() {
            assert_eq!(b.labels[k], ds.labels()[i]);
        }
    }
}

#[test]
fn every_record_once_per_epoch_shapes_and_drop_last() {
    let dir = tempfile::tempdir().unwrap();
    let (rec, idx) = write_rec(dir.path(), 10, false);
    let ds = Arc::new(RecDataset::open(&rec, Some(&idx)).unwrap());
    let c = cfg(4, 2);
    let batches = collect(&ds, &c, 0);
    assert_eq!(
        batches.iter().map(|b| b.n).collect::<Vec<_>>(),
        vec![4, 4, 2]
    );
    let mut seen: Vec<usize> = batches.iter().flat_map(|b| b.indices.clone()).collect();
    seen.sort_unstable();
    assert_eq!(seen, (0..10).collect::<Vec<_>>());
    for b in &batches {
        assert_eq!(b.images.len(), b.n * 3 * 16 * 16);
        assert_eq!(b.labels.len(), b.n);
        for (k, &i) in b.indices.iter().enumerate() {
            assert_eq!(b.ids[k], 100 + i as u64);
            assert_eq!(b.labels[k], vec![(i % 3) as f32]);
        }
    }
    // Images 0 (12x10) and others smaller than 16x16 are upscaled and reported.
    let up: HashSet<u64> = batches.iter().flat_map(|b| b.upscaled.clone()).collect();
    assert!(up.contains(&100), "{up:?}");
    let mut notice = UpscaleNotice::default();
    let texts: Vec<String> = batches
        .iter()
        .filter_map(|b| notice.check(b, [3, 16, 16]))
        .collect();
    assert_eq!(texts.len(), 1, "{texts:?}");
    assert!(texts[0].contains("is smaller than 16x16"), "{}", texts[0]);
    let mut d = c.clone();
    d.drop_last = true;
    let batches = collect(&ds, &d, 0);
    assert_eq!(batches.iter().map(|b| b.n).collect::<Vec<_>>(), vec![4, 4]);
    assert_eq!(num_batches(10, 4, true), 2);
    assert_eq!(num_batches(10, 4, false), 3);
    assert_eq!(num_batches(3, 4, true), 0);
}

#[test]
fn order_changes_per_epoch_and_repeats_per_seed_whatever_the_workers() {
    let dir = tempfile::tempdir().unwrap();
    let (rec, _) = write_rec(dir.path(), 24, false);
    let ds = Arc::new(RecDataset::open(&rec, None).unwrap());
    let order = |b: &[Batch]| b.iter().flat_map(|b| b.indices.clone()).collect::<Vec<_>>();
    let one = collect(&ds, &cfg(5, 1), 0);
    let four = collect(&ds, &cfg(5, 4), 0);
    let inline = collect(&ds, &cfg(5, 0), 0);
    assert_eq!(
        one, four,
        "1 vs 4 workers: identical batches, pixels included"
    );
    assert_eq!(one, inline);
    assert_eq!(collect(&ds, &cfg(5, 3), 0), one, "same seed, another run");
    let next = collect(&ds, &cfg(5, 4), 1);
    assert_ne!(order(&one), order(&next), "shuffle differs across epochs");
    let mut other = cfg(5, 2);
    other.seed = 8;
    assert_ne!(order(&collect(&ds, &other, 0)), order(&one));
    // Without shuffle the order is the file order.
    let mut plain = cfg(5, 2);
    plain.shuffle = false;
    assert_eq!(order(&collect(&ds, &plain, 3)), (0..24).collect::<Vec<_>>());
}

#[test]
fn prefetch_is_bounded() {
    let dir = tempfile::tempdir().unwrap();
    let (rec, _) = write_rec(dir.path(), 40, false);
    let ds = Arc::new(RecDataset::open(&rec, None).unwrap());
    let mut c = cfg(1, 3);
    c.prefetch_batches = 2;
    let mut it = epoch_batches(ds, &c, 0);
    assert_eq!(it.len(), 40);
    let mut count = 0;
    for b in it.by_ref() {
        b.unwrap();
        count += 1;
        std::thread::sleep(std::time::Duration::from_millis(2));
    }
    assert_eq!(count, 40);
    assert!(it.peak_buffered() <= 2 + 3, "peak {}", it.peak_buffered());
    assert!(it.peak_buffered() >= 1);
}

#[test]
fn undecodable_image_names_record_id_and_offset() {
    let dir = tempfile::tempdir().unwrap();
    let rec = dir.path().join("bad.rec");
    let mut w = RecordWriter::new(File::create(&rec).unwrap());
    w.write_record(&pack_image_record(5, &[0.0], false, &image_for(0)))
        .unwrap();
    let bad_offset = w
        .write_record(&pack_image_record(6, &[1.0], false, b"\xff\xd8\xffgarbage"))
        .unwrap();
    w.into_inner().unwrap().flush().unwrap();
    let ds = Arc::new(RecDataset::open(&rec, None).unwrap());
    let mut c = cfg(1, 2);
    c.shuffle = false;
    let results: Vec<_> = epoch_batches(ds, &c, 0).collect();
    assert_eq!(results.len(), 2, "the iterator ends after the error");
    assert!(results[0].is_ok());
    let err = results[1].as_ref().unwrap_err();
    assert!(matches!(err, LoaderError::Image { id: 6, .. }), "{err:?}");
    let text = err.to_string();
    assert!(
        text.contains(&format!(
            "record id 6 ({} at byte offset {bad_offset})",
            rec.display()
        )),
        "{text}"
    );
}

#[test]
fn corrupt_framing_and_headers_are_errors_at_open() {
    let dir = tempfile::tempdir().unwrap();
    let (rec, idx) = write_rec(dir.path(), 3, false);
    let mut bytes = std::fs::read(&rec).unwrap();
    let len = bytes.len();
    bytes.truncate(len - 6);
    let cut = dir.path().join("cut.rec");
    std::fs::write(&cut, &bytes).unwrap();
    let err = RecDataset::open(&cut, None).unwrap_err();
    assert!(
        matches!(err, LoaderError::Dataset(DatasetError::Rec { .. })),
        "{err:?}"
    );
    assert!(err.to_string().contains("cut.rec"), "{err}");
    let err = RecDataset::open(&cut, Some(&idx)).unwrap_err();
    assert!(
        matches!(err, LoaderError::Dataset(DatasetError::Rec { .. })),
        "{err:?}"
    );
    // A record too short for an IRHeader.
    let short = dir.path().join("short.rec");
    let mut w = RecordWriter::new(File::create(&short).unwrap());
    w.write_record(&pack_image_record(1, &[0.0], false, &image_for(0)))
        .unwrap();
    let off = w.write_record(b"tiny").unwrap();
    w.into_inner().unwrap().flush().unwrap();
    let err = RecDataset::open(&short, None).unwrap_err();
    let text = err.to_string();
    assert!(
        matches!(err, LoaderError::Dataset(DatasetError::Record { position: 1, offset, .. }) if offset == off),
        "{text}"
    );
    assert!(
        text.contains(&format!("record #1 at byte offset {off}")),
        "{text}"
    );
}

#[test]
fn lst_dataset_matches_rec_dataset() {
    let dir = tempfile::tempdir().unwrap();
    let (rec, _) = write_rec(dir.path(), 6, false);
    let root = dir.path().join("imgs");
    std::fs::create_dir(&root).unwrap();
    let mut lst = String::new();
    for i in 0..6u64 {
        let name = format!("{i}.img");
        std::fs::write(root.join(&name), image_for(i)).unwrap();
        lst.push_str(&im2list::lst::LstEntry::new(100 + i, (i % 3) as f64, name).to_line());
    }
    let lst_path = dir.path().join("d.lst");
    std::fs::write(&lst_path, lst).unwrap();
    let from_lst = Arc::new(RecDataset::from_lst(&lst_path, &root).unwrap());
    let from_rec = Arc::new(RecDataset::open(&rec, None).unwrap());
    assert_eq!(from_lst.ids(), from_rec.ids());
    assert_eq!(from_lst.labels(), from_rec.labels());
    let c = cfg(4, 2);
    assert_eq!(collect(&from_lst, &c, 2), collect(&from_rec, &c, 2));
    // A missing file is reported at open, with its id.
    std::fs::remove_file(root.join("3.img")).unwrap();
    let err = RecDataset::from_lst(&lst_path, &root).unwrap_err();
    assert!(
        matches!(
            err,
            LoaderError::Dataset(DatasetError::ImageFile { id: 103, .. })
        ),
        "{err:?}"
    );
}

#[test]
fn bad_settings_are_reported() {
    let dir = tempfile::tempdir().unwrap();
    let (rec, _) = write_rec(dir.path(), 2, false);
    let ds = Arc::new(RecDataset::open(&rec, None).unwrap());
    let mut c = cfg(0, 1);
    let r: Vec<_> = epoch_batches(Arc::clone(&ds), &c, 0).collect();
    assert!(matches!(r.as_slice(), [Err(LoaderError::Config(_))]));
    c.batch_size = 1;
    c.preprocess.image_shape = [4, 16, 16];
    assert!(c.validate().is_err());
}

#[test]
fn record_rngs_are_independent_streams() {
    use rand::RngExt;
    let draw = |s, e, i| record_rng(s, e, i).random::<u64>();
    assert_eq!(draw(1, 0, 0), draw(1, 0, 0));
    let all: HashSet<u64> = [
        draw(1, 0, 0),
        draw(1, 0, 1),
        draw(1, 1, 0),
        draw(2, 0, 0),
        draw(0, 0, 0),
    ]
    .into_iter()
    .collect();
    assert_eq!(all.len(), 5);
}

/// Multi-process training: the shards of every global batch, put side by side in rank
/// order, are the batches of one process reading `count × batch_size` at a time, for
/// every shard count (a short last batch leaves the last shards short or empty, and
/// every shard has the same number of batches).
#[test]
fn shards_of_each_global_batch_are_the_one_process_batches() {
    let len = 23;
    for count in 1..=4 {
        let mut whole = cfg(3 * count, 1);
        whole.shuffle = true;
        whole.seed = 9;
        let expected = batch_order(len, &whole, 2);
        let shards: Vec<Vec<Vec<usize>>> = (0..count)
            .map(|index| {
                let mut c = cfg(3, 1);
                c.shuffle = true;
                c.seed = 9;
                c.shard = Shard { index, count };
                batch_order(len, &c, 2)
            })
            .collect();
        for s in &shards {
            assert_eq!(s.len(), expected.len(), "count {count}");
        }
        for (b, global) in expected.iter().enumerate() {
            let joined: Vec<usize> = shards.iter().flat_map(|s| s[b].clone()).collect();
            assert_eq!(&joined, global, "count {count}, batch {b}");
            for s in &shards {
                assert!(s[b].len() <= 3);
            }
        }
    }
    // 23 records, 4 shards of 3: the last global batch has 23 - 12 = 11, so shard 3
    // has 2; with 9 shards of 3 the single global batch of 23 leaves shard 8 empty.
    let mut c = cfg(3, 1);
    c.shard = Shard { index: 3, count: 4 };
    assert_eq!(batch_order(len, &c, 0).last().unwrap().len(), 2);
    c.shard = Shard { index: 8, count: 9 };
    assert_eq!(batch_order(len, &c, 0), vec![Vec::<usize>::new()]);
    c.shard = Shard { index: 2, count: 2 };
    assert!(c.validate().is_err());
}
