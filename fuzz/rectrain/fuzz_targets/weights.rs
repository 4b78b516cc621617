//! `resnet::weights::read_state_dict`: a `.pth` (torch's ZIP format: the ZIP
//! directory, the pickle of `data.pkl`, the storages; or the legacy pickle format) or
//! a `.safetensors` file, recognised from its bytes. No panic, no abort; sizes are
//! checked against the bytes present before allocating; a tensor that comes back holds
//! as many values as its shape says.
#![no_main]

use std::path::PathBuf;
use std::sync::OnceLock;

use libfuzzer_sys::fuzz_target;
use resnet::weights::{read_state_dict, HostData};

/// The reader takes a path: each input is written to one file in a private folder.
fn scratch() -> &'static PathBuf {
    static PATH: OnceLock<PathBuf> = OnceLock::new();
    PATH.get_or_init(|| {
        let dir = std::env::temp_dir().join(format!("rectrain-fuzz-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        dir.join("weights.bin")
    })
}

fuzz_target!(|data: &[u8]| {
    let path = scratch();
    std::fs::write(path, data).unwrap();
    let Ok(sd) = read_state_dict(path) else {
        return;
    };
    for (name, t) in &sd {
        let n = t.shape.iter().try_fold(1usize, |a, &d| a.checked_mul(d));
        let len = match &t.data {
            HostData::F32(v) => v.len(),
            HostData::I64(v) => v.len(),
        };
        assert_eq!(Some(len), n, "{name}: {len} values for shape {:?}", t.shape);
    }
});
