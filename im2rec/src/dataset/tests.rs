use super::*;
use crate::recordio::{pack_image_record, IndexWriter, RecordWriter, MAGIC};

/// Write records `(id, labels, image)` to `<dir>/<name>.rec`; their offsets.
fn write_rec(dir: &Path, name: &str, records: &[(u64, &[f32], &[u8])]) -> (PathBuf, Vec<u64>) {
    let rec = dir.join(format!("{name}.rec"));
    let mut w = RecordWriter::new(Vec::new());
    let offsets = records
        .iter()
        .map(|(id, labels, image)| {
            let payload = pack_image_record(*id, labels, labels.len() > 1, image);
            w.write_record(&payload).unwrap()
        })
        .collect();
    std::fs::write(&rec, w.into_inner().unwrap()).unwrap();
    (rec, offsets)
}

/// Write `(key, offset)` lines as `<stem>.idx` beside `rec`.
fn write_idx(rec: &Path, entries: &[(u64, u64)]) -> PathBuf {
    let idx = default_idx(rec);
    let mut w = IndexWriter::new(Vec::new());
    for &(key, offset) in entries {
        w.write(key, offset).unwrap();
    }
    std::fs::write(&idx, w.into_inner().unwrap()).unwrap();
    idx
}

fn three(dir: &Path) -> (PathBuf, Vec<u64>) {
    write_rec(
        dir,
        "d",
        &[
            (10, &[0.0], b"IMG10"),
            (11, &[1.0, 0.0], b"IMG11"),
            (12, &[2.0], b"IMG12"),
        ],
    )
}

fn offsets(ds: &Dataset) -> Vec<u64> {
    (0..ds.len()).map(|i| ds.offset(i).unwrap()).collect()
}

#[test]
fn default_idx_is_the_stem_with_extension_idx() {
    assert_eq!(default_idx(Path::new("a/b.rec")), PathBuf::from("a/b.idx"));
    assert_eq!(default_idx(Path::new("a/b")), PathBuf::from("a/b.idx"));
}

#[test]
fn both_modes_read_a_sound_rec_alike() {
    let dir = tempfile::tempdir().unwrap();
    let (rec, offs) = three(dir.path());
    write_idx(&rec, &[(10, offs[0]), (11, offs[1]), (12, offs[2])]);
    for idx in [None, Some(default_idx(&rec))] {
        let strict = Dataset::open_rec(&rec, idx.as_deref(), ReadMode::Strict).unwrap();
        let lenient = Dataset::open_rec(&rec, idx.as_deref(), ReadMode::Lenient).unwrap();
        assert_eq!(offsets(&strict), offs);
        assert_eq!(offsets(&lenient), offs);
        // Strict reads the headers when opened; lenient when each record is read.
        assert_eq!(strict.ids(), [10, 11, 12]);
        assert_eq!(strict.labels()[1], vec![1.0, 0.0]);
        assert!(strict.is_multi_label());
        assert!(lenient.ids().is_empty() && lenient.labels().is_empty());
        for ds in [&strict, &lenient] {
            assert_eq!(ds.image_bytes(2).unwrap().as_ref(), b"IMG12");
            assert!((0..3).all(|i| ds.failure(i).is_none()));
            let record = read_record(ds.reader().unwrap(), offs[1]).unwrap();
            assert_eq!((record.id, record.labels), (11, vec![1.0, 0.0]));
            assert!(matches!(record.image, Cow::Borrowed(b) if b == b"IMG11"));
        }
        assert_eq!(
            strict.location(1).to_string(),
            format!("{} at byte offset {}", rec.display(), offs[1])
        );
    }
    let auto = Dataset::open_rec_auto(&rec, ReadMode::Strict).unwrap();
    assert_eq!(offsets(&auto), offs);
}

/// A record split at a magic word is reassembled; its image comes back owned.
#[test]
fn a_split_record_is_read_whole() {
    let dir = tempfile::tempdir().unwrap();
    let mut image = b"ABCD".to_vec();
    image.extend_from_slice(&MAGIC.to_le_bytes());
    image.extend_from_slice(b"EFGHI");
    let (rec, offs) = write_rec(dir.path(), "s", &[(3, &[1.0, 2.0], &image)]);
    let ds = Dataset::open_rec(&rec, None, ReadMode::Strict).unwrap();
    let record = read_record(ds.reader().unwrap(), offs[0]).unwrap();
    assert!(matches!(record.image, Cow::Owned(_)));
    assert_eq!(record.image.as_ref(), image.as_slice());
    assert_eq!((record.id, record.labels), (3, vec![1.0, 2.0]));
    assert_eq!(ds.image_bytes(0).unwrap().as_ref(), image.as_slice());
}

/// Overwrite the magic of the record at `offset` (its framing is damaged).
fn damage(rec: &Path, offset: u64) {
    let mut bytes = std::fs::read(rec).unwrap();
    bytes[offset as usize..offset as usize + 4].copy_from_slice(b"JUNK");
    std::fs::write(rec, bytes).unwrap();
}

#[test]
fn a_damaged_record_is_an_error_when_strict() {
    let dir = tempfile::tempdir().unwrap();
    let (rec, offs) = three(dir.path());
    damage(&rec, offs[1]);
    let err = Dataset::open_rec(&rec, None, ReadMode::Strict).unwrap_err();
    assert!(matches!(err, DatasetError::Rec { .. }), "{err:?}");
    let text = err.to_string();
    assert!(
        text.starts_with(&format!("{}: byte {}: ", rec.display(), offs[1])),
        "{text}"
    );
    let idx = write_idx(&rec, &[(10, offs[0]), (11, offs[1]), (12, offs[2])]);
    let err = Dataset::open_rec(&rec, Some(&idx), ReadMode::Strict).unwrap_err();
    let text = err.to_string();
    assert!(
        text.contains(&format!(
            "index key 11: offset {} is not the start",
            offs[1]
        )),
        "{text}"
    );
}

#[test]
fn a_damaged_record_ends_a_lenient_scan_with_one_failed_entry() {
    let dir = tempfile::tempdir().unwrap();
    let (rec, offs) = three(dir.path());
    damage(&rec, offs[1]);
    let ds = Dataset::open_rec(&rec, None, ReadMode::Lenient).unwrap();
    assert_eq!(offsets(&ds), offs[..2]);
    assert_eq!(ds.image_bytes(0).unwrap().as_ref(), b"IMG10");
    assert_eq!(ds.failure(0), None);
    let rest = std::fs::metadata(&rec).unwrap().len() - offs[1];
    let failure = ds.failure(1).unwrap();
    assert!(
        failure.starts_with(&format!("byte {}: expected the RecordIO magic", offs[1])),
        "{failure}"
    );
    assert!(
        failure.ends_with(&format!(
            "; the rest of the file ({rest} bytes from here) cannot be read"
        )),
        "{failure}"
    );
    // With an .idx, every listed record is an entry; only the damaged one fails.
    let idx = write_idx(&rec, &[(10, offs[0]), (11, offs[1]), (12, offs[2])]);
    let ds = Dataset::open_rec(&rec, Some(&idx), ReadMode::Lenient).unwrap();
    assert_eq!(offsets(&ds), offs);
    let reader = ds.reader().unwrap();
    assert!(read_record(reader, offs[0]).is_ok());
    assert!(read_record(reader, offs[1]).is_err());
    assert_eq!(read_record(reader, offs[2]).unwrap().id, 12);
    let err = ds.image_bytes(1).unwrap_err().to_string();
    assert!(
        err.contains(&format!("record #1 at byte offset {}", offs[1])),
        "{err}"
    );
}

#[test]
fn a_record_without_an_irheader_fails_at_open_only_when_strict() {
    let dir = tempfile::tempdir().unwrap();
    let rec = dir.path().join("short.rec");
    let mut w = RecordWriter::new(Vec::new());
    w.write_record(&pack_image_record(1, &[0.0], false, b"IMG"))
        .unwrap();
    let off = w.write_record(b"tiny").unwrap();
    std::fs::write(&rec, w.into_inner().unwrap()).unwrap();
    let err = Dataset::open_rec(&rec, None, ReadMode::Strict).unwrap_err();
    assert!(
        matches!(err, DatasetError::Record { position: 1, offset, .. } if offset == off),
        "{err:?}"
    );
    assert_eq!(
        err.to_string(),
        format!(
            "{}: record #1 at byte offset {off}: image record of 4 bytes is shorter than the \
             24-byte IRHeader",
            rec.display()
        )
    );
    let ds = Dataset::open_rec(&rec, None, ReadMode::Lenient).unwrap();
    assert_eq!(ds.len(), 2);
    assert!(matches!(
        read_record(ds.reader().unwrap(), off),
        Err(RecordIoError::ImageRecordTooShort { length: 4 })
    ));
}

#[test]
fn strict_keeps_idx_order_lenient_sorts_and_deduplicates() {
    let dir = tempfile::tempdir().unwrap();
    let (rec, offs) = three(dir.path());
    let idx = write_idx(
        &rec,
        &[(12, offs[2]), (10, offs[0]), (12, offs[2]), (11, offs[1])],
    );
    let strict = Dataset::open_rec(&rec, Some(&idx), ReadMode::Strict).unwrap();
    assert_eq!(offsets(&strict), [offs[2], offs[0], offs[2], offs[1]]);
    assert_eq!(strict.ids(), [12, 10, 12, 11]);
    let lenient = Dataset::open_rec(&rec, Some(&idx), ReadMode::Lenient).unwrap();
    assert_eq!(offsets(&lenient), offs);
}

#[test]
fn an_unreadable_idx_is_named_by_lenient_mode_and_the_rec_by_strict() {
    let dir = tempfile::tempdir().unwrap();
    let (rec, _) = three(dir.path());
    let idx = dir.path().join("missing.idx");
    for (mode, named) in [(ReadMode::Strict, &rec), (ReadMode::Lenient, &idx)] {
        match Dataset::open_rec(&rec, Some(&idx), mode) {
            Err(DatasetError::Rec { path, .. }) => assert_eq!(&path, named, "{mode:?}"),
            other => panic!("{mode:?}: {other:?}"),
        }
    }
}

#[test]
fn lst_files_must_exist_only_when_strict() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("imgs");
    std::fs::create_dir(&root).unwrap();
    std::fs::write(root.join("a.jpg"), b"A").unwrap();
    let lst = dir.path().join("x.lst");
    std::fs::write(
        &lst,
        "3\t1.000000\ta.jpg\n7\t0.000000\t1.000000\tgone.png\n",
    )
    .unwrap();
    let err = Dataset::open_lst(&lst, &root, ReadMode::Strict).unwrap_err();
    assert!(
        matches!(&err, DatasetError::ImageFile { id: 7, path, .. } if *path == root.join("gone.png")),
        "{err:?}"
    );
    let ds = Dataset::open_lst(&lst, &root, ReadMode::Lenient).unwrap();
    assert_eq!(ds.len(), 2);
    assert_eq!(ds.ids(), [3, 7]);
    assert_eq!(ds.labels(), [vec![1.0], vec![0.0, 1.0]]);
    assert!(ds.is_multi_label());
    assert_eq!(ds.listed_path(1), Some(Path::new("gone.png")));
    assert_eq!(
        ds.location(0),
        Location::File {
            path: root.join("a.jpg")
        }
    );
    assert_eq!(ds.image_bytes(0).unwrap().as_ref(), b"A");
    let err = ds.image_bytes(1).unwrap_err().to_string();
    assert!(err.starts_with("record id 7: cannot read "), "{err}");
    assert!(ds.reader().is_none() && ds.offset(0).is_none());
    // A malformed row names its line, in either mode.
    std::fs::write(&lst, "0\t1\ta.jpg\nbroken\n").unwrap();
    for mode in [ReadMode::Strict, ReadMode::Lenient] {
        let err = Dataset::open_lst(&lst, &root, mode).unwrap_err();
        assert!(matches!(err, DatasetError::LstRow { .. }), "{err:?}");
        assert!(err.to_string().contains("line 2"), "{err}");
    }
}
