//! Compiles `proto/ferry/v1/*.proto` without a system `protoc`: `protox` parses and checks
//! the files into a `FileDescriptorSet`, `tonic-prost-build` generates messages, clients and
//! servers from it, and the encoded set is written to `OUT_DIR` for gRPC reflection.

use std::env;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

/// Where the encoded descriptor set goes inside `OUT_DIR`; `src/lib.rs` includes it.
const DESCRIPTOR_SET_FILE: &str = "ferry_descriptor_set.bin";

fn main() -> ExitCode {
    match run() {
        Ok(()) => ExitCode::SUCCESS,
        Err(message) => {
            // Cargo shows a failing build script's stderr; keep it to one clear paragraph.
            eprintln!("error: ferry-proto: {message}");
            ExitCode::FAILURE
        }
    }
}

fn run() -> Result<(), String> {
    let manifest_dir = PathBuf::from(env_var("CARGO_MANIFEST_DIR")?);
    let out_dir = PathBuf::from(env_var("OUT_DIR")?);
    let include = manifest_dir.join("../../proto");
    let include = include
        .canonicalize()
        .map_err(|e| format!("proto directory {} not found: {e}", include.display()))?;
    let package_dir = include.join("ferry/v1");

    // The whole tree, so that adding, removing or editing any file reruns this script.
    println!("cargo:rerun-if-changed={}", include.display());
    println!("cargo:rerun-if-changed={}", package_dir.display());
    println!("cargo:rerun-if-changed=build.rs");

    let files = proto_files(&package_dir)?;
    for file in &files {
        println!("cargo:rerun-if-changed={}", file.display());
    }

    // One file at a time, so an error always names the file it came from, even when the
    // compiler's own message does not.
    let mut compiler = protox::Compiler::new([&include])
        .map_err(|e| format!("cannot use {} as an include path: {e:?}", include.display()))?;
    compiler.include_source_info(true).include_imports(true);
    for file in &files {
        compiler.open_file(file).map_err(|e| {
            // protox's Debug form is "file:line:column: message" for most errors; name the
            // failing file ourselves when it does not.
            let detail = format!("{e:?}");
            match e.file() {
                Some(f) if !detail.starts_with(f) => {
                    format!("failed to compile {}: in {f}: {detail}", file.display())
                }
                _ => format!("failed to compile {}: {detail}", file.display()),
            }
        })?;
    }

    let descriptor_set_path = out_dir.join(DESCRIPTOR_SET_FILE);
    fs::write(&descriptor_set_path, compiler.encode_file_descriptor_set())
        .map_err(|e| format!("cannot write {}: {e}", descriptor_set_path.display()))?;

    // The set includes the imported well-known types, which prost-build needs to see to
    // derive traits; it maps them to prost-types instead of generating them.
    let fds = compiler.file_descriptor_set();

    tonic_prost_build::configure()
        .build_client(true)
        .build_server(true)
        .build_transport(true)
        .emit_rerun_if_changed(false)
        // A whole Job or JobReport inline would make every JobEvent (mostly small progress
        // updates) hundreds of bytes; box the two rare, large variants.
        .boxed(".ferry.v1.JobEvent.event.snapshot")
        .boxed(".ferry.v1.JobEvent.event.report")
        // Messages carrying credentials get a hand-written Debug (src/lib.rs) that
        // redacts them, so no log line ever holds a secret.
        .skip_debug([
            ".ferry.v1.S3Credentials",
            ".ferry.v1.ResolveProfileResponse",
            ".ferry.v1.ResolvePairResponse",
        ])
        .compile_fds(fds)
        .map_err(|e| format!("code generation from {} failed: {e}", package_dir.display()))
}

/// Every `.proto` file directly in `dir`, sorted so the output does not depend on the
/// directory's order.
fn proto_files(dir: &Path) -> Result<Vec<PathBuf>, String> {
    let entries =
        fs::read_dir(dir).map_err(|e| format!("cannot read directory {}: {e}", dir.display()))?;
    let mut files = Vec::new();
    for entry in entries {
        let path = entry
            .map_err(|e| format!("cannot read directory {}: {e}", dir.display()))?
            .path();
        if path.extension().is_some_and(|ext| ext == "proto") {
            files.push(path);
        }
    }
    files.sort();
    if files.is_empty() {
        return Err(format!("no .proto files in {}", dir.display()));
    }
    Ok(files)
}

fn env_var(name: &str) -> Result<String, String> {
    env::var(name).map_err(|e| format!("environment variable {name}: {e}"))
}
