//! A `.rec` with its `.idx`: the index checked against the records
//! (`MmapReader::set_index`, what `open_indexed` does), every key read as an image
//! record (`im2rec::dataset::read_record`), and the index-partitioned reader.
//!
//! Input layout: a little-endian `u16` n, then n bytes of `.idx` text, then the `.rec`
//! bytes (the seeds in corpus/rec_idx are built that way by scripts/fuzz.sh's seeding).
//!
//! Properties: no panic; an index that `set_index` accepts only points at records that
//! read; the index parts together hold every indexed record once.
#![no_main]

use im2rec::dataset::read_record;
use im2rec::recordio::{read_index, MmapReader, PartReader};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Some((len, rest)) = data.split_first_chunk::<2>() else {
        return;
    };
    let n = usize::from(u16::from_le_bytes(*len)).min(rest.len());
    let (idx, rec) = rest.split_at(n);
    let Ok(entries) = read_index(idx) else {
        return;
    };
    let mut reader = MmapReader::from_vec(rec.to_vec());
    if reader.set_index(entries.clone()).is_err() {
        return;
    }
    for key in reader.keys().collect::<Vec<_>>() {
        reader.get(key).expect("an accepted index entry reads");
    }
    for entry in &entries {
        let _ = read_record(&reader, entry.offset);
    }
    let mut sorted: Vec<u64> = entries.iter().map(|e| e.offset).collect();
    sorted.sort_unstable();
    for num_parts in 1..=3 {
        let mut joined = Vec::new();
        for part_index in 0..num_parts {
            let mut r = MmapReader::from_vec(rec.to_vec());
            r.set_index(entries.clone()).expect("accepted once");
            let part = PartReader::by_index(r, num_parts, part_index).expect("valid partition");
            for record in &part {
                joined.push(record.expect("an accepted index entry reads").0);
            }
        }
        assert_eq!(joined, sorted, "index parts do not hold every entry once");
    }
});
