//! WSLL: weakly-supervised lesion localisation (texture + semantic attention) and MCSP pooling.
//!
//! ```text
//! texture  = act(BN(conv1×1(C14 → M, no bias)(feat14)))   → 2×2 average pool
//! semantic = act(BN(conv1×1(C7  → M, no bias)(feat7)))
//! AttMS    = semantic + pooled texture                        [B, M, h, w]
//! FM[b,m,n] = Σ_jk AttMS[b,m,jk] · feat7[b,n,jk] / (h·w)     bilinear attention pooling
//! out[b,n]  = bias + Σ_m w_m · FM[b,m,n]                      learned 32 → 1 weighting
//! ```
//! MCSP is linear in the maps, so the weighting is applied first:
//! `out[b,n] = bias + mean_jk( feat7[b,n,jk] · Σ_m w_m AttMS[b,m,jk] )` — a 1×1 conv over the maps,
//! a product and a global average pool. Same parameters and the same function as the reference's
//! einsum + Conv1d, without the `[B, M, D]` intermediate, and made only of ops the ONNX exporter
//! lowers (it has no transpose).
//!
//! The reference code uses ReLU for `act` (the paper writes sigmoid); both are available.

use burn::module::{Module, Param};
use burn::nn::conv::{Conv2d, Conv2dConfig};
use burn::nn::{BatchNorm, BatchNormConfig, Initializer};
use burn::prelude::*;
use burn::tensor::activation::{relu, sigmoid};
use burn::tensor::module::{adaptive_avg_pool2d, avg_pool2d, interpolate};
use burn::tensor::ops::{AvgPoolOptions, InterpolateMode, InterpolateOptions};

/// Activation of the attention adaptors: `"relu"` or `"sigmoid"` in configs. Models saved before
/// the names were lower-cased wrote `"Relu"`/`"Sigmoid"`, which still load.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum AttentionActivation {
    /// ReLU, as the released code (and MAG-SD) does: attention ≥ 0, unbounded.
    #[serde(alias = "Relu")]
    Relu,
    /// Sigmoid, as the paper's Eq. (1)–(2) write.
    #[serde(alias = "Sigmoid")]
    Sigmoid,
}

/// WSLL hyper-parameters.
#[derive(Config, Debug, PartialEq)]
pub struct WsllConfig {
    /// Channels of the (adapted) stride-16 features.
    pub texture_channels: usize,
    /// Channels of the (adapted) stride-32 features; also the output feature width.
    pub feature_dim: usize,
    /// Attention maps `M`.
    #[config(default = 32)]
    pub attention_maps: usize,
    /// Adaptor activation.
    #[config(default = "AttentionActivation::Relu")]
    pub activation: AttentionActivation,
    /// BatchNorm ε of the adaptors.
    #[config(default = 1e-3)]
    pub bn_eps: f64,
}

impl WsllConfig {
    /// Builds the module (adaptor convs: trunc-normal(0.02) like the reference; BN γ = 1, β = 0).
    pub fn init(&self, device: &Device) -> Wsll {
        let adaptor = |c: usize| {
            Conv2dConfig::new([c, self.attention_maps], [1, 1])
                .with_bias(false)
                .with_initializer(Initializer::Normal { mean: 0.0, std: 0.02 })
                .init(device)
        };
        let bn = || BatchNormConfig::new(self.attention_maps).with_epsilon(self.bn_eps).init(device);
        // PyTorch's Conv1d default init for the 32 → 1 weighting: U(±1/√M) for weight and bias.
        let bound = 1.0 / (self.attention_maps as f64).sqrt();
        let uniform = Initializer::Uniform { min: -bound, max: bound };
        Wsll {
            texture: adaptor(self.texture_channels),
            texture_bn: bn(),
            semantic: adaptor(self.feature_dim),
            semantic_bn: bn(),
            map_weights: Conv2dConfig::new([self.attention_maps, 1], [1, 1])
                .with_bias(false)
                .with_initializer(uniform.clone())
                .init(device),
            map_bias: uniform.init([1], device),
            activation: self.activation == AttentionActivation::Sigmoid,
        }
    }
}

/// Attention maps and the pooled feature.
#[derive(Module, Debug)]
pub struct Wsll {
    texture: Conv2d,
    texture_bn: BatchNorm,
    semantic: Conv2d,
    semantic_bn: BatchNorm,
    /// The learned 32 → 1 weighting over attention maps (its weights).
    map_weights: Conv2d,
    /// … and its bias.
    map_bias: Param<Tensor<1>>,
    /// `true` = sigmoid, `false` = ReLU.
    activation: bool,
}

/// WSLL output.
#[derive(Debug, Clone)]
pub struct Localised {
    /// Pooled feature `[B, D]`.
    pub feature: Tensor<2>,
    /// Multi-scale attention AttMS `[B, M, h, w]`.
    pub attention: Tensor<4>,
    /// The heatmap at the texture branch's resolution, `[B, 1, 2h, 2w]`: see [`fine_heatmap`].
    pub heatmap: Tensor<4>,
}

impl Wsll {
    fn act(&self, x: Tensor<4>) -> Tensor<4> {
        if self.activation { sigmoid(x) } else { relu(x) }
    }

    /// `feat14`: `[B, C14, 2h, 2w]`, `feat7`: `[B, D, h, w]` (both after the adapter convs).
    pub fn forward(&self, feat14: Tensor<4>, feat7: Tensor<4>) -> Localised {
        let texture_fine = self.act(self.texture_bn.forward(self.texture.forward(feat14)));
        let texture = avg_pool2d(texture_fine.clone(), AvgPoolOptions::new([2, 2]).with_stride([2, 2]));
        let semantic = self.act(self.semantic_bn.forward(self.semantic.forward(feat7.clone())));
        let heatmap = fine_heatmap(texture_fine, semantic.clone());
        let attention = semantic + texture;
        let [b, d, _, _] = feat7.dims();
        let weighted = self.map_weights.forward(attention.clone()); // [B, 1, h, w] = Σ_m w_m AttMS_m
        let pooled = adaptive_avg_pool2d(feat7 * weighted, [1, 1]).reshape([b, d]);
        let feature = pooled + self.map_bias.val().reshape([1, 1]);
        Localised { feature, attention, heatmap }
    }
}

/// The heatmap at stride 16: `mean_m(texture_m) + nearest_2×(mean_m(semantic_m))`, `[B, 1, 2h, 2w]`.
///
/// AttMS averages the texture maps over 2 × 2 blocks before adding the semantic maps, so each
/// stride-32 cell of AttS is exactly the mean of a 2 × 2 block of this map
/// (`shared::heatmap::block_mean`): the same attention, with the texture branch's detail kept.
/// Trained only through AttS, the stride-32 map settles on a few cells near the image's usual lesion
/// site (on BUSI val its peak scores no better than pointing at one fixed pixel); the texture
/// branch's stride-16 detail is what follows the lesion (docs/results.md, *The heatmap at stride 16*).
pub fn fine_heatmap(texture_fine: Tensor<4>, semantic: Tensor<4>) -> Tensor<4> {
    let [_, _, h, w] = texture_fine.dims();
    let semantic = interpolate(
        attention_mean(semantic),
        InterpolateOptions::new(InterpolateMode::Nearest).with_output_size([h, w]),
    );
    attention_mean(texture_fine) + semantic
}

/// AttS: the channel mean of the attention maps, `[B, 1, h, w]` — the heatmap and the input of every
/// zoom box. Written as a sum divided by `M` so the ONNX exporter lowers it.
pub fn attention_mean(attention: Tensor<4>) -> Tensor<4> {
    let [_, m, _, _] = attention.dims();
    attention.sum_dim(1) / m as f64
}
