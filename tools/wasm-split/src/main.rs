//! `streamai-wasm-split INPUT.wasm PKG_DIR OUTPUT_NAME`: splits INPUT at its lazy
//! routes as `cargo leptos build --split` does. The chunks, their JS loader and
//! `__wasm_split_manifest.json` go to PKG_DIR; the main module is written beside INPUT as
//! `<stem>_split.wasm` (its path is printed), for wasm-bindgen.

use std::path::PathBuf;
use std::process::ExitCode;

/// The loader's name as cargo-leptos writes it (without file hashing).
const LINK_NAME: &str = "./__wasm_split.______________________.js";

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let [input, pkg_dir, output_name] = args.as_slice() else {
        eprintln!("usage: streamai-wasm-split INPUT.wasm PKG_DIR OUTPUT_NAME");
        return ExitCode::from(2);
    };
    match split(input.into(), pkg_dir.into(), output_name) {
        Ok(main_out) => {
            println!("{}", main_out.display());
            ExitCode::SUCCESS
        }
        Err(err) => {
            eprintln!("streamai-wasm-split: {err}");
            ExitCode::FAILURE
        }
    }
}

fn split(
    input: PathBuf,
    pkg_dir: PathBuf,
    output_name: &str,
) -> Result<PathBuf, Box<dyn std::error::Error>> {
    let wasm = std::fs::read(&input)?;
    let stem = input
        .file_stem()
        .and_then(|s| s.to_str())
        .ok_or("the input has no file name")?;
    let main_out = input.with_file_name(format!("{stem}_split.wasm"));
    let main_module = format!("./{output_name}.js");
    let split = wasm_split_cli_support::transform({
        let mut opts = wasm_split_cli_support::Options::new(&wasm);
        opts.output_dir = &pkg_dir;
        opts.main_out_path = &main_out;
        opts.main_module = &main_module;
        opts.link_name = LINK_NAME;
        opts
    })
    .map_err(|err| err.to_string())?;
    let manifest = serde_json::to_string_pretty(&split.prefetch_map)?;
    std::fs::write(pkg_dir.join("__wasm_split_manifest.json"), manifest)?;
    Ok(main_out)
}
