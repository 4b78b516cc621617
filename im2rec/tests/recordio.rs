//! The RecordIO library against the reference vectors (reference §1.4, §7.1–7.6), files
//! written by the real MXNet 1.9.1 (`scripts/fixtures/make_recordio_fixtures.py`), property
//! round trips through every reader, truncation at every byte, and random garbage.

use std::borrow::Cow;
use std::collections::BTreeSet;
use std::fs;
use std::io::Write as _;
use std::path::{Path, PathBuf};

use im2rec::recordio::{
    pack_image_record, read_index, unpack_image_record, IndexEntry, IndexWriter, IrHeader,
    MmapReader, PartReader, Record, RecordIoError, RecordReader, RecordWriter, MAGIC,
};
use proptest::prelude::*;

const M: [u8; 4] = MAGIC.to_le_bytes();

fn hex(s: &str) -> Vec<u8> {
    let s: String = s.split_whitespace().collect();
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap())
        .collect()
}

fn encode(payloads: &[Vec<u8>]) -> Vec<u8> {
    let mut w = RecordWriter::new(Vec::new());
    for p in payloads {
        w.write_record(p).unwrap();
    }
    w.into_inner().unwrap()
}

fn sequential(data: &[u8]) -> Result<Vec<Record>, RecordIoError> {
    RecordReader::new(data).collect()
}

fn mmap_all(reader: &MmapReader) -> Result<Vec<(u64, Vec<u8>)>, RecordIoError> {
    reader
        .iter()
        .map(|r| r.map(|(o, p)| (o, p.into_owned())))
        .collect()
}

/// All records of all `n` byte partitions, concatenated in part order.
fn parts_union(data: &[u8], n: usize) -> Result<Vec<(u64, Vec<u8>)>, RecordIoError> {
    let mut all = Vec::new();
    for rank in 0..n {
        let part = PartReader::by_bytes(MmapReader::from_vec(data.to_vec()), n, rank)?;
        for r in &part {
            let (offset, payload) = r?;
            all.push((offset, payload.into_owned()));
        }
    }
    Ok(all)
}

/// Checks that every reader returns exactly `payloads` from `data`.
fn assert_all_readers(data: &[u8], payloads: &[Vec<u8>]) {
    let seq = sequential(data).unwrap();
    let seq_payloads: Vec<Vec<u8>> = seq.iter().map(|r| r.payload.clone()).collect();
    assert_eq!(seq_payloads, payloads, "sequential reader");
    let expected: Vec<(u64, Vec<u8>)> = seq.into_iter().map(|r| (r.offset, r.payload)).collect();

    let mmap = MmapReader::from_vec(data.to_vec());
    assert_eq!(mmap_all(&mmap).unwrap(), expected, "mmap iter");
    let offsets = mmap.scan_offsets().unwrap();
    assert_eq!(offsets, expected.iter().map(|e| e.0).collect::<Vec<_>>());
    for (offset, payload) in &expected {
        assert_eq!(&mmap.read_at(*offset).unwrap().0[..], &payload[..]);
    }
    for n in [1, 2, 3, 4, 5, 7, 16] {
        assert_eq!(parts_union(data, n).unwrap(), expected, "{n} byte parts");
    }
    // With an index, partitioned by record count.
    let mut indexed = MmapReader::from_vec(data.to_vec());
    let entries: Vec<IndexEntry> = offsets
        .iter()
        .enumerate()
        .map(|(i, &offset)| IndexEntry {
            key: i as u64,
            offset,
        })
        .collect();
    indexed.set_index(entries.clone()).unwrap();
    for (i, (_, payload)) in expected.iter().enumerate() {
        assert_eq!(&indexed.get(i as u64).unwrap()[..], &payload[..]);
    }
    for n in [1, 2, 3, 5] {
        let mut all = Vec::new();
        let mut sizes = Vec::new();
        for rank in 0..n {
            let mut r = MmapReader::from_vec(data.to_vec());
            r.set_index(entries.clone()).unwrap();
            let part = PartReader::by_index(r, n, rank).unwrap();
            let records: Vec<(u64, Vec<u8>)> = part
                .iter()
                .map(|r| r.map(|(o, p)| (o, p.into_owned())).unwrap())
                .collect();
            sizes.push(records.len());
            all.extend(records);
        }
        assert_eq!(all, expected, "{n} indexed parts");
        let step = expected.len().div_ceil(n);
        for (rank, size) in sizes.iter().enumerate() {
            assert_eq!(*size, step.min(expected.len().saturating_sub(rank * step)));
        }
    }
}

// ---------------------------------------------------------------- reference §1.4, §7.6

#[test]
fn worked_byte_vectors_both_directions() {
    let cases: Vec<(Vec<u8>, &str)> = vec![
        (b"".to_vec(), "0a23d7ce 00000000"),
        (b"abc".to_vec(), "0a23d7ce 03000000 616263 00"),
        (b"record_0".to_vec(), "0a23d7ce 08000000 7265636f72645f30"),
        (
            [&M[..], b"xyz!"].concat(),
            "0a23d7ce 00000020 0a23d7ce 04000060 78797a21",
        ),
        (M.to_vec(), "0a23d7ce 00000020 0a23d7ce 00000060"),
        (
            [&b"ab"[..], &M, b"cd"].concat(),
            "0a23d7ce 08000000 61620a23d7ce6364",
        ),
        (
            [&b"QQQQ"[..], &M, b"RRRR", &M, b"S"].concat(),
            "0a23d7ce 04000020 51515151 0a23d7ce 04000040 52525252 0a23d7ce 01000060 53000000",
        ),
    ];
    for (payload, bytes) in &cases {
        let expected = hex(bytes);
        assert_eq!(encode(std::slice::from_ref(payload)), expected, "{bytes}");
        assert_all_readers(&expected, std::slice::from_ref(payload));
    }
    // All of them in one file, so the chunked readers see split records mid-file.
    let payloads: Vec<Vec<u8>> = cases.iter().map(|c| c.0.clone()).collect();
    let file: Vec<u8> = cases.iter().flat_map(|c| hex(c.1)).collect();
    assert_eq!(encode(&payloads), file);
    assert_all_readers(&file, &payloads);
}

// ---------------------------------------------------------------- reference §7.1, §7.2

fn chr_payloads() -> Vec<Vec<u8>> {
    (0..255u32)
        .map(|i| char::from_u32(i).unwrap().to_string().into_bytes())
        .collect()
}

#[test]
fn mxnet_test_recordio_255_chars() {
    let payloads = chr_payloads();
    assert_eq!(payloads[127].len(), 1);
    assert_eq!(payloads[128].len(), 2);
    let data = encode(&payloads);
    assert_eq!(data.len(), 255 * 12);
    assert_all_readers(&data, &payloads);
}

#[test]
fn mxnet_test_indexed_recordio_with_exact_idx() {
    let dir = tempfile::tempdir().unwrap();
    let (rec, idx) = (dir.path().join("t.rec"), dir.path().join("t.idx"));
    let payloads = chr_payloads();
    let mut w = RecordWriter::new(fs::File::create(&rec).unwrap());
    let mut iw = IndexWriter::new(std::io::BufWriter::new(fs::File::create(&idx).unwrap()));
    for (i, p) in payloads.iter().enumerate() {
        let offset = w.write_record(p).unwrap();
        iw.write(i as u64, offset).unwrap();
    }
    w.into_inner().unwrap();
    iw.into_inner().unwrap();

    let expected_idx: String = (0..255).map(|i| format!("{i}\t{}\n", 12 * i)).collect();
    assert_eq!(fs::read_to_string(&idx).unwrap(), expected_idx);

    let reader = MmapReader::open_indexed(&rec, &idx).unwrap();
    assert_eq!(reader.len(), 255);
    let keys: BTreeSet<u64> = reader.keys().collect();
    assert_eq!(keys, (0..255).collect());
    // A fixed pseudo-random key order.
    let mut order: Vec<u64> = (0..255).collect();
    let mut state = 0x2545_f491_u64;
    for i in (1..order.len()).rev() {
        state = state
            .wrapping_mul(6_364_136_223_846_793_005)
            .wrapping_add(1_442_695_040_888_963_407);
        order.swap(i, (state >> 33) as usize % (i + 1));
    }
    for key in order {
        let got = reader.get(key).unwrap();
        assert!(matches!(got, Cow::Borrowed(_)));
        assert_eq!(&got[..], &payloads[key as usize][..]);
    }
    assert!(matches!(
        reader.get(255),
        Err(RecordIoError::KeyNotFound { key: 255 })
    ));
}

// ---------------------------------------------------------------- reference §7.3

#[test]
fn mxnet_test_recordio_pack_label() {
    let mut state = 12_345u64;
    let mut next = || {
        state = state
            .wrapping_mul(6_364_136_223_846_793_005)
            .wrapping_add(1);
        (state >> 33) as u32
    };
    const CHARS: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789";
    let mut records = Vec::new();
    for n in 1..255usize {
        // Every label count, with a sample of content lengths (all 0..254 for a few counts).
        let lengths: Vec<usize> = if n % 50 == 1 {
            (0..255).collect()
        } else {
            vec![0, 1, 3, 4, (next() % 255) as usize, 254]
        };
        for len in lengths {
            let labels: Vec<f32> = (0..n).map(|_| next() as f32 / 7.0).collect();
            let content: Vec<u8> = (0..len)
                .map(|_| CHARS[next() as usize % CHARS.len()])
                .collect();
            let payload = pack_image_record(0, &labels, true, &content);
            let rec = unpack_image_record(&payload).unwrap();
            assert_eq!(rec.header.flag as usize, n);
            assert_eq!(rec.labels, labels);
            assert_eq!(rec.image, &content[..]);
            records.push(payload);
        }
    }
    // And the same payloads through the container.
    let data = encode(&records);
    let back = sequential(&data).unwrap();
    assert_eq!(back.len(), records.len());
    assert!(back.iter().zip(&records).all(|(r, p)| &r.payload == p));
}

// ---------------------------------------------------------------- reference §7.4

fn dmlc_sample_rec() -> (Vec<u8>, Vec<Vec<u8>>) {
    let payloads: Vec<Vec<u8>> = (1..=10u64)
        .map(|idx| {
            let content = format!("{idx}\n").repeat(10);
            pack_image_record(idx, &[(idx % 2) as f32], false, content.as_bytes())
        })
        .collect();
    (encode(&payloads), payloads)
}

#[test]
fn dmlc_sample_rec_from_its_description() {
    let (data, payloads) = dmlc_sample_rec();
    assert_eq!(data.len(), 532);
    assert_eq!(
        &data[..20],
        &hex("0a23d7ce 2c000000 00000000 0000803f 01000000")[..]
    );
    let reader = MmapReader::from_vec(data.clone());
    let offsets = reader.scan_offsets().unwrap();
    assert_eq!(offsets, (0..10).map(|i| 52 * i).collect::<Vec<u64>>());
    for (i, (_, payload)) in mmap_all(&reader).unwrap().into_iter().enumerate() {
        let idx = i as u64 + 1;
        let rec = unpack_image_record(&payload).unwrap();
        assert_eq!(
            rec.header,
            IrHeader {
                flag: 0,
                label: (idx % 2) as f32,
                id: idx,
                id2: 0
            }
        );
        assert_eq!(rec.labels, [(idx % 2) as f32]);
        assert_eq!(rec.image, format!("{idx}\n").repeat(10).as_bytes());
    }
    assert_all_readers(&data, &payloads);
    // dmlc's own test reads it in 2..=6 parts by bytes; check the part boundaries too.
    // step = ceil(532/3) = 178 -> 180: part 0 = [0, 208), part 1 = [208, 364), part 2 = [364, 532).
    let ranges: Vec<(u64, u64)> = (0..3)
        .map(|rank| {
            PartReader::by_bytes(MmapReader::from_vec(data.clone()), 3, rank)
                .unwrap()
                .byte_range()
        })
        .collect();
    assert_eq!(ranges, [(0, 208), (208, 364), (364, 532)]);
}

// ---------------------------------------------------------------- reference §7.5

#[test]
fn tell_after_five_write_idx() {
    let mut w = RecordWriter::new(Vec::new());
    let mut tells = Vec::new();
    for i in 0..5 {
        w.write_record(format!("record_{i}").as_bytes()).unwrap();
        tells.push(w.position());
    }
    assert_eq!(tells, [16, 32, 48, 64, 80]);
}

// ---------------------------------------------------------------- files written by MXNet 1.9.1

fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures")
        .join(name)
}

struct FixtureRecord {
    key: u64,
    offset: u64,
    payload: Vec<u8>,
    content: Vec<u8>,
    image: Option<(IrHeader, Vec<f32>)>,
}

fn mxnet_manifest() -> Vec<FixtureRecord> {
    let json: serde_json::Value =
        serde_json::from_str(&fs::read_to_string(fixture("mxnet_small.json")).unwrap()).unwrap();
    assert_eq!(json["mxnet"], "1.9.1");
    json["records"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| FixtureRecord {
            key: r["key"].as_u64().unwrap(),
            offset: r["offset"].as_u64().unwrap(),
            payload: hex(r["payload_hex"].as_str().unwrap()),
            content: hex(r["content_hex"].as_str().unwrap()),
            image: (r["kind"] == "image").then(|| {
                let h = &r["header"];
                (
                    IrHeader {
                        flag: h["flag"].as_u64().unwrap() as u32,
                        label: h["label"].as_f64().unwrap() as f32,
                        id: h["id"].as_u64().unwrap(),
                        id2: h["id2"].as_u64().unwrap(),
                    },
                    r["labels"]
                        .as_array()
                        .unwrap()
                        .iter()
                        .map(|l| l.as_f64().unwrap() as f32)
                        .collect(),
                )
            }),
        })
        .collect()
}

#[test]
fn reads_files_written_by_mxnet() {
    let manifest = mxnet_manifest();
    assert_eq!(manifest.len(), 10);
    // Hard facts about the fixture that do not depend on the manifest.
    let keys: Vec<u64> = manifest.iter().map(|r| r.key).collect();
    assert_eq!(keys, [7, 3, 100, 42, 0, 5, 9, 11, 12, 8]);
    let rec_bytes = fs::read(fixture("mxnet_small.rec")).unwrap();
    assert_eq!(rec_bytes.len(), 416);

    let reader =
        MmapReader::open_indexed(&fixture("mxnet_small.rec"), &fixture("mxnet_small.idx")).unwrap();
    assert_eq!(reader.keys().collect::<Vec<_>>(), keys);
    let offsets: Vec<u64> = reader.index().iter().map(|e| e.offset).collect();
    assert_eq!(
        offsets,
        manifest.iter().map(|r| r.offset).collect::<Vec<_>>()
    );
    assert_eq!(reader.scan_offsets().unwrap(), offsets);
    for r in &manifest {
        let payload = reader.get(r.key).unwrap();
        assert_eq!(&payload[..], &r.payload[..], "key {}", r.key);
        if let Some((header, labels)) = &r.image {
            let img = unpack_image_record(&payload).unwrap();
            assert_eq!(&img.header, header, "key {}", r.key);
            assert_eq!(&img.labels, labels, "key {}", r.key);
            assert_eq!(img.image, &r.content[..], "key {}", r.key);
            let multi = header.flag > 0;
            assert_eq!(
                pack_image_record(header.id, labels, multi, &r.content),
                r.payload
            );
        }
    }
    // Specific records: the multi-label one, and the ones MXNet split.
    let multi = unpack_image_record(&reader.get(3).unwrap()).unwrap().labels;
    assert_eq!(multi, [1.0, 0.0, 2.0]);
    assert!(reader.get(100).unwrap().is_empty());
    assert_eq!(&reader.get(11).unwrap()[..], &M[..]);
    assert!(matches!(reader.get(42).unwrap(), Cow::Owned(_)));
    assert!(matches!(reader.get(5).unwrap(), Cow::Borrowed(_)));

    let payloads: Vec<Vec<u8>> = manifest.iter().map(|r| r.payload.clone()).collect();
    assert_all_readers(&rec_bytes, &payloads);
    let file_parts: Vec<(u64, Vec<u8>)> = (0..3)
        .flat_map(|rank| {
            let part = PartReader::open(&fixture("mxnet_small.rec"), 3, rank).unwrap();
            part.iter()
                .map(|r| r.map(|(o, p)| (o, p.into_owned())).unwrap())
                .collect::<Vec<_>>()
        })
        .collect();
    assert_eq!(file_parts.len(), 10);
    let indexed_parts: usize = (0..4)
        .map(|rank| {
            PartReader::open_indexed(
                &fixture("mxnet_small.rec"),
                &fixture("mxnet_small.idx"),
                4,
                rank,
            )
            .unwrap()
            .iter()
            .count()
        })
        .sum();
    assert_eq!(indexed_parts, 10);
}

#[test]
fn writes_files_identical_to_mxnet() {
    let manifest = mxnet_manifest();
    let mut w = RecordWriter::new(Vec::new());
    let mut iw = IndexWriter::new(Vec::new());
    for r in &manifest {
        let payload = match &r.image {
            Some((header, labels)) => {
                pack_image_record(header.id, labels, header.flag > 0, &r.content)
            }
            None => r.content.clone(),
        };
        let offset = w.write_record(&payload).unwrap();
        assert_eq!(offset, r.offset);
        iw.write(r.key, offset).unwrap();
    }
    // keys 42 (1 split), 0 (2), 11 (1) and 8 (2)
    assert_eq!(w.splits(), 6);
    assert_eq!(
        w.into_inner().unwrap(),
        fs::read(fixture("mxnet_small.rec")).unwrap()
    );
    assert_eq!(
        iw.into_inner().unwrap(),
        fs::read(fixture("mxnet_small.idx")).unwrap()
    );
}

// ---------------------------------------------------------------- bad .idx files

fn write_pair(dir: &Path, rec: &[u8], idx: &str) -> (PathBuf, PathBuf) {
    let (r, i) = (dir.join("x.rec"), dir.join("x.idx"));
    fs::write(&r, rec).unwrap();
    fs::write(&i, idx).unwrap();
    (r, i)
}

#[test]
fn bad_index_entries_are_typed_errors() {
    let dir = tempfile::tempdir().unwrap();
    // Records at 0 (plain, 12 bytes), 12 (split: parts at 12 and 24), 32 (plain).
    let data = encode(&[b"abcd".to_vec(), [&b"QQQQ"[..], &M].concat(), b"z".to_vec()]);
    assert_eq!(data.len(), 44);
    let open = |idx: &str| {
        let (r, i) = write_pair(dir.path(), &data, idx);
        MmapReader::open_indexed(&r, &i)
    };
    assert_eq!(open("1\t0\n2\t12\n3\t32\n").unwrap().len(), 3);
    assert!(matches!(
        open("1\t0\n2\t44\n"),
        Err(RecordIoError::IdxOffsetPastEnd {
            key: 2,
            offset: 44,
            file_len: 44
        })
    ));
    for (offset, why) in [
        (2u64, "Misaligned"),
        (4, "BadMagic"),
        (24, "BadContinuation"),
        (8, "BadMagic"),
    ] {
        match open(&format!("9\t{offset}\n")) {
            Err(RecordIoError::IdxNotRecordHead {
                key: 9,
                offset: o,
                reason,
            }) => {
                assert_eq!(o, offset);
                assert!(
                    format!("{reason:?}").starts_with(why),
                    "{offset}: {reason:?}"
                );
            }
            other => panic!("{offset}: {other:?}"),
        }
    }
    let err = open("1\t0\nnot a line\n").unwrap_err();
    assert!(matches!(&err, RecordIoError::IdxParse { line: 2, text } if text == "not a line"));
    assert_eq!(
        err.to_string(),
        "index line 2: expected `key<TAB>offset` (two non-negative integers), found \"not a line\""
    );
    // Missing files name the path.
    let missing = dir.path().join("missing.rec");
    let err = MmapReader::open(&missing).unwrap_err();
    assert!(matches!(&err, RecordIoError::Open { path, .. } if path == &missing));
    assert!(matches!(
        PartReader::open(&dir.path().join("x.rec"), 0, 0),
        Err(RecordIoError::BadPartition { .. })
    ));
    assert!(matches!(
        PartReader::open(&dir.path().join("x.rec"), 2, 2),
        Err(RecordIoError::BadPartition { .. })
    ));
    // An empty file is fine and has no records.
    let empty = dir.path().join("empty.rec");
    fs::write(&empty, b"").unwrap();
    assert_eq!(MmapReader::open(&empty).unwrap().iter().count(), 0);
    assert_eq!(PartReader::open(&empty, 3, 1).unwrap().iter().count(), 0);
    assert!(matches!(
        MmapReader::open(&empty).unwrap().read_at(0),
        Err(RecordIoError::OffsetPastEnd {
            offset: 0,
            file_len: 0
        })
    ));
}

// ---------------------------------------------------------------- truncation at every byte

#[test]
fn truncation_at_every_byte_is_an_error_or_a_clean_prefix() {
    let payloads = vec![
        b"abc".to_vec(),
        [&b"QQQQ"[..], &M, b"RRRR", &M, b"S"].concat(),
        Vec::new(),
        M.to_vec(),
        [&b"ab"[..], &M, b"cd"].concat(),
        pack_image_record(3, &[1.0, 2.0], true, b"jpeg"),
    ];
    let data = encode(&payloads);
    let full = sequential(&data).unwrap();
    let boundaries: Vec<usize> = full
        .iter()
        .map(|r| r.offset as usize)
        .chain([data.len()])
        .collect();
    for cut in 0..=data.len() {
        let bytes = &data[..cut];
        let whole = boundaries.iter().position(|&b| b == cut);
        let check = |what: &str, got: Result<Vec<(u64, Vec<u8>)>, RecordIoError>| match (whole, got)
        {
            (Some(n), Ok(records)) => {
                let expected: Vec<(u64, Vec<u8>)> = full[..n]
                    .iter()
                    .map(|r| (r.offset, r.payload.clone()))
                    .collect();
                assert_eq!(records, expected, "{what}, cut at {cut}");
            }
            (Some(_), Err(e)) => panic!("{what}: cut at record boundary {cut} gave {e}"),
            (None, Ok(records)) => panic!(
                "{what}: cut at {cut} inside a record gave {} records",
                records.len()
            ),
            (None, Err(_)) => {}
        };
        check(
            "sequential",
            sequential(bytes).map(|v| v.into_iter().map(|r| (r.offset, r.payload)).collect()),
        );
        check("mmap", mmap_all(&MmapReader::from_vec(bytes.to_vec())));
        check(
            "scan",
            MmapReader::from_vec(bytes.to_vec())
                .scan_offsets()
                .map(|o| {
                    o.into_iter()
                        .map(|o| {
                            (
                                o,
                                full.iter().find(|r| r.offset == o).unwrap().payload.clone(),
                            )
                        })
                        .collect()
                }),
        );
        for n in [1, 2, 3, 6] {
            check(&format!("{n} parts"), parts_union(bytes, n));
        }
        // An index listing every record is rejected unless each listed record is whole.
        let mut reader = MmapReader::from_vec(bytes.to_vec());
        let entries: Vec<IndexEntry> = full
            .iter()
            .map(|r| IndexEntry {
                key: r.offset,
                offset: r.offset,
            })
            .collect();
        assert_eq!(
            reader.set_index(entries).is_ok(),
            cut == data.len(),
            "index, cut at {cut}"
        );
    }
}

// ---------------------------------------------------------------- properties

/// Payloads built from pieces, some of them copies of the magic, so the magic lands at
/// both aligned and unaligned offsets.
fn payload() -> impl Strategy<Value = Vec<u8>> {
    prop::collection::vec(
        prop_oneof![
            3 => prop::collection::vec(any::<u8>(), 0..9),
            2 => Just(M.to_vec()),
            1 => Just(vec![0u8; 4]),
        ],
        0..8,
    )
    .prop_map(|pieces| pieces.concat())
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

    #[test]
    fn round_trip_through_every_reader(payloads in prop::collection::vec(payload(), 0..12)) {
        let data = encode(&payloads);
        prop_assert_eq!(data.len() % 4, 0);
        assert_all_readers(&data, &payloads);
        // No aligned magic survives in any part's data: only part headers carry it.
        let heads = data.chunks_exact(4).enumerate().filter(|(_, w)| *w == M).count();
        let parts: usize = payloads.iter().map(|p| 1 + p.chunks_exact(4).filter(|w| *w == M).count()).sum();
        prop_assert_eq!(heads, parts);
    }

    #[test]
    fn image_records_round_trip(id in any::<u64>(), labels in prop::collection::vec(any::<f32>(), 0..40),
                                multi in any::<bool>(), image in payload()) {
        let packed = pack_image_record(id, &labels, multi, &image);
        let rec = unpack_image_record(&packed).unwrap();
        prop_assert_eq!(rec.header.id, id);
        prop_assert_eq!(rec.image, &image[..]);
        let bits = |v: &[f32]| v.iter().map(|f| f.to_bits()).collect::<Vec<_>>();
        if multi && !labels.is_empty() {
            prop_assert_eq!(bits(&rec.labels), bits(&labels));
        } else {
            prop_assert_eq!(bits(&rec.labels), bits(&[labels.first().copied().unwrap_or(0.0)]));
        }
    }

    #[test]
    fn index_text_round_trips(entries in prop::collection::vec((any::<u64>(), any::<u64>()), 0..50)) {
        let mut w = IndexWriter::new(Vec::new());
        for (k, o) in &entries {
            w.write(*k, *o).unwrap();
        }
        let back = read_index(&w.into_inner().unwrap()[..]).unwrap();
        prop_assert_eq!(back.into_iter().map(|e| (e.key, e.offset)).collect::<Vec<_>>(), entries);
    }
}

// ---------------------------------------------------------------- fuzz: garbage in, no panic

/// Random words, biased towards the magic and small lrecord values so that the readers
/// get past the first header often.
fn garbage() -> impl Strategy<Value = Vec<u8>> {
    prop::collection::vec(
        prop_oneof![
            3 => Just(M.to_vec()),
            3 => (0u32..4, 0u32..24).prop_map(|(c, l)| ((c << 29) | l).to_le_bytes().to_vec()),
            1 => any::<u32>().prop_map(|w| w.to_le_bytes().to_vec()),
            1 => prop::collection::vec(any::<u8>(), 0..4),
        ],
        0..40,
    )
    .prop_map(|words| words.concat())
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 2000, ..ProptestConfig::default() })]

    #[test]
    fn random_bytes_never_panic(data in garbage(), offsets in prop::collection::vec(0u64..200, 0..6),
                                idx_text in "[0-9 \t\n+x-]{0,40}") {
        let _ = sequential(&data);
        let reader = MmapReader::from_vec(data.clone());
        let _ = mmap_all(&reader);
        let _ = reader.scan_offsets();
        for &o in &offsets {
            let _ = reader.read_at(o);
        }
        for n in 1..5 {
            for rank in 0..n {
                if let Ok(part) = PartReader::by_bytes(MmapReader::from_vec(data.clone()), n, rank) {
                    let (begin, end) = part.byte_range();
                    prop_assert!(begin <= end && end <= data.len() as u64);
                    let _ = part.iter().count();
                }
            }
        }
        let mut indexed = MmapReader::from_vec(data.clone());
        let entries: Vec<IndexEntry> = offsets.iter().map(|&offset| IndexEntry { key: offset, offset }).collect();
        if indexed.set_index(entries).is_ok() {
            for key in offsets.iter() {
                prop_assert!(indexed.get(*key).is_ok());
            }
            for n in 1..4 {
                let mut r = MmapReader::from_vec(data.clone());
                r.set_index(indexed.index().to_vec()).unwrap();
                let part = PartReader::by_index(r, n, n - 1).unwrap();
                prop_assert!(part.iter().all(|r| r.is_ok()));
            }
        }
        let _ = read_index(idx_text.as_bytes());
        let _ = unpack_image_record(&data);
        // If the sequential reader accepts it, the others agree.
        if let Ok(records) = sequential(&data) {
            let expected: Vec<(u64, Vec<u8>)> = records.into_iter().map(|r| (r.offset, r.payload)).collect();
            prop_assert_eq!(mmap_all(&reader).unwrap(), expected.clone());
        }
    }
}

#[test]
fn reads_from_a_real_pipe_file() {
    // Through a File (not a slice), the way im2rec reads stdin.
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("p.rec");
    let payloads = chr_payloads();
    let mut f = fs::File::create(&path).unwrap();
    f.write_all(&encode(&payloads)).unwrap();
    drop(f);
    let reader = RecordReader::new(std::io::BufReader::new(fs::File::open(&path).unwrap()));
    let back: Vec<Vec<u8>> = reader.map(|r| r.unwrap().payload).collect();
    assert_eq!(back, payloads);
}
