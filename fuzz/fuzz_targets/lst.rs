//! The `.lst` row reader (`index<TAB>label…<TAB>path`, Python's universal newlines):
//! no panic, and every row it accepts, written back with `LstEntry::to_line`, parses
//! to the same index, label count and path (labels are written with six decimals, so
//! their values may round).
#![no_main]

use im2list::lst::{read_entries, LstEntry};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    for row in read_entries(data) {
        let Ok(Ok(entry)) = row else {
            continue;
        };
        let line = entry.to_line();
        let back = LstEntry::parse(&line, 1).expect("own output parses");
        assert_eq!(back.index, entry.index);
        assert_eq!(back.labels.len(), entry.labels.len());
        assert_eq!(back.path, entry.path);
    }
});
