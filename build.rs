//! Generates include/kpalloc.h from the C ABI in src/ with cbindgen (with
//! the `header` feature, on by default; the library builds for C and for
//! kernels leave it out and do not compile cbindgen).
//!
//! The header is committed. A build writes a fresh copy to
//! `$OUT_DIR/kpalloc.h`, and to `$KPALLOC_HEADER_OUT` when that is set (the
//! ctest `header_up_to_date` compares that copy with the committed one);
//! `KPALLOC_UPDATE_HEADER=1` rewrites include/kpalloc.h itself.

#[cfg(feature = "header")]
#[path = "tools/header.rs"]
mod header;

fn main() {
    #[cfg(feature = "header")]
    generate_header();
}

#[cfg(feature = "header")]
fn generate_header() {
    use std::env;
    use std::path::PathBuf;

    println!("cargo:rerun-if-changed=src");
    println!("cargo:rerun-if-changed=cbindgen.toml");
    println!("cargo:rerun-if-changed=tools/header.rs");
    println!("cargo:rerun-if-env-changed=KPALLOC_HEADER_OUT");
    println!("cargo:rerun-if-env-changed=KPALLOC_UPDATE_HEADER");
    let crate_dir = PathBuf::from(env::var("CARGO_MANIFEST_DIR").expect("cargo sets CARGO_MANIFEST_DIR"));
    let mut outputs = vec![PathBuf::from(env::var("OUT_DIR").expect("cargo sets OUT_DIR")).join("kpalloc.h")];
    if let Some(path) = env::var_os("KPALLOC_HEADER_OUT") {
        outputs.push(path.into());
    }
    if env::var_os("KPALLOC_UPDATE_HEADER").is_some_and(|v| v == "1") {
        outputs.push(crate_dir.join("include/kpalloc.h"));
    }
    for out in outputs {
        if let Err(error) = header::generate(&crate_dir, &out) {
            panic!("cbindgen could not generate {}: {error}", out.display());
        }
    }
}
