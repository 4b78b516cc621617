//! SageMaker's `hyperparameters.json` (`rectrain::hparams`): the JSON reader and the
//! resolution of every value (`Hyperparameters::from_raw`). No panic; resolved
//! hyperparameters written back as raw strings resolve to the same values.
#![no_main]

use libfuzzer_sys::fuzz_target;
use rectrain::hparams::{parse_hyperparameters_json, Hyperparameters};

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let Ok(raw) = parse_hyperparameters_json(text) else {
        return;
    };
    let Ok(h) = Hyperparameters::from_raw(&raw, |_| {}) else {
        return;
    };
    for epoch in 0..3 {
        let _ = h.learning_rate_at(epoch);
    }
    let again = Hyperparameters::from_raw(&h.to_raw(), |_| {}).expect("own output resolves");
    assert_eq!(again.to_raw(), h.to_raw(), "to_raw/from_raw round trip");
    let _ = h.to_json();
});
