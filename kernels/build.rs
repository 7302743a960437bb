//! Writes each kernel's WGSL without its comments and indentation into `OUT_DIR`, where
//! `gpu_dispatch` takes it from (`shader!`): the comments are for people, and every byte
//! of shader text ships in the browser's wasm (the four shaders: 26 KB as written, 16 KB
//! stripped). WGSL has no string literals, so `//` always starts a comment.

use std::{env, fs, path::Path};

const KERNELS: [&str; 4] = ["matmul", "mlp", "montecarlo", "render"];

fn main() {
    let out_dir = env::var("OUT_DIR").expect("cargo sets OUT_DIR for build scripts");
    for kernel in KERNELS {
        let source = format!("src/{kernel}/shader.wgsl");
        println!("cargo::rerun-if-changed={source}");
        let wgsl = fs::read_to_string(&source).unwrap_or_else(|e| panic!("{source}: {e}"));
        let stripped: Vec<&str> = wgsl
            .lines()
            .map(|line| line.split("//").next().unwrap_or_default().trim())
            .filter(|line| !line.is_empty())
            .collect();
        let target = Path::new(&out_dir).join(format!("{kernel}.wgsl"));
        fs::write(&target, stripped.join("\n") + "\n")
            .unwrap_or_else(|e| panic!("{}: {e}", target.display()));
    }
}
