//! A compact BERT encoder for inference on the CPU, faster than candle-transformers' `BertModel`
//! for sentence embeddings on this kind of machine (figures in the README). candle loads the
//! weights; the forward pass runs on plain `f32` buffers:
//!
//! - every product is one call of the `gemm` crate (the kernels candle itself uses), reading Q,
//!   K and V in place from the fused projection through strides and writing each head's context
//!   straight into its columns: no permutes, no copies;
//! - biases and residuals are the destination's starting value (`dst = dst + lhs·rhs`), so they
//!   cost no pass of their own;
//! - sequences are packed one after another, never padded: the dense layers run over every
//!   real token of the batch as one matrix, attention runs per sequence at its own length, so
//!   no work is spent on padding whatever the mix of lengths (sentence-transformers pads each
//!   batch to its longest text);
//! - scale and softmax are one pass per row, with an exponential the compiler vectorises;
//!   layer norm and the tanh approximation of GELU work in place;
//! - nothing runs on candle's global thread pool: a batch is already split across cores by the
//!   caller (`LocalEmbedder`), and candle 0.11's element-wise operations would send work from
//!   both cores to one shared pool and spin waiting for it (a sixth of the time under `perf`).
//!
//! The vectors stay equal to sentence-transformers' to a cosine of 0.9999 or better (see the
//! equivalence test).

use super::EmbedError;
use candle_core::Result;
use candle_nn::VarBuilder;
use candle_transformers::models::bert::Config;
use gemm::Parallelism;

/// Reads a tensor as a flat vector.
fn values(vars: &VarBuilder, shape: impl Into<candle_core::Shape>, name: &str) -> Result<Vec<f32>> {
    vars.get(shape, name)?.flatten_all()?.to_vec1::<f32>()
}

/// A row-major matrix view: `rows × cols` at `row_stride`, `col_stride` elements.
#[derive(Clone, Copy)]
struct View {
    ptr: *const f32,
    rows: usize,
    cols: usize,
    row_stride: usize,
    col_stride: usize,
}

impl View {
    fn of(data: &[f32], rows: usize, cols: usize) -> Self {
        assert!(data.len() >= rows * cols);
        Self {
            ptr: data.as_ptr(),
            rows,
            cols,
            row_stride: cols,
            col_stride: 1,
        }
    }
}

/// `dst (rows × cols at dst_stride) = [dst +] lhs · rhs`.
///
/// # Safety
/// The views must lie inside live buffers, `dst` must have room for `lhs.rows` rows of
/// `rhs.cols` values at `dst_stride` and must not overlap the inputs.
unsafe fn matmul(dst: *mut f32, dst_stride: usize, accumulate: bool, lhs: View, rhs: View, parallelism: Parallelism) {
    debug_assert_eq!(lhs.cols, rhs.rows);
    gemm::gemm(
        lhs.rows,
        rhs.cols,
        lhs.cols,
        dst,
        1,
        dst_stride as isize,
        accumulate,
        lhs.ptr,
        lhs.col_stride as isize,
        lhs.row_stride as isize,
        rhs.ptr,
        rhs.col_stride as isize,
        rhs.row_stride as isize,
        1.0,
        1.0,
        false,
        false,
        false,
        parallelism,
    );
}

/// A weight matrix stored as `W^T` (in × out, row-major) with its bias.
struct Dense {
    weight_t: Vec<f32>,
    bias: Vec<f32>,
    inputs: usize,
    outputs: usize,
}

impl Dense {
    fn load(vars: &VarBuilder, name: &str, inputs: usize, outputs: usize) -> Result<Self> {
        let weight = vars.get((outputs, inputs), &format!("{name}.weight"))?;
        Ok(Self {
            weight_t: weight.t()?.contiguous()?.flatten_all()?.to_vec1::<f32>()?,
            bias: values(vars, outputs, &format!("{name}.bias"))?,
            inputs,
            outputs,
        })
    }

    /// Q, K and V projections as one `in × 3·out` product.
    fn load_fused(vars: &VarBuilder, names: [&str; 3], size: usize) -> Result<Self> {
        let parts = names
            .iter()
            .map(|name| Self::load(vars, name, size, size))
            .collect::<Result<Vec<_>>>()?;
        let mut weight_t = Vec::with_capacity(size * 3 * size);
        for row in 0..size {
            for part in &parts {
                weight_t.extend_from_slice(&part.weight_t[row * size..(row + 1) * size]);
            }
        }
        Ok(Self {
            weight_t,
            bias: parts.iter().flat_map(|p| p.bias.iter().copied()).collect(),
            inputs: size,
            outputs: 3 * size,
        })
    }

    /// `x · W^T + bias (+ residual)` for `x` of `rows × inputs`.
    fn forward(&self, x: &[f32], residual: Option<&[f32]>, parallelism: Parallelism) -> Vec<f32> {
        let rows = x.len() / self.inputs;
        let mut out = Vec::with_capacity(rows * self.outputs);
        match residual {
            Some(residual) => {
                for row in residual.chunks_exact(self.outputs) {
                    out.extend(row.iter().zip(&self.bias).map(|(r, b)| r + b));
                }
            }
            None => {
                for _ in 0..rows {
                    out.extend_from_slice(&self.bias);
                }
            }
        }
        // SAFETY: `out` holds rows × outputs values; the inputs are whole buffers of the
        // sizes the views give.
        unsafe {
            matmul(
                out.as_mut_ptr(),
                self.outputs,
                true,
                View::of(x, rows, self.inputs),
                View::of(&self.weight_t, self.inputs, self.outputs),
                parallelism,
            );
        }
        out
    }
}

struct Norm {
    weight: Vec<f32>,
    bias: Vec<f32>,
    eps: f32,
}

impl Norm {
    fn load(vars: &VarBuilder, name: &str, size: usize, eps: f64) -> Result<Self> {
        // Old checkpoints call them gamma and beta.
        let get = |new: &str, old: &str| {
            values(vars, size, &format!("{name}.{new}")).or_else(|_| values(vars, size, &format!("{name}.{old}")))
        };
        Ok(Self {
            weight: get("weight", "gamma")?,
            bias: get("bias", "beta")?,
            eps: eps as f32,
        })
    }

    /// Normalises every row of `x` in place.
    fn apply(&self, x: &mut [f32]) {
        let size = self.weight.len();
        for row in x.chunks_exact_mut(size) {
            let mean = row.iter().sum::<f32>() / size as f32;
            let variance = row.iter().map(|v| (v - mean) * (v - mean)).sum::<f32>() / size as f32;
            let scale = 1.0 / (variance + self.eps).sqrt();
            for ((v, w), b) in row.iter_mut().zip(&self.weight).zip(&self.bias) {
                *v = (*v - mean) * scale * w + b;
            }
        }
    }
}

struct Layer {
    qkv: Dense,
    attention_out: Dense,
    attention_norm: Norm,
    intermediate: Dense,
    output: Dense,
    output_norm: Norm,
}

/// The encoder of a BERT-family model.
pub struct BertEncoder {
    word_embeddings: Vec<f32>,
    position_embeddings: Vec<f32>,
    token_type_embeddings: Vec<f32>,
    max_positions: usize,
    embedding_norm: Norm,
    layers: Vec<Layer>,
    heads: usize,
    hidden: usize,
}

/// Sequences packed one after another, without padding: token ids and token types of every
/// sequence in turn, and each sequence's length.
pub struct Batch<'a> {
    pub ids: &'a [u32],
    pub types: &'a [u32],
    pub lengths: &'a [usize],
}

impl BertEncoder {
    /// Loads the weights named as in Hugging Face's `BertModel` (with or without a `bert.`
    /// prefix).
    pub fn load(vars: VarBuilder, config: &Config) -> Result<Self> {
        let vars = if vars.contains_tensor("bert.embeddings.word_embeddings.weight") {
            vars.pp("bert")
        } else {
            vars
        };
        let (hidden, eps) = (config.hidden_size, config.layer_norm_eps);
        let embeddings = vars.pp("embeddings");
        let layers = (0..config.num_hidden_layers)
            .map(|i| {
                let layer = vars.pp(format!("encoder.layer.{i}"));
                Ok(Layer {
                    qkv: Dense::load_fused(
                        &layer,
                        ["attention.self.query", "attention.self.key", "attention.self.value"],
                        hidden,
                    )?,
                    attention_out: Dense::load(&layer, "attention.output.dense", hidden, hidden)?,
                    attention_norm: Norm::load(&layer, "attention.output.LayerNorm", hidden, eps)?,
                    intermediate: Dense::load(&layer, "intermediate.dense", hidden, config.intermediate_size)?,
                    output: Dense::load(&layer, "output.dense", config.intermediate_size, hidden)?,
                    output_norm: Norm::load(&layer, "output.LayerNorm", hidden, eps)?,
                })
            })
            .collect::<Result<Vec<_>>>()?;
        Ok(Self {
            word_embeddings: values(&embeddings, (config.vocab_size, hidden), "word_embeddings.weight")?,
            position_embeddings: values(
                &embeddings,
                (config.max_position_embeddings, hidden),
                "position_embeddings.weight",
            )?,
            token_type_embeddings: values(
                &embeddings,
                (config.type_vocab_size, hidden),
                "token_type_embeddings.weight",
            )?,
            max_positions: config.max_position_embeddings,
            embedding_norm: Norm::load(&embeddings, "LayerNorm", hidden, eps)?,
            layers,
            heads: config.num_attention_heads,
            hidden,
        })
    }

    /// Row `index` of an embedding table.
    fn table_row<'t>(&self, table: &'t [f32], index: usize, what: &str) -> std::result::Result<&'t [f32], EmbedError> {
        let hidden = self.hidden;
        table
            .get(index * hidden..(index + 1) * hidden)
            .ok_or_else(|| EmbedError::Model(format!("{what} {index} is outside the model's table")))
    }

    /// Token vectors of the packed sequences (`total tokens × hidden`, row-major, in the
    /// order of `input`). `parallel`: split each matrix product across rayon's threads (for a
    /// caller that does not split the batch itself).
    pub fn forward(&self, input: &Batch, parallel: bool) -> std::result::Result<Vec<f32>, EmbedError> {
        let hidden = self.hidden;
        let total: usize = input.lengths.iter().sum();
        if input.ids.len() != total || input.types.len() != total {
            return Err(EmbedError::Model(format!(
                "{} token ids and {} token types for sequences of {total} tokens",
                input.ids.len(),
                input.types.len()
            )));
        }
        if let Some(longest) = input.lengths.iter().copied().filter(|&l| l > self.max_positions).max() {
            return Err(EmbedError::Model(format!(
                "{longest} tokens; the model takes at most {}",
                self.max_positions
            )));
        }
        let parallelism = if parallel {
            Parallelism::Rayon(rayon::current_num_threads())
        } else {
            Parallelism::None
        };
        let positions = input.lengths.iter().flat_map(|&length| 0..length);
        let mut x = Vec::with_capacity(total * hidden);
        for ((&id, &kind), position) in input.ids.iter().zip(input.types).zip(positions) {
            let word = self.table_row(&self.word_embeddings, id as usize, "token id")?;
            let kind = self.table_row(&self.token_type_embeddings, kind as usize, "token type")?;
            let place = self.table_row(&self.position_embeddings, position, "position")?;
            x.extend(word.iter().zip(kind).zip(place).map(|((w, k), p)| w + k + p));
        }
        self.embedding_norm.apply(&mut x);
        for layer in &self.layers {
            x = self.layer(layer, &x, input.lengths, parallelism);
        }
        Ok(x)
    }

    fn layer(&self, layer: &Layer, x: &[f32], lengths: &[usize], parallelism: Parallelism) -> Vec<f32> {
        let hidden = self.hidden;
        let head_size = hidden / self.heads;
        let scale = 1.0 / (head_size as f32).sqrt();
        // total × 3·hidden: each row is [q | k | v], each of them `heads` blocks of head_size.
        let qkv = layer.qkv.forward(x, None, parallelism);
        let mut context = vec![0f32; x.len()];
        let longest = lengths.iter().copied().max().unwrap_or(0);
        let mut scores = vec![0f32; longest * longest];
        let mut first = 0;
        for &tokens in lengths {
            let rows = &qkv[first * 3 * hidden..];
            let scores = &mut scores[..tokens * tokens];
            for h in 0..self.heads {
                let column = |part: usize| rows[part * hidden + h * head_size..].as_ptr();
                let q = View {
                    ptr: column(0),
                    rows: tokens,
                    cols: head_size,
                    row_stride: 3 * hidden,
                    col_stride: 1,
                };
                let k_t = View {
                    ptr: column(1),
                    rows: head_size,
                    cols: tokens,
                    row_stride: 1,
                    col_stride: 3 * hidden,
                };
                let v = View {
                    ptr: column(2),
                    rows: tokens,
                    cols: head_size,
                    row_stride: 3 * hidden,
                    col_stride: 1,
                };
                // SAFETY: q, k_t and v lie inside `qkv` (tokens rows of 3·hidden from this
                // sequence's first row); `scores` holds tokens × tokens values and the context
                // block is this sequence's rows at this head's columns.
                unsafe {
                    matmul(scores.as_mut_ptr(), tokens, false, q, k_t, Parallelism::None);
                }
                for row in scores.chunks_exact_mut(tokens) {
                    softmax(row, scale);
                }
                unsafe {
                    let destination = context[first * hidden + h * head_size..].as_mut_ptr();
                    matmul(
                        destination,
                        hidden,
                        false,
                        View::of(scores, tokens, tokens),
                        v,
                        Parallelism::None,
                    );
                }
            }
            first += tokens;
        }
        let mut attended = layer.attention_out.forward(&context, Some(x), parallelism);
        layer.attention_norm.apply(&mut attended);
        let mut intermediate = layer.intermediate.forward(&attended, None, parallelism);
        gelu_in_place(&mut intermediate);
        let mut output = layer.output.forward(&intermediate, Some(&attended), parallelism);
        layer.output_norm.apply(&mut output);
        output
    }
}

/// `softmax(scale · row)` in place. Every loop vectorises: the reductions keep eight partial
/// results (a single running sum or maximum would have to add in order, one value at a time).
fn softmax(row: &mut [f32], scale: f32) {
    let max = reduce(row, f32::NEG_INFINITY, |a, b| if b > a { b } else { a });
    for value in row.iter_mut() {
        *value = exp((*value - max) * scale);
    }
    let inverse = 1.0 / reduce(row, 0.0, |a, b| a + b);
    for value in row.iter_mut() {
        *value *= inverse;
    }
}

/// Folds `values` with `combine` over eight interleaved partial results, then folds those.
#[inline(always)]
fn reduce(values: &[f32], start: f32, combine: impl Fn(f32, f32) -> f32) -> f32 {
    let mut partial = [start; 8];
    let mut chunks = values.chunks_exact(8);
    for chunk in &mut chunks {
        for (p, v) in partial.iter_mut().zip(chunk) {
            *p = combine(*p, *v);
        }
    }
    let mut result = chunks.remainder().iter().fold(start, |a, v| combine(a, *v));
    for p in partial {
        result = combine(result, p);
    }
    result
}

/// `e^x` for `x ≤ 0` (a softmax's shifted scores), to about 2 float ulps: `2^n · e^r` with
/// `n = round(x / ln 2)` and a degree-6 polynomial for `e^r` on [-ln2/2, ln2/2]. Branch-free
/// and without float-to-integer conversion, so loops over it vectorise (libm's `expf` took 7%
/// of the forward pass under `perf`).
#[inline(always)]
fn exp(x: f32) -> f32 {
    const LOG2_E: f32 = std::f32::consts::LOG2_E;
    // ln 2 in two parts, so that x - n·ln2 stays exact.
    const LN2_HIGH: f32 = 0.693_145_75;
    const LN2_LOW: f32 = 1.428_606_8e-6;
    // Adding 1.5 · 2^23 rounds to an integer n, which then sits in the low bits of the sum:
    // its bits are those of the rounder plus n.
    const ROUNDER: f32 = 12_582_912.0;
    const ROUNDER_BITS: u32 = 0x4B40_0000;
    let x = x.max(-87.0);
    let shifted = x * LOG2_E + ROUNDER;
    let n = shifted - ROUNDER;
    let r = x - n * LN2_HIGH - n * LN2_LOW;
    let mut p = 1.0 / 720.0;
    for c in [1.0 / 120.0, 1.0 / 24.0, 1.0 / 6.0, 0.5, 1.0, 1.0] {
        p = p * r + c;
    }
    // 2^n as a float: the biased exponent n + 127 in the exponent bits.
    let two_to_n = f32::from_bits(shifted.to_bits().wrapping_sub(ROUNDER_BITS).wrapping_add(127) << 23);
    p * two_to_n
}

/// GELU, tanh approximation, in place: `0.5·x·(1 + tanh(√(2/π)·(x + 0.044715·x³)))`.
fn gelu_in_place(values: &mut [f32]) {
    for value in values {
        let v = *value;
        *value = 0.5 * v * (1.0 + tanh(0.797_884_6 * (v + 0.044_715 * v * v * v)));
    }
}

/// tanh as a ratio of odd and even polynomials on [-7.9, 7.9] (beyond that it is ±1 in f32),
/// accurate to a few float ulps; branch-free, so loops over it vectorise. Coefficients as in
/// Eigen's `generic_fast_tanh_float`.
#[inline(always)]
fn tanh(x: f32) -> f32 {
    const CLAMP: f32 = 7.905_311;
    const ALPHA: [f32; 7] = [
        -2.760_768_5e-16,
        2.000_188e-13,
        -8.604_672e-11,
        5.122_297e-8,
        1.485_722_4e-5,
        6.372_619_3e-4,
        4.893_524_6e-3,
    ];
    const BETA: [f32; 4] = [1.198_258_4e-6, 1.185_347e-4, 2.268_434_6e-3, 4.893_525e-3];
    // Plain multiply-adds, not `mul_add`: without FMA in the build's target features that
    // becomes a slow software call.
    let x = x.clamp(-CLAMP, CLAMP);
    let x2 = x * x;
    let mut p = ALPHA[0];
    for alpha in &ALPHA[1..] {
        p = p * x2 + alpha;
    }
    let mut q = BETA[0];
    for beta in &BETA[1..] {
        q = q * x2 + beta;
    }
    x * p / q
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_polynomial_tanh_matches_the_library_one() {
        let mut worst = 0f32;
        for i in -20_000..=20_000 {
            let x = i as f32 / 1_000.0;
            worst = worst.max((tanh(x) - x.tanh()).abs());
        }
        assert!(worst < 2e-6, "largest difference {worst}");
    }

    #[test]
    fn gelu_matches_candles_tanh_formula() {
        let values: Vec<f32> = (-600..600).map(|i| i as f32 / 100.0).collect();
        let tensor = candle_core::Tensor::from_vec(values.clone(), (3, 400), &candle_core::Device::Cpu).unwrap();
        let expected = tensor.gelu().unwrap().flatten_all().unwrap().to_vec1::<f32>().unwrap();
        let mut actual = values.clone();
        gelu_in_place(&mut actual);
        for ((x, a), e) in values.iter().zip(&actual).zip(&expected) {
            assert!((a - e).abs() < 1e-5, "gelu({x}): {a} vs {e}");
        }
    }

    #[test]
    fn the_polynomial_exp_matches_the_library_one_where_a_softmax_uses_it() {
        for i in 0..=100_000 {
            let x = -(i as f32) / 1_000.0;
            let (ours, library) = (exp(x), x.exp());
            assert!(
                (ours - library).abs() <= 4e-7 * library + 1e-30,
                "exp({x}): {ours} vs {library}"
            );
        }
        assert_eq!(exp(-1e30), exp(-87.0));
    }

    #[test]
    fn softmax_scales_and_sums_to_one() {
        // Longer than one group of eight partial results, with a remainder.
        let mut row: Vec<f32> = (0..19).map(|i| (i as f32 * 0.7).sin() * 6.0).collect();
        let expected: Vec<f32> = row.iter().map(|v| (v * 0.5).exp()).collect();
        let total: f32 = expected.iter().sum();
        softmax(&mut row, 0.5);
        for (a, e) in row.iter().zip(&expected) {
            assert!((a - e / total).abs() < 1e-6, "{row:?}");
        }
        assert!((row.iter().sum::<f32>() - 1.0).abs() < 1e-6);
    }
}
