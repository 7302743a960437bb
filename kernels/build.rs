//! Writes each kernel's WGSL without its comments and indentation into `OUT_DIR`, where
//! `gpu_dispatch` takes it from (`shader!`): the comments are for people, and every byte
//! of shader text ships in the browser's wasm (the four shaders: 26 KB as written, 16 KB
//! stripped). WGSL has no string literals, so `//` always starts a comment.

use std::{env, fs, path::Path};

/// The vec4 matmul shader's template, whose `VOLUNTEER` shape becomes `matmul_vec4`.
#[allow(dead_code)]
mod tiles {
    include!("src/matmul/tiles.rs");
}

/// Each shader's source and the name `shader!` takes it by.
const SHADERS: [(&str, &str); 4] = [
    ("src/matmul/shader.wgsl", "matmul"),
    ("src/mlp/shader.wgsl", "mlp"),
    ("src/montecarlo/shader.wgsl", "montecarlo"),
    ("src/render/shader.wgsl", "render"),
];

fn main() {
    let out_dir = env::var("OUT_DIR").expect("cargo sets OUT_DIR for build scripts");
    for (source, name) in SHADERS {
        println!("cargo::rerun-if-changed={source}");
        let wgsl = fs::read_to_string(source).unwrap_or_else(|e| panic!("{source}: {e}"));
        let stripped: Vec<&str> = wgsl
            .lines()
            .map(|line| line.split("//").next().unwrap_or_default().trim())
            .filter(|line| !line.is_empty())
            .collect();
        let target = Path::new(&out_dir).join(format!("{name}.wgsl"));
        fs::write(&target, stripped.join("\n") + "\n")
            .unwrap_or_else(|e| panic!("{}: {e}", target.display()));
    }
    println!("cargo::rerun-if-changed=src/matmul/tiles.rs");
    let vec4: Vec<String> = tiles::VOLUNTEER
        .wgsl()
        .lines()
        .map(|line| line.trim().to_owned())
        .filter(|line| !line.is_empty())
        .collect();
    let target = Path::new(&out_dir).join("matmul_vec4.wgsl");
    fs::write(&target, vec4.join("\n") + "\n")
        .unwrap_or_else(|e| panic!("{}: {e}", target.display()));
}
