//! A `.rec` file: the sequential reader, the in-memory (mmap) reader's scan and
//! iterator, the byte-partitioned reader and the image-record header of every payload.
//!
//! Properties: no panic; the sequential and random-access readers agree on every
//! record and on whether the file is damaged; the records of a readable file, written
//! again by `RecordWriter`, read back identical through every reader, and the byte
//! parts of the rewritten file together hold every record once, in order.
#![no_main]

use std::borrow::Cow;
use std::io::Cursor;

use im2rec::recordio::{unpack_image_record, MmapReader, PartReader, RecordReader, RecordWriter};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    // Sequential, as `im2rec --inspect` / a pipe reads it.
    let mut sequential = Vec::new();
    let mut sequential_error = false;
    for record in RecordReader::new(Cursor::new(data)) {
        match record {
            Ok(r) => sequential.push((r.offset, r.payload)),
            Err(_) => sequential_error = true,
        }
    }

    // Random access over the same bytes.
    let reader = MmapReader::from_vec(data.to_vec());
    let (offsets, stop) = reader.scan_offsets_until_error();
    let mut mapped = Vec::new();
    let mut mapped_error = false;
    for record in reader.iter() {
        match record {
            Ok((offset, payload)) => mapped.push((offset, payload.into_owned())),
            Err(_) => mapped_error = true,
        }
    }
    assert_eq!(
        offsets,
        mapped.iter().map(|(o, _)| *o).collect::<Vec<_>>(),
        "scan and iterator disagree"
    );
    assert_eq!(
        stop.is_some(),
        mapped_error,
        "scan and iterator disagree on damage"
    );
    assert_eq!(sequential, mapped, "sequential and mmap readers disagree");
    assert_eq!(sequential_error, mapped_error, "readers disagree on damage");
    for &offset in &offsets {
        let (payload, _) = reader.read_at(offset).expect("a scanned offset reads");
        let _ = unpack_image_record(&payload);
    }
    for num_parts in 1..=3 {
        for part_index in 0..num_parts {
            let bytes = MmapReader::from_vec(data.to_vec());
            if let Ok(part) = PartReader::by_bytes(bytes, num_parts, part_index) {
                for record in &part {
                    let _ = record;
                }
            }
        }
    }

    // Round trip: the readable records written again, read back by every reader.
    if mapped.is_empty() {
        return;
    }
    let mut writer = RecordWriter::new(Vec::new());
    for (_, payload) in &mapped {
        writer.write_record(payload).expect("write to a Vec");
    }
    let file = writer.into_inner().expect("flush a Vec");
    let payloads: Vec<&[u8]> = mapped.iter().map(|(_, p)| p.as_slice()).collect();
    let again: Vec<Vec<u8>> = RecordReader::new(Cursor::new(&file))
        .map(|r| r.expect("rewritten file reads").payload)
        .collect();
    assert_eq!(again, payloads, "sequential round trip");
    let rewritten = MmapReader::from_vec(file.clone());
    let again: Vec<Cow<'_, [u8]>> = rewritten
        .iter()
        .map(|r| r.expect("rewritten file reads").1)
        .collect();
    assert_eq!(again, payloads, "mmap round trip");
    for num_parts in 1..=4 {
        let mut joined = Vec::new();
        for part_index in 0..num_parts {
            let part =
                PartReader::by_bytes(MmapReader::from_vec(file.clone()), num_parts, part_index)
                    .expect("partition a well-formed file");
            for record in &part {
                joined.push(
                    record
                        .expect("part of a rewritten file reads")
                        .1
                        .into_owned(),
                );
            }
        }
        assert_eq!(
            joined, payloads,
            "{num_parts} byte parts do not hold every record once"
        );
    }
});
