// The vec4 matmul shader's template: `build.rs` includes this file to write the shader
// volunteers run (`VOLUNTEER`), and the `matmul_shapes` bench to compare other shapes of
// it on a device. So it holds items only, with no inner attributes or `use` at the top.

/// A tile shape of the vec4 matmul shader, for `C = A x B` over one block of rows where
/// k and n are multiples of 4 (A, B and C bound as arrays of vec4).
///
/// A workgroup of `(bn / tn) x (bm / tm)` threads computes a `bm` x `bn` block of C; each
/// thread a `tm` x `tn` tile of it, as bands of 4 rows and of 4 columns (one vec4 of C)
/// spread a band apart, so neighbouring threads read neighbouring vec4s of workgroup
/// memory. K advances by `bk`: a `bm` x `bk` slice of A (stored transposed, so a thread
/// reads 4 rows in one vec4) and a `bk` x `bn` slice of B are staged in workgroup memory,
/// each thread loading whole vec4s from storage. Every element of C sums over k in
/// increasing order, like the CPU reference.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Shape {
    /// Rows of C a workgroup computes.
    pub bm: u32,
    /// Columns of C a workgroup computes.
    pub bn: u32,
    /// Steps of k staged at a time.
    pub bk: u32,
    /// Rows of C a thread computes (a multiple of 4).
    pub tm: u32,
    /// Columns of C a thread computes (a multiple of 4).
    pub tn: u32,
    /// Load the next slices into registers before multiplying the current ones, so
    /// their latency hides behind the arithmetic.
    pub prefetch: bool,
    /// Slices kept in workgroup memory: 2 (with `prefetch`) saves a barrier a step.
    pub stages: u32,
    /// Write out the steps over a slice's k rather than loop (1.1x on an H200, whose
    /// driver does not unroll the loop WGSL's compiler emits).
    pub unroll: bool,
}

/// The shape volunteers run. On an NVIDIA H200 (4096^3, the shader alone) it was the
/// fastest of 13 shapes within WebGPU's default limits (128 threads, 8 KiB of workgroup
/// memory): 35-36 TFLOP/s, 52-54% of the chip's FP32 peak, against 13.2-13.5 for the
/// scalar shader and 29-30 for the 8x8 tiles it replaced, in two passes of the same run
/// (`cargo bench -p starling-kernels --bench matmul_shapes`; docs/performance.md).
pub const VOLUNTEER: Shape = Shape {
    bm: 128,
    bn: 128,
    bk: 8,
    tm: 8,
    tn: 16,
    prefetch: true,
    stages: 1,
    unroll: true,
};

impl Shape {
    /// Threads in a workgroup.
    pub fn threads(&self) -> u32 {
        (self.bm / self.tm) * (self.bn / self.tn)
    }

    /// Bytes of workgroup memory the shader declares.
    pub fn workgroup_bytes(&self) -> u32 {
        self.stages * (self.bm + self.bn) * self.bk * 4
    }

    /// A short name, e.g. `128x128x16 t8x16 pf unr`.
    pub fn name(&self) -> String {
        format!(
            "{}x{}x{} t{}x{}{}{}{}",
            self.bm,
            self.bn,
            self.bk,
            self.tm,
            self.tn,
            if self.prefetch { " pf" } else { "" },
            if self.stages == 2 { " 2st" } else { "" },
            if self.unroll { " unr" } else { "" },
        )
    }

    /// Whether the template can write this shape with at most `max_threads` threads and
    /// `max_workgroup_bytes` of workgroup memory.
    pub fn fits(&self, max_threads: u32, max_workgroup_bytes: u32) -> bool {
        let nonzero = [self.bm, self.bn, self.bk, self.tm, self.tn]
            .iter()
            .all(|&v| v > 0);
        nonzero
            && self.tm.is_multiple_of(4)
            && self.tn.is_multiple_of(4)
            && self.bk.is_multiple_of(4)
            && self.bm.is_multiple_of(self.tm)
            && self.bn.is_multiple_of(self.tn)
            && (self.bm / 4).is_multiple_of(self.tm / 4)
            && (self.bn / 4).is_multiple_of(self.tn / 4)
            && (1..=max_threads).contains(&self.threads())
            && (self.bm * self.bk / 4).is_multiple_of(self.threads())
            && (self.bk * self.bn / 4).is_multiple_of(self.threads())
            && self.workgroup_bytes() <= max_workgroup_bytes
            && (1..=2).contains(&self.stages)
            && (self.stages == 1 || self.prefetch)
    }

    /// The shader for this shape.
    pub fn wgsl(&self) -> String {
        use std::fmt::Write;
        let Shape {
            bm, bn, bk, tm, tn, ..
        } = *self;
        let (aq, bq) = (bm / 4, bn / 4);
        let (bands_m, bands_n) = (tm / 4, tn / 4);
        let (tiles_x, tiles_y) = (bn / tn, bm / tm);
        let threads = self.threads();
        let loads_a = bm * bk / 4 / threads;
        let loads_b = bk * bn / 4 / threads;
        let kq = bk / 4;
        let stage_a = bk * aq;
        let stage_b = bk * bq;
        let mut s = String::new();
        let w = &mut s;
        let _ = writeln!(
            w,
            "struct Dims {{ rows: u32, k: u32, n: u32, _pad: u32, }}
@group(0) @binding(0) var<uniform> dims: Dims;
@group(0) @binding(1) var<storage, read> a: array<vec4<f32>>;
@group(0) @binding(2) var<storage, read> b: array<vec4<f32>>;
@group(0) @binding(3) var<storage, read_write> c: array<vec4<f32>>;
var<workgroup> tile_a: array<vec4<f32>, {}>;
var<workgroup> tile_b: array<vec4<f32>, {}>;
@compute @workgroup_size({tiles_x}, {tiles_y}, 1)
fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_id) lid: vec3<u32>,
        @builtin(local_invocation_index) lindex: u32) {{
    let row0 = wid.y * {bm}u;
    let col0 = wid.x * {bn}u;
    let k4 = dims.k / 4u;
    let n4 = dims.n / 4u;
    let tx = lid.x;
    let ty = lid.y;
    let steps = (dims.k + {}u) / {bk}u;",
            self.stages * stage_a,
            self.stages * stage_b,
            bk - 1,
        );
        for i in 0..tm {
            for j in 0..bands_n {
                let _ = writeln!(w, "    var c{i}_{j} = vec4<f32>(0.0);");
            }
        }
        for l in 0..loads_a {
            let _ = writeln!(w, "    var ga{l} = vec4<f32>(0.0);");
        }
        for l in 0..loads_b {
            let _ = writeln!(w, "    var gb{l} = vec4<f32>(0.0);");
        }
        // Loads slice `t` of A and B from storage into the registers ga*, gb*.
        let load = |w: &mut String, t: &str, indent: &str| {
            let _ = writeln!(w, "{indent}let p0 = {t} * {bk}u;");
            for l in 0..loads_a {
                let _ = writeln!(
                    w,
                    "{indent}{{ let e = lindex + {}u; let r = e / {kq}u; let q = e % {kq}u;
{indent}  ga{l} = vec4<f32>(0.0);
{indent}  if (row0 + r < dims.rows && p0 + q * 4u < dims.k) {{ ga{l} = a[(row0 + r) * k4 + p0 / 4u + q]; }} }}",
                    l * threads
                );
            }
            for l in 0..loads_b {
                let _ = writeln!(
                    w,
                    "{indent}{{ let e = lindex + {}u; let p = e / {bq}u; let q = e % {bq}u;
{indent}  gb{l} = vec4<f32>(0.0);
{indent}  if (p0 + p < dims.k && col0 + q * 4u < dims.n) {{ gb{l} = b[(p0 + p) * n4 + col0 / 4u + q]; }} }}",
                    l * threads
                );
            }
        };
        // Stores the registers into workgroup stage `stage` (A transposed).
        let store = |w: &mut String, stage: &str, indent: &str| {
            let _ = writeln!(
                w,
                "{indent}let sa = {stage} * {stage_a}u; let sb = {stage} * {stage_b}u;"
            );
            for l in 0..loads_a {
                let _ = writeln!(
                    w,
                    "{indent}{{ let e = lindex + {}u; let r = e / {kq}u; let q = e % {kq}u;
{indent}  let x = sa + q * {}u + r / 4u; let y = r % 4u;
{indent}  tile_a[x][y] = ga{l}.x; tile_a[x + {aq}u][y] = ga{l}.y;
{indent}  tile_a[x + {}u][y] = ga{l}.z; tile_a[x + {}u][y] = ga{l}.w; }}",
                    l * threads,
                    4 * aq,
                    2 * aq,
                    3 * aq
                );
            }
            for l in 0..loads_b {
                let _ = writeln!(
                    w,
                    "{indent}{{ let e = lindex + {}u; tile_b[sb + e] = gb{l}; }}",
                    l * threads
                );
            }
        };
        // Multiplies stage `stage`'s slices into the accumulators.
        let compute = |w: &mut String, stage: &str, indent: &str, unroll: bool| {
            let _ = writeln!(
                w,
                "{indent}let ca = {stage} * {stage_a}u + ty; let cb = {stage} * {stage_b}u + tx;"
            );
            let body = |w: &mut String, p: &str, indent: &str| {
                for j in 0..bands_m {
                    let _ = writeln!(
                        w,
                        "{indent}let ra{j} = tile_a[ca + {p} * {aq}u + {}u];",
                        j * (aq / bands_m)
                    );
                }
                for j in 0..bands_n {
                    let _ = writeln!(
                        w,
                        "{indent}let rb{j} = tile_b[cb + {p} * {bq}u + {}u];",
                        j * (bq / bands_n)
                    );
                }
                for i in 0..tm {
                    let lane = ["x", "y", "z", "w"][(i % 4) as usize];
                    for j in 0..bands_n {
                        let _ = writeln!(
                            w,
                            "{indent}c{i}_{j} = c{i}_{j} + ra{}.{lane} * rb{j};",
                            i / 4
                        );
                    }
                }
            };
            if unroll {
                for p in 0..bk {
                    let _ = writeln!(w, "{indent}{{");
                    body(w, &format!("{p}u"), &format!("{indent}  "));
                    let _ = writeln!(w, "{indent}}}");
                }
            } else {
                let _ = writeln!(w, "{indent}for (var p = 0u; p < {bk}u; p = p + 1u) {{");
                body(w, "p", &format!("{indent}  "));
                let _ = writeln!(w, "{indent}}}");
            }
        };
        if self.prefetch {
            let _ = writeln!(w, "    {{");
            load(w, "0u", "      ");
            store(w, "0u", "      ");
            let _ = writeln!(w, "    }}\n    workgroupBarrier();");
            let _ = writeln!(w, "    for (var t = 0u; t < steps; t = t + 1u) {{");
            let _ = writeln!(w, "      let more = t + 1u < steps;");
            let _ = writeln!(w, "      if (more) {{");
            load(w, "(t + 1u)", "        ");
            let _ = writeln!(w, "      }}");
            if self.stages == 2 {
                let _ = writeln!(w, "      {{");
                compute(w, "(t % 2u)", "        ", self.unroll);
                let _ = writeln!(w, "      }}\n      if (more) {{");
                store(w, "((t + 1u) % 2u)", "        ");
                let _ = writeln!(w, "      }}\n      workgroupBarrier();");
            } else {
                let _ = writeln!(w, "      {{");
                compute(w, "0u", "        ", self.unroll);
                let _ = writeln!(w, "      }}\n      workgroupBarrier();\n      if (more) {{");
                store(w, "0u", "        ");
                let _ = writeln!(w, "      }}\n      workgroupBarrier();");
            }
            let _ = writeln!(w, "    }}");
        } else {
            let _ = writeln!(
                w,
                "    for (var t = 0u; t < steps; t = t + 1u) {{\n      {{"
            );
            load(w, "t", "        ");
            store(w, "0u", "        ");
            let _ = writeln!(w, "      }}\n      workgroupBarrier();\n      {{");
            compute(w, "0u", "        ", self.unroll);
            let _ = writeln!(w, "      }}\n      workgroupBarrier();\n    }}");
        }
        for i in 0..tm {
            let band = i / 4;
            let _ = writeln!(
                w,
                "    {{ let row = row0 + {}u + ty * 4u + {}u; if (row < dims.rows) {{",
                band * (bm / bands_m),
                i % 4
            );
            for j in 0..bands_n {
                let _ = writeln!(
                    w,
                    "      {{ let q = col0 / 4u + {}u + tx; if (q < n4) {{ c[row * n4 + q] = c{i}_{j}; }} }}",
                    j * (bq / bands_n)
                );
            }
            let _ = writeln!(w, "    }} }}");
        }
        let _ = writeln!(w, "}}");
        s
    }
}
