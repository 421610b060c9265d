//! Header generation shared by build.rs: one cbindgen run, one config.

use std::path::Path;

/// Generates the C header for the crate at `crate_dir` into `out`.
pub fn generate(crate_dir: &Path, out: &Path) -> Result<(), String> {
    let config = cbindgen::Config::from_file(crate_dir.join("cbindgen.toml")).map_err(|e| e.to_string())?;
    let bindings = cbindgen::Builder::new()
        .with_crate(crate_dir)
        .with_config(config)
        .generate()
        .map_err(|e| e.to_string())?;
    bindings.write_to_file(out);
    Ok(())
}
