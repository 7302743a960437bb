//! A submitter's own kernel: the manifest that goes with its WGSL (`POST /api/v1/kernels`),
//! and the small integer expressions its buffer lengths and ranges are written in.
//!
//! The relay checks a manifest against the shader with naga; this module holds only what
//! the relay, the CLI and the tests share: the shape, and evaluating a length for a job's
//! parameters with checked arithmetic, so a length that overflows is an error, never a
//! wrapped number or a panic.

use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::fmt;

/// What a submitter declares about a WGSL compute shader.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct KernelManifest {
    /// One line for people (shown in the catalog).
    #[serde(default)]
    pub description: String,
    /// The `@compute` function to run.
    pub entry_point: String,
    /// Its `@workgroup_size`, as the shader declares it (`[x, y, z]`).
    pub workgroup_size: [u32; 3],
    /// The job's integer parameters, in the order the unit uniform's fields name them.
    #[serde(default)]
    pub params: Vec<ParamSpec>,
    /// Read-only `storage` buffers, `array<T>` each, in `@group(0)`.
    pub inputs: Vec<BufferSpec>,
    /// The one `read_write` storage buffer the kernel writes, in `@group(0)`.
    pub output: BufferSpec,
    /// The binding of the `uniform` the relay fills per unit (see [`UNIT_UNIFORM_FIELDS`]).
    pub unit_binding: u32,
    /// How a job's invocations are cut into units.
    pub split: Split,
    /// How two replicas' outputs are compared.
    pub compare: Comparison,
    /// Floating-point operations one invocation performs, as the submitter counts them:
    /// the price is drawn from it.
    pub flops_per_invocation: f64,
}

/// The fields the unit uniform's struct starts with, in order, each `vec2<u32>` (`y` is
/// 0 and 1 for a 1-D range): the unit's first invocation in the job's range, the unit's
/// extent, and the whole range. One `u32` field per declared parameter follows, named
/// as the parameter.
pub const UNIT_UNIFORM_FIELDS: [&str; 3] = ["offset", "size", "range"];

/// One integer parameter of a job.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct ParamSpec {
    /// Its name in the job's `params` object and in length expressions.
    pub name: String,
    /// The least value a job may give.
    #[serde(default)]
    pub min: u32,
    /// The greatest value a job may give.
    pub max: u32,
}

/// A storage buffer of the kernel.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct BufferSpec {
    /// The input's name in the job's `input` object (ignored for the output).
    #[serde(default)]
    pub name: String,
    /// Its `@binding` in `@group(0)`.
    pub binding: u32,
    /// The array's element type.
    pub element: Element,
    /// Elements, as an expression of the parameters (`"n"`, `"width * height"`).
    pub length: String,
    /// For an input of a 1-D kernel: each unit receives only the elements its
    /// invocations read, not the whole input (see [`InputSlice`]). Absent: every unit
    /// receives all of it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub per_unit: Option<InputSlice>,
}

/// The part of an input one unit of a 1-D kernel receives: for the unit's invocations
/// `offset .. offset + size`, the elements `offset * per_invocation - halo` up to
/// `(offset + size) * per_invocation + halo`, clipped to the input. The input must hold
/// exactly `per_invocation` elements per invocation of the range. The shader indexes the
/// slice from its first element: element `e` of the whole input is at `e - first`, where
/// `first = max(offset * per_invocation, halo) - halo`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct InputSlice {
    /// Elements of the input per invocation (1 for an element-wise kernel).
    pub per_invocation: u32,
    /// Elements either side of the unit's own that its invocations also read (1 for a
    /// 3-tap stencil).
    #[serde(default)]
    pub halo: u32,
}

/// Element types a buffer may hold: WebGPU's 32-bit scalars.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "lowercase")]
pub enum Element {
    /// `f32`.
    F32,
    /// `u32`.
    U32,
    /// `i32`.
    I32,
}

impl Element {
    /// Bytes per element.
    pub const fn bytes(self) -> u64 {
        4
    }

    /// Its WGSL spelling.
    pub const fn wgsl(self) -> &'static str {
        match self {
            Self::F32 => "f32",
            Self::U32 => "u32",
            Self::I32 => "i32",
        }
    }
}

/// How a job's range of invocations is cut into units.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct Split {
    /// The range: one expression (1-D) or two (`[width, height]`, 2-D; units are bands of
    /// whole rows, so their outputs concatenate into the row-major whole).
    pub range: Vec<String>,
    /// About how many invocations one unit runs.
    pub unit_invocations: u32,
}

/// How replicas of a unit are compared.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "lowercase")]
pub enum Comparison {
    /// Bit for bit.
    Exact,
    /// `f32` outputs within this absolute difference, element by element.
    Abs(f64),
    /// `f32` outputs within this difference relative to the larger magnitude.
    Rel(f64),
}

/// A custom kernel as the relay keeps it: `GET /api/v1/kernels/{id}` and the answer to
/// registering one.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct CustomKernel {
    /// The content address: SHA-256 of the source and the manifest, in hex.
    pub id: String,
    /// The account that registered it first (none on a relay without billing).
    pub owner: Option<String>,
    /// When it was registered, Unix milliseconds.
    pub registered_ms: i64,
    /// Why it no longer runs, if it was suspended.
    pub suspended: Option<String>,
    /// What the submitter declared.
    pub manifest: KernelManifest,
    /// The WGSL, readable by anyone: volunteers see what they run.
    pub source: String,
    /// How its units went on the volunteers, beside what the manifest declares (absent
    /// until a result was accepted).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub measured: Option<MeasuredRuns>,
}

/// A registered kernel's accepted results as the relay timed them.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct MeasuredRuns {
    /// Accepted results.
    pub results: u64,
    /// Mean time from lease to result, milliseconds (the volunteer's computation and the
    /// round trip).
    pub mean_unit_ms: f64,
    /// The declared FLOPs of those units over the time they took: a rate far above what
    /// volunteers' devices do means the declaration overstates the work (and the price).
    pub declared_gflop_per_s: f64,
}

/// The body of `POST /api/v1/kernels`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct RegisterKernel {
    /// The WGSL source.
    pub source: String,
    /// What it takes and makes.
    pub manifest: KernelManifest,
}

/// The content address of a kernel: SHA-256 over a tag, the source's length and bytes,
/// and the manifest as serialised here (so whitespace or key order in what a submitter
/// sent does not make a second id), in lowercase hex. The relay names kernels by it, and
/// a volunteer that fetched a kernel's source checks it before running anything.
pub fn content_id(source: &str, manifest: &KernelManifest) -> String {
    use sha2::{Digest as _, Sha256};
    let manifest = serde_json::to_vec(manifest).expect("a manifest always serialises");
    let mut hash = Sha256::new();
    hash.update(b"starling custom kernel v1\n");
    hash.update((source.len() as u64).to_le_bytes());
    hash.update(source.as_bytes());
    hash.update(&manifest);
    hash.finalize().iter().map(|b| format!("{b:02x}")).collect()
}

/// Whether `id` has the shape of a content address (so it is never a built-in's name).
pub fn is_content_id(id: &str) -> bool {
    id.len() == 64
        && id
            .bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
}

/// Longest length expression, in bytes.
pub const MAX_EXPR_BYTES: usize = 256;
/// Deepest nesting of parentheses and calls in a length expression.
const MAX_EXPR_DEPTH: usize = 16;

/// A parsed length expression: `+ - * /`, `min(a, b)`, `max(a, b)`, parentheses,
/// non-negative integer literals and parameter names, over `u64` with every step
/// checked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Expr {
    /// A literal.
    Literal(u64),
    /// A parameter, by name.
    Param(String),
    /// Two operands and what joins them.
    Binary(Box<Expr>, Op, Box<Expr>),
}

/// The binary operations of an [`Expr`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Op {
    /// `+`
    Add,
    /// `-` (below zero is an error)
    Sub,
    /// `*`
    Mul,
    /// `/` (integer division; by zero is an error)
    Div,
    /// `min(a, b)`
    Min,
    /// `max(a, b)`
    Max,
}

/// Why an expression does not parse or evaluate.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ExprError {
    /// Not an expression of this language.
    #[error("{0}")]
    Syntax(String),
    /// A name that is not a declared parameter.
    #[error("`{0}` is not a declared parameter")]
    UnknownParam(String),
    /// A step left `u64`'s range (or went below zero, or divided by zero).
    #[error("{0} overflows")]
    Overflow(String),
}

impl Expr {
    /// Parses `text`, refusing names not in `params`.
    pub fn parse(text: &str, params: &[ParamSpec]) -> Result<Self, ExprError> {
        if text.len() > MAX_EXPR_BYTES {
            return Err(ExprError::Syntax(format!(
                "longer than {MAX_EXPR_BYTES} bytes"
            )));
        }
        let mut parser = Parser {
            tokens: tokenize(text)?,
            at: 0,
            depth: 0,
        };
        let expr = parser.sum()?;
        if let Some(token) = parser.tokens.get(parser.at) {
            return Err(ExprError::Syntax(format!("unexpected {token}")));
        }
        expr.check_names(params)?;
        Ok(expr)
    }

    fn check_names(&self, params: &[ParamSpec]) -> Result<(), ExprError> {
        match self {
            Self::Literal(_) => Ok(()),
            Self::Param(name) if params.iter().any(|p| &p.name == name) => Ok(()),
            Self::Param(name) => Err(ExprError::UnknownParam(name.clone())),
            Self::Binary(a, _, b) => {
                a.check_names(params)?;
                b.check_names(params)
            }
        }
    }

    /// Its value for these parameter values (every name the parse accepted is in
    /// `values`, or the missing one is reported as unknown).
    pub fn eval(&self, values: &BTreeMap<String, u64>) -> Result<u64, ExprError> {
        match self {
            Self::Literal(v) => Ok(*v),
            Self::Param(name) => values
                .get(name)
                .copied()
                .ok_or_else(|| ExprError::UnknownParam(name.clone())),
            Self::Binary(a, op, b) => {
                let (a, b) = (a.eval(values)?, b.eval(values)?);
                let value = match op {
                    Op::Add => a.checked_add(b),
                    Op::Sub => a.checked_sub(b),
                    Op::Mul => a.checked_mul(b),
                    Op::Div => a.checked_div(b),
                    Op::Min => Some(a.min(b)),
                    Op::Max => Some(a.max(b)),
                };
                value.ok_or_else(|| ExprError::Overflow(format!("{a} {op} {b}")))
            }
        }
    }
}

impl fmt::Display for Op {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Add => "+",
            Self::Sub => "-",
            Self::Mul => "*",
            Self::Div => "/",
            Self::Min => "min",
            Self::Max => "max",
        })
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Token {
    Number(u64),
    Name(String),
    Punct(char),
}

impl fmt::Display for Token {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Number(n) => write!(f, "`{n}`"),
            Self::Name(name) => write!(f, "`{name}`"),
            Self::Punct(c) => write!(f, "`{c}`"),
        }
    }
}

fn tokenize(text: &str) -> Result<Vec<Token>, ExprError> {
    let mut tokens = Vec::new();
    let mut chars = text.char_indices().peekable();
    while let Some((start, c)) = chars.next() {
        if c.is_ascii_whitespace() {
            continue;
        }
        if c.is_ascii_digit() || c.is_ascii_alphabetic() || c == '_' {
            let mut end = start + c.len_utf8();
            while let Some(&(i, next)) = chars.peek() {
                if !(next.is_ascii_alphanumeric() || next == '_') {
                    break;
                }
                end = i + next.len_utf8();
                chars.next();
            }
            let word = &text[start..end];
            tokens.push(if c.is_ascii_digit() {
                Token::Number(word.parse().map_err(|_| {
                    ExprError::Syntax(format!("`{word}` is not an integer within u64"))
                })?)
            } else {
                Token::Name(word.to_owned())
            });
        } else if "+-*/(),".contains(c) {
            tokens.push(Token::Punct(c));
        } else {
            return Err(ExprError::Syntax(format!(
                "unexpected character {c:?} at byte {start}"
            )));
        }
    }
    Ok(tokens)
}

struct Parser {
    tokens: Vec<Token>,
    at: usize,
    depth: usize,
}

impl Parser {
    fn peek_punct(&self, c: char) -> bool {
        self.tokens.get(self.at) == Some(&Token::Punct(c))
    }

    fn expect(&mut self, c: char) -> Result<(), ExprError> {
        if self.peek_punct(c) {
            self.at += 1;
            Ok(())
        } else {
            Err(ExprError::Syntax(match self.tokens.get(self.at) {
                Some(token) => format!("expected `{c}`, found {token}"),
                None => format!("expected `{c}` at the end"),
            }))
        }
    }

    fn sum(&mut self) -> Result<Expr, ExprError> {
        let mut left = self.product()?;
        loop {
            let op = if self.peek_punct('+') {
                Op::Add
            } else if self.peek_punct('-') {
                Op::Sub
            } else {
                return Ok(left);
            };
            self.at += 1;
            left = Expr::Binary(Box::new(left), op, Box::new(self.product()?));
        }
    }

    fn product(&mut self) -> Result<Expr, ExprError> {
        let mut left = self.atom()?;
        loop {
            let op = if self.peek_punct('*') {
                Op::Mul
            } else if self.peek_punct('/') {
                Op::Div
            } else {
                return Ok(left);
            };
            self.at += 1;
            left = Expr::Binary(Box::new(left), op, Box::new(self.atom()?));
        }
    }

    fn atom(&mut self) -> Result<Expr, ExprError> {
        // Nesting is what could make a short expression cost deep recursion.
        self.depth += 1;
        if self.depth > MAX_EXPR_DEPTH {
            return Err(ExprError::Syntax(format!(
                "nested deeper than {MAX_EXPR_DEPTH}"
            )));
        }
        let token = self.tokens.get(self.at).cloned();
        self.at += 1;
        let atom = match token {
            Some(Token::Number(n)) => Expr::Literal(n),
            Some(Token::Punct('(')) => {
                let inner = self.sum()?;
                self.expect(')')?;
                inner
            }
            Some(Token::Name(name)) if self.peek_punct('(') => {
                let op = match name.as_str() {
                    "min" => Op::Min,
                    "max" => Op::Max,
                    _ => return Err(ExprError::Syntax(format!("no function `{name}`"))),
                };
                self.expect('(')?;
                let a = self.sum()?;
                self.expect(',')?;
                let b = self.sum()?;
                self.expect(')')?;
                Expr::Binary(Box::new(a), op, Box::new(b))
            }
            Some(Token::Name(name)) => Expr::Param(name),
            Some(token) => return Err(ExprError::Syntax(format!("unexpected {token}"))),
            None => return Err(ExprError::Syntax("ends too early".into())),
        };
        self.depth -= 1;
        Ok(atom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn params(names: &[&str]) -> Vec<ParamSpec> {
        names
            .iter()
            .map(|name| ParamSpec {
                name: (*name).into(),
                min: 0,
                max: u32::MAX,
            })
            .collect()
    }

    fn eval(text: &str, values: &[(&str, u64)]) -> Result<u64, ExprError> {
        let names: Vec<&str> = values.iter().map(|(n, _)| *n).collect();
        let values = values.iter().map(|(n, v)| ((*n).to_owned(), *v)).collect();
        Expr::parse(text, &params(&names))?.eval(&values)
    }

    #[test]
    fn precedence_and_functions_evaluate_as_written() {
        assert_eq!(eval("n", &[("n", 7)]), Ok(7));
        assert_eq!(eval("2 + 3 * n", &[("n", 4)]), Ok(14));
        assert_eq!(eval("(2 + 3) * n", &[("n", 4)]), Ok(20));
        assert_eq!(eval("n - 1 - 1", &[("n", 4)]), Ok(2));
        assert_eq!(eval("n / 2 * 2", &[("n", 5)]), Ok(4));
        assert_eq!(eval("max(w, h) * min(w, 3)", &[("w", 4), ("h", 9)]), Ok(27));
    }

    #[test]
    fn overflow_underflow_and_division_by_zero_are_errors() {
        let huge = u64::from(u32::MAX);
        assert!(matches!(
            eval("n * n * n", &[("n", huge)]),
            Err(ExprError::Overflow(_))
        ));
        assert!(matches!(
            eval("n - 5", &[("n", 4)]),
            Err(ExprError::Overflow(_))
        ));
        assert!(matches!(
            eval("4 / n", &[("n", 0)]),
            Err(ExprError::Overflow(_))
        ));
        assert!(matches!(
            eval("99999999999999999999", &[]),
            Err(ExprError::Syntax(_))
        ));
    }

    #[test]
    fn unknown_names_bad_syntax_and_deep_nesting_are_refused() {
        assert_eq!(
            Expr::parse("n * m", &params(&["n"])),
            Err(ExprError::UnknownParam("m".into()))
        );
        for bad in [
            "",
            "n +",
            "(n",
            "n)",
            "n ** 2",
            "pow(n, 2)",
            "n $ 2",
            "min(n)",
        ] {
            assert!(
                matches!(Expr::parse(bad, &params(&["n"])), Err(ExprError::Syntax(_))),
                "{bad:?}"
            );
        }
        let deep = format!("{}n{}", "(".repeat(40), ")".repeat(40));
        assert!(matches!(
            Expr::parse(&deep, &params(&["n"])),
            Err(ExprError::Syntax(_))
        ));
        assert!(matches!(
            Expr::parse(&"n+".repeat(200), &params(&["n"])),
            Err(ExprError::Syntax(_))
        ));
    }
}
