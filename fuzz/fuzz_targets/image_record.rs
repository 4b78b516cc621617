//! The image-record payload (24-byte IRHeader, `flag` labels, image): no panic, and a
//! payload it accepts is rebuilt byte for byte by `pack_image_record` when it is in the
//! form MXNet writes (`id2` 0; with labels, header label 0.0).
#![no_main]

use im2rec::recordio::{pack_image_record, unpack_image_record, IrHeader};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let header = IrHeader::from_bytes(data);
    let Ok(record) = unpack_image_record(data) else {
        return;
    };
    // Compared as bytes: a NaN label is not equal to itself.
    assert_eq!(
        header.map(|h| h.to_bytes()).ok(),
        Some(record.header.to_bytes())
    );
    assert_eq!(record.header.to_bytes(), data[..24]);
    let multi = record.header.flag > 0;
    assert_eq!(
        record.labels.len(),
        if multi {
            record.header.flag as usize
        } else {
            1
        }
    );
    if record.header.id2 == 0 && (!multi || record.header.label.to_bits() == 0) {
        let packed = pack_image_record(record.header.id, &record.labels, multi, record.image);
        assert_eq!(packed, data, "pack(unpack(x)) != x");
    }
});
