//! The `.idx` text parser (`key<TAB>offset\n`): no panic, and what it accepts is
//! written back by `IndexWriter` to a file that parses to the same entries.
#![no_main]

use im2rec::recordio::{read_index, IndexWriter};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(entries) = read_index(data) else {
        return;
    };
    let mut writer = IndexWriter::new(Vec::new());
    for e in &entries {
        writer.write(e.key, e.offset).expect("write to a Vec");
    }
    let text = writer.into_inner().expect("flush a Vec");
    assert_eq!(
        read_index(text.as_slice()).expect("own output parses"),
        entries
    );
});
