//! A compact BERT encoder for inference on the CPU, faster than candle-transformers' `BertModel`
//! for sentence embeddings on this kind of machine (figures in the README):
//!
//! - one matrix product for Q, K and V together instead of three;
//! - weights stored transposed and contiguous, inputs flattened to two dimensions, so every
//!   product is a plain GEMM;
//! - candle's fused kernels for softmax over the last dimension and for layer norm, instead of
//!   chains of element-wise tensor operations;
//! - the tanh approximation of GELU instead of `erf`, with tanh itself computed by a rational
//!   polynomial that the compiler vectorises (libm's `tanhf` took a quarter of the forward pass
//!   under `perf`), on both cores. The vectors stay equal to sentence-transformers' to a cosine
//!   of 0.9999 or better (see the equivalence test).

use candle_core::{DType, Module, Result, Tensor};
use candle_nn::VarBuilder;
use candle_transformers::models::bert::Config;
use rayon::prelude::*;

/// A weight matrix stored as `W^T` (in × out, contiguous) with its bias.
struct Dense {
    weight_t: Tensor,
    bias: Tensor,
}

impl Dense {
    fn load(vars: &VarBuilder, name: &str, inputs: usize, outputs: usize) -> Result<Self> {
        let weight = vars.get((outputs, inputs), &format!("{name}.weight"))?;
        let bias = vars.get(outputs, &format!("{name}.bias"))?;
        Ok(Self {
            weight_t: weight.t()?.contiguous()?,
            bias,
        })
    }

    /// Q, K and V projections as one `in × 3·out` product.
    fn load_fused(vars: &VarBuilder, names: [&str; 3], size: usize) -> Result<Self> {
        let parts = names
            .iter()
            .map(|name| Self::load(vars, name, size, size))
            .collect::<Result<Vec<_>>>()?;
        let weights: Vec<&Tensor> = parts.iter().map(|p| &p.weight_t).collect();
        let biases: Vec<&Tensor> = parts.iter().map(|p| &p.bias).collect();
        Ok(Self {
            weight_t: Tensor::cat(&weights, 1)?.contiguous()?,
            bias: Tensor::cat(&biases, 0)?,
        })
    }

    /// `x` is `rows × in`.
    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        x.matmul(&self.weight_t)?.broadcast_add(&self.bias)
    }
}

struct Norm {
    weight: Tensor,
    bias: Tensor,
    eps: f32,
}

impl Norm {
    fn load(vars: &VarBuilder, name: &str, size: usize, eps: f64) -> Result<Self> {
        // Old checkpoints call them gamma and beta.
        let get = |new: &str, old: &str| {
            vars.get(size, &format!("{name}.{new}"))
                .or_else(|_| vars.get(size, &format!("{name}.{old}")))
        };
        Ok(Self {
            weight: get("weight", "gamma")?,
            bias: get("bias", "beta")?,
            eps: eps as f32,
        })
    }

    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        candle_nn::ops::layer_norm(x, &self.weight, &self.bias, self.eps)
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
    word_embeddings: candle_nn::Embedding,
    position_embeddings: Tensor,
    token_type_embeddings: candle_nn::Embedding,
    embedding_norm: Norm,
    layers: Vec<Layer>,
    heads: usize,
    hidden: usize,
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
        let word_embeddings = candle_nn::embedding(config.vocab_size, hidden, embeddings.pp("word_embeddings"))?;
        let position_embeddings =
            embeddings.get((config.max_position_embeddings, hidden), "position_embeddings.weight")?;
        let token_type_embeddings =
            candle_nn::embedding(config.type_vocab_size, hidden, embeddings.pp("token_type_embeddings"))?;
        let embedding_norm = Norm::load(&embeddings, "LayerNorm", hidden, eps)?;
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
            word_embeddings,
            position_embeddings,
            token_type_embeddings,
            embedding_norm,
            layers,
            heads: config.num_attention_heads,
            hidden,
        })
    }

    /// Token vectors (`batch × tokens × hidden`) for `ids`, `types` and `mask` (`batch × tokens`).
    pub fn forward(&self, ids: &Tensor, types: &Tensor, mask: &Tensor) -> Result<Tensor> {
        let (batch, tokens) = ids.dims2()?;
        let positions = self.position_embeddings.narrow(0, 0, tokens)?;
        let embedded = self
            .word_embeddings
            .forward(ids)?
            .add(&self.token_type_embeddings.forward(types)?)?
            .broadcast_add(&positions)?;
        let mut x = self
            .embedding_norm
            .forward(&embedded)?
            .reshape((batch * tokens, self.hidden))?;
        // Padding gets a large negative score before the softmax: batch × 1 × 1 × tokens.
        let mask_bias = ((mask.to_dtype(DType::F32)? - 1.0)? * 1e9)?.reshape((batch, 1, 1, tokens))?;
        for layer in &self.layers {
            x = self.layer(layer, &x, &mask_bias, batch, tokens)?;
        }
        x.reshape((batch, tokens, self.hidden))
    }

    fn layer(&self, layer: &Layer, x: &Tensor, mask_bias: &Tensor, batch: usize, tokens: usize) -> Result<Tensor> {
        let head_size = self.hidden / self.heads;
        // rows × 3·hidden → 3 × batch × heads × tokens × head_size
        let qkv = layer
            .qkv
            .forward(x)?
            .reshape((batch, tokens, 3, self.heads, head_size))?
            .permute((2, 0, 3, 1, 4))?
            .contiguous()?;
        let (q, k, v) = (qkv.get(0)?, qkv.get(1)?, qkv.get(2)?);
        let scale = 1.0 / (head_size as f64).sqrt();
        let scores = (q.matmul(&k.t()?)? * scale)?.broadcast_add(mask_bias)?;
        let weights = candle_nn::ops::softmax_last_dim(&scores)?;
        let context = weights
            .matmul(&v)?
            .transpose(1, 2)?
            .reshape((batch * tokens, self.hidden))?;
        let attended = layer
            .attention_norm
            .forward(&(layer.attention_out.forward(&context)? + x)?)?;
        let intermediate = fast_gelu(&layer.intermediate.forward(&attended)?)?;
        layer
            .output_norm
            .forward(&(layer.output.forward(&intermediate)? + &attended)?)
    }
}

/// Values per parallel task of [`fast_gelu`]: large enough that scheduling is noise.
const GELU_CHUNK: usize = 16 * 1024;

/// GELU, tanh approximation: `0.5·x·(1 + tanh(√(2/π)·(x + 0.044715·x³)))`.
fn fast_gelu(x: &Tensor) -> Result<Tensor> {
    let shape = x.shape().clone();
    let mut values = x.flatten_all()?.to_vec1::<f32>()?;
    values.par_chunks_mut(GELU_CHUNK).for_each(|chunk| {
        for value in chunk {
            let v = *value;
            *value = 0.5 * v * (1.0 + tanh(0.797_884_6 * (v + 0.044_715 * v * v * v)));
        }
    });
    Tensor::from_vec(values, shape, x.device())
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
    fn fast_gelu_matches_the_tanh_formula() {
        let values: Vec<f32> = (-600..600).map(|i| i as f32 / 100.0).collect();
        let tensor = Tensor::from_vec(values.clone(), (3, 400), &candle_core::Device::Cpu).unwrap();
        let expected = tensor.gelu().unwrap().flatten_all().unwrap().to_vec1::<f32>().unwrap();
        let actual = fast_gelu(&tensor)
            .unwrap()
            .flatten_all()
            .unwrap()
            .to_vec1::<f32>()
            .unwrap();
        for ((x, a), e) in values.iter().zip(&actual).zip(&expected) {
            assert!((a - e).abs() < 1e-5, "gelu({x}): {a} vs {e}");
        }
    }
}
