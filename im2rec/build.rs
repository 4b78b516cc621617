//! Compiles `src/imageops/libjpeg_shim.c` against the libjpeg-turbo code that
//! `mozjpeg-sys` builds (its `links = "jpeg"` exports the include directories as
//! `DEP_JPEG_INCLUDE`). Only a C compiler is needed.

fn main() {
    let shim = "src/imageops/libjpeg_shim.c";
    println!("cargo:rerun-if-changed={shim}");
    let include = std::env::var_os("DEP_JPEG_INCLUDE")
        .expect("mozjpeg-sys sets DEP_JPEG_INCLUDE (its include directories)");
    let mut build = cc::Build::new();
    for dir in std::env::split_paths(&include) {
        build.include(dir);
    }
    build
        .file(shim)
        .warnings(true)
        .compile("im2rec_libjpeg_shim");
}
