//! MXNet's `nd.save` parameter files (`resnet::mxnet::params::read_params`): every
//! array version (V1, V2, V3, legacy), dtype and name table. No panic, no allocation
//! beyond the bytes present; what reads back is written by `write_params` into a file
//! that reads back to the same arrays.
#![no_main]

use libfuzzer_sys::fuzz_target;
use resnet::mxnet::params::{read_params, write_params};

fuzz_target!(|data: &[u8]| {
    let Ok(arrays) = read_params(data) else {
        return;
    };
    for (name, a) in &arrays {
        let n: usize = a.shape.iter().product();
        assert_eq!(n, a.data.len(), "{name}: shape {:?}", a.shape);
    }
    let again = read_params(&write_params(&arrays)).expect("own output reads back");
    assert_eq!(again.len(), arrays.len());
    for ((n1, a1), (n2, a2)) in arrays.iter().zip(&again) {
        assert_eq!(n1, n2);
        assert_eq!(a1.shape, a2.shape);
        let same = a1
            .data
            .iter()
            .zip(&a2.data)
            .all(|(x, y)| x.to_bits() == y.to_bits());
        assert!(same, "{n1}: values changed in a write/read round trip");
    }
});
