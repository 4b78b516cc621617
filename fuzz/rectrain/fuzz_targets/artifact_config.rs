//! The model artifact's `config.json` (`resnet::artifact::ArtifactConfig::load`): no
//! panic; a configuration that loads describes a network that can be built (its depth
//! is one rectrain has) and preprocessing that validates.
#![no_main]

use std::path::PathBuf;
use std::sync::OnceLock;

use libfuzzer_sys::fuzz_target;
use resnet::artifact::{config_path, ArtifactConfig};

/// `load` takes the artifact folder: each input is written to its `config.json`.
fn scratch() -> &'static PathBuf {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    DIR.get_or_init(|| {
        let dir = std::env::temp_dir().join(format!("rectrain-fuzz-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        dir
    })
}

fuzz_target!(|data: &[u8]| {
    let dir = scratch();
    std::fs::write(config_path(dir), data).unwrap();
    let Ok(config) = ArtifactConfig::load(dir) else {
        return;
    };
    config
        .preprocess()
        .validate()
        .expect("a loaded config preprocesses");
    config
        .resnet()
        .validate()
        .expect("a loaded config builds a network");
    let _ = config.class_name(config.num_classes - 1);
});
