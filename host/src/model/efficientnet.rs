//! EfficientNet (TF variant, as timm's `tf_efficientnet_b*`, and EfficientNet-Lite): the multi-scale
//! feature extractor.
//!
//! TF "SAME" padding (asymmetric for stride 2), BatchNorm ε = 1e-3, SiLU, squeeze-excitation from
//! ¼ of the block's input channels, optional stochastic depth. The Lite variants (`lite0()` …
//! `lite2()`) drop squeeze-excitation, use ReLU6 and keep the stem and the first and last stages
//! unscaled, as Google's `efficientnet_lite_builder` does: friendlier to int8 and to tract.
//! The network stops before the head conv and returns two taps: the last stride-16 block output (`feat14`, 136 channels for b3 at 224)
//! and the last block output (`feat7`, 384 channels).

use burn::module::Module;
use burn::nn::conv::{Conv2d, Conv2dConfig};
use burn::nn::{BatchNorm, BatchNormConfig, PaddingConfig2d};
use burn::prelude::*;
use burn::tensor::Distribution;
use burn::tensor::activation::sigmoid;

use super::activation::{relu6, silu};
use burn::tensor::module::adaptive_avg_pool2d;

/// The activation inside the blocks and after the stem.
#[derive(Config, Debug, PartialEq, Eq, Copy)]
pub enum BlockActivation {
    /// SiLU (swish), EfficientNet-B*.
    Silu,
    /// ReLU6, EfficientNet-Lite.
    Relu6,
}

/// Applies the block activation; modules store it as `relu6: bool` (a module field must be a
/// module or a primitive).
fn activate(is_relu6: bool, x: Tensor<4>) -> Tensor<4> {
    if is_relu6 { relu6(x) } else { silu(x) }
}

/// One stage of the base (B0) network, before width/depth scaling.
#[derive(Config, Debug, PartialEq)]
pub struct StageConfig {
    /// Expansion ratio of the inverted bottleneck (1 = depthwise-separable block).
    pub expand: usize,
    /// Output channels (base).
    pub channels: usize,
    /// Blocks (base).
    pub repeats: usize,
    /// Stride of the first block.
    pub stride: usize,
    /// Depthwise kernel size.
    pub kernel: usize,
}

/// EfficientNet hyper-parameters. `b0()` … `b3()` give the standard family; `tiny()` a small
/// network for tests and CPU training.
#[derive(Config, Debug, PartialEq)]
pub struct EfficientNetConfig {
    /// Channel multiplier (b0 1.0, b1 1.0, b2 1.1, b3 1.2).
    pub width: f64,
    /// Depth multiplier (b0 1.0, b1 1.1, b2 1.2, b3 1.4).
    pub depth: f64,
    /// Base stages (B0's seven by default).
    #[config(default = "EfficientNetConfig::base_stages()")]
    pub stages: Vec<StageConfig>,
    /// Stem channels (base).
    #[config(default = 32)]
    pub stem_channels: usize,
    /// Squeeze-excitation width as a fraction of the block's input channels; 0 = no SE (Lite).
    #[config(default = 0.25)]
    pub se_ratio: f64,
    /// Activation of the stem and the blocks.
    #[config(default = "BlockActivation::Silu")]
    pub activation: BlockActivation,
    /// Keep the stem width and the first and last stages' repeats unscaled (Lite).
    #[config(default = false)]
    pub fixed_stem_and_ends: bool,
    /// BatchNorm ε (TF: 1e-3).
    #[config(default = 1e-3)]
    pub bn_eps: f64,
    /// BatchNorm momentum (PyTorch convention: weight of the new batch statistics).
    #[config(default = 0.1)]
    pub bn_momentum: f64,
    /// Stochastic depth: drop probability of the last block (linearly less for earlier ones); 0 = off.
    #[config(default = 0.0)]
    pub drop_path: f64,
    /// Input channels.
    #[config(default = 3)]
    pub in_channels: usize,
}

/// The EfficientNet variants the trainer builds, by their config name (`model.backbone`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum BackboneKind {
    /// EfficientNet-b0 (224 px in the family's scaling).
    B0,
    /// EfficientNet-b1.
    B1,
    /// EfficientNet-b2.
    B2,
    /// EfficientNet-b3, the paper's backbone.
    B3,
    /// EfficientNet-Lite0: no squeeze-excitation, ReLU6; the field model's backbone.
    Lite0,
    /// EfficientNet-Lite1.
    Lite1,
    /// EfficientNet-Lite2.
    Lite2,
    /// A small b0-like network that trains from scratch on 2 cores.
    Small,
    /// A tiny network for tests.
    Tiny,
}

impl std::fmt::Display for BackboneKind {
    /// The config name: the variant lower-cased, as serde's `rename_all = "lowercase"` spells it.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}", format!("{self:?}").to_lowercase())
    }
}

impl BackboneKind {
    /// The network configuration of this variant.
    pub fn config(self) -> EfficientNetConfig {
        match self {
            BackboneKind::B0 => EfficientNetConfig::b0(),
            BackboneKind::B1 => EfficientNetConfig::b1(),
            BackboneKind::B2 => EfficientNetConfig::b2(),
            BackboneKind::B3 => EfficientNetConfig::b3(),
            BackboneKind::Lite0 => EfficientNetConfig::lite0(),
            BackboneKind::Lite1 => EfficientNetConfig::lite1(),
            BackboneKind::Lite2 => EfficientNetConfig::lite2(),
            BackboneKind::Small => EfficientNetConfig::small(),
            BackboneKind::Tiny => EfficientNetConfig::tiny(),
        }
    }
}

impl EfficientNetConfig {
    /// B0's stages: (expand, channels, repeats, stride, kernel).
    pub fn base_stages() -> Vec<StageConfig> {
        [
            (1, 16, 1, 1, 3),
            (6, 24, 2, 2, 3),
            (6, 40, 2, 2, 5),
            (6, 80, 3, 2, 3),
            (6, 112, 3, 1, 5),
            (6, 192, 4, 2, 5),
            (6, 320, 1, 1, 3),
        ]
        .into_iter()
        .map(|(e, c, n, s, k)| StageConfig::new(e, c, n, s, k))
        .collect()
    }

    /// EfficientNet-B0.
    pub fn b0() -> Self {
        Self::new(1.0, 1.0)
    }
    /// EfficientNet-B1.
    pub fn b1() -> Self {
        Self::new(1.0, 1.1)
    }
    /// EfficientNet-B2.
    pub fn b2() -> Self {
        Self::new(1.1, 1.2)
    }
    /// EfficientNet-B3 (the paper's backbone).
    pub fn b3() -> Self {
        Self::new(1.2, 1.4)
    }
    /// EfficientNet-Lite with the given multipliers: no SE, ReLU6, fixed stem and end stages.
    pub fn lite(width: f64, depth: f64) -> Self {
        Self::new(width, depth)
            .with_se_ratio(0.0)
            .with_activation(BlockActivation::Relu6)
            .with_fixed_stem_and_ends(true)
    }
    /// EfficientNet-Lite0 (224 px in Google's release).
    pub fn lite0() -> Self {
        Self::lite(1.0, 1.0)
    }
    /// EfficientNet-Lite1 (240 px).
    pub fn lite1() -> Self {
        Self::lite(1.0, 1.1)
    }
    /// EfficientNet-Lite2 (260 px).
    pub fn lite2() -> Self {
        Self::lite(1.1, 1.2)
    }
    /// A small member of the family (width 0.5, depth 0.5) for CPU training.
    pub fn small() -> Self {
        Self::new(0.5, 0.5)
    }
    /// The smallest useful member (width 0.25, depth 0.34) for tests.
    pub fn tiny() -> Self {
        Self::new(0.25, 0.34)
    }

    /// timm's `round_channels`: scale, then round to a multiple of 8 without losing more than 10 %.
    pub fn scaled_channels(&self, base: usize) -> usize {
        let v = base as f64 * self.width;
        let mut c = ((v + 4.0) as usize / 8 * 8).max(8);
        if (c as f64) < 0.9 * v {
            c += 8;
        }
        c
    }

    /// timm's `round_repeats`: `ceil(depth × repeats)`.
    pub fn scaled_repeats(&self, base: usize) -> usize {
        (self.depth * base as f64).ceil() as usize
    }

    /// Repeats of stage `index`: Lite keeps the first and last stages as in B0.
    fn stage_repeats(&self, index: usize) -> usize {
        let base = self.stages[index].repeats;
        if self.fixed_stem_and_ends && (index == 0 || index + 1 == self.stages.len()) {
            base
        } else {
            self.scaled_repeats(base)
        }
    }

    /// Stem width: Lite keeps B0's.
    fn stem_width(&self) -> usize {
        if self.fixed_stem_and_ends { self.stem_channels } else { self.scaled_channels(self.stem_channels) }
    }

    /// `(stage, block within the stage)` of every block, in network order.
    pub fn block_layout(&self) -> Vec<(usize, usize)> {
        (0..self.stages.len()).flat_map(|s| (0..self.stage_repeats(s)).map(move |b| (s, b))).collect()
    }

    /// Channels of the stride-16 tap and of the stride-32 tap.
    pub fn tap_channels(&self) -> (usize, usize) {
        let (tap, last) = self.tap_stages();
        (self.scaled_channels(self.stages[tap].channels), self.scaled_channels(self.stages[last].channels))
    }

    /// Index of the last stage at total stride 16, and of the last stage.
    fn tap_stages(&self) -> (usize, usize) {
        let mut stride = 2; // stem
        let mut tap = 0;
        for (i, s) in self.stages.iter().enumerate() {
            stride *= s.stride;
            if stride == 16 {
                tap = i;
            }
        }
        (tap, self.stages.len() - 1)
    }

    /// Checks the stage list gives strides 16 and 32, as the two taps need.
    pub fn validate(&self) -> Result<(), String> {
        let total: usize = 2 * self.stages.iter().map(|s| s.stride).product::<usize>();
        let (tap, _) = self.tap_stages();
        let at_tap: usize = 2 * self.stages[..=tap].iter().map(|s| s.stride).product::<usize>();
        if self.stages.is_empty() || total != 32 || at_tap != 16 {
            return Err(format!(
                "EfficientNet stages must reach total stride 32 through a stride-16 stage (got {total})"
            ));
        }
        if self.width <= 0.0 || self.depth <= 0.0 {
            return Err("EfficientNet width and depth multipliers must be positive".into());
        }
        if !(0.0..=1.0).contains(&self.se_ratio) {
            return Err(format!(
                "EfficientNet se_ratio must be in [0, 1] (0 = no squeeze-excitation), got {}",
                self.se_ratio
            ));
        }
        Ok(())
    }

    /// Builds the network.
    pub fn init(&self, device: &Device) -> EfficientNet {
        let stem_channels = self.stem_width();
        let bn =
            |c: usize| BatchNormConfig::new(c).with_epsilon(self.bn_eps).with_momentum(self.bn_momentum).init(device);
        let total_blocks: usize = (0..self.stages.len()).map(|i| self.stage_repeats(i)).sum();
        let mut index = 0;
        let mut in_channels = stem_channels;
        let stages = self
            .stages
            .iter()
            .enumerate()
            .map(|(stage_index, stage)| {
                let out_channels = self.scaled_channels(stage.channels);
                let blocks = (0..self.stage_repeats(stage_index))
                    .map(|b| {
                        let block = MbConvConfig {
                            in_channels,
                            out_channels,
                            expand: stage.expand,
                            kernel: stage.kernel,
                            stride: if b == 0 { stage.stride } else { 1 },
                            se_channels: if self.se_ratio > 0.0 {
                                ((in_channels as f64 * self.se_ratio) as usize).max(1)
                            } else {
                                0
                            },
                            activation: self.activation,
                            drop_path: self.drop_path * index as f64 / total_blocks as f64,
                        }
                        .init(device, &bn);
                        in_channels = out_channels;
                        index += 1;
                        block
                    })
                    .collect();
                Stage { blocks }
            })
            .collect();
        let (tap, _) = self.tap_stages();
        EfficientNet {
            conv_stem: conv(self.in_channels, stem_channels, 3, 2, 1, false, device),
            bn1: bn(stem_channels),
            stages,
            tap_stage: tap,
            relu6: self.activation == BlockActivation::Relu6,
        }
    }
}

fn conv(in_c: usize, out_c: usize, kernel: usize, stride: usize, groups: usize, bias: bool, device: &Device) -> Conv2d {
    Conv2dConfig::new([in_c, out_c], [kernel, kernel])
        .with_stride([stride, stride])
        .with_groups(groups)
        .with_padding(PaddingConfig2d::Same)
        .with_bias(bias)
        .init(device)
}

/// The feature extractor.
#[derive(Module, Debug)]
pub struct EfficientNet {
    conv_stem: Conv2d,
    bn1: BatchNorm,
    stages: Vec<Stage>,
    tap_stage: usize,
    relu6: bool,
}

/// The two feature taps.
#[derive(Debug, Clone)]
pub struct Taps {
    /// Last stride-16 block output, `[B, C16, N/16, N/16]`.
    pub feat14: Tensor<4>,
    /// Last block output, `[B, C32, N/32, N/32]`.
    pub feat7: Tensor<4>,
}

impl EfficientNet {
    /// Runs the network on `[B, 3, N, N]` images.
    pub fn forward(&self, x: Tensor<4>) -> Taps {
        let mut x = activate(self.relu6, self.bn1.forward(self.conv_stem.forward(x)));
        let mut feat14 = None;
        for (i, stage) in self.stages.iter().enumerate() {
            for block in &stage.blocks {
                x = block.forward(x);
            }
            if i == self.tap_stage {
                feat14 = Some(x.clone());
            }
        }
        // The tap stage always exists (validated at construction), so `feat14` is set.
        Taps { feat14: feat14.unwrap_or_else(|| x.clone()), feat7: x }
    }
}

/// A stage: a run of MBConv blocks.
#[derive(Module, Debug)]
pub struct Stage {
    blocks: Vec<MbConv>,
}

/// Block geometry.
#[derive(Debug, Clone, Copy)]
struct MbConvConfig {
    in_channels: usize,
    out_channels: usize,
    expand: usize,
    kernel: usize,
    stride: usize,
    /// 0 = no squeeze-excitation.
    se_channels: usize,
    activation: BlockActivation,
    drop_path: f64,
}

impl MbConvConfig {
    fn init(&self, device: &Device, bn: &dyn Fn(usize) -> BatchNorm) -> MbConv {
        let mid = self.in_channels * self.expand;
        MbConv {
            expand: (self.expand != 1)
                .then(|| ConvBn { conv: conv(self.in_channels, mid, 1, 1, 1, false, device), bn: bn(mid) }),
            depthwise: ConvBn { conv: conv(mid, mid, self.kernel, self.stride, mid, false, device), bn: bn(mid) },
            se: (self.se_channels > 0).then(|| SqueezeExcite {
                reduce: conv(mid, self.se_channels, 1, 1, 1, true, device),
                expand: conv(self.se_channels, mid, 1, 1, 1, true, device),
            }),
            project: ConvBn { conv: conv(mid, self.out_channels, 1, 1, 1, false, device), bn: bn(self.out_channels) },
            residual: self.stride == 1 && self.in_channels == self.out_channels,
            relu6: self.activation == BlockActivation::Relu6,
            drop_path: self.drop_path,
        }
    }
}

/// Convolution followed by batch norm.
#[derive(Module, Debug)]
pub struct ConvBn {
    conv: Conv2d,
    bn: BatchNorm,
}

impl ConvBn {
    fn forward(&self, x: Tensor<4>) -> Tensor<4> {
        self.bn.forward(self.conv.forward(x))
    }
}

/// Squeeze-excitation: channel gates from the global average.
#[derive(Module, Debug)]
pub struct SqueezeExcite {
    reduce: Conv2d,
    expand: Conv2d,
}

impl SqueezeExcite {
    fn forward(&self, x: Tensor<4>) -> Tensor<4> {
        let s = adaptive_avg_pool2d(x.clone(), [1, 1]);
        let gate = sigmoid(self.expand.forward(silu(self.reduce.forward(s))));
        x * gate
    }
}

/// Inverted-residual block (MBConv); with expansion 1 it is timm's depthwise-separable block.
#[derive(Module, Debug)]
pub struct MbConv {
    expand: Option<ConvBn>,
    depthwise: ConvBn,
    se: Option<SqueezeExcite>,
    project: ConvBn,
    residual: bool,
    relu6: bool,
    drop_path: f64,
}

impl MbConv {
    fn forward(&self, input: Tensor<4>) -> Tensor<4> {
        let mut x = input.clone();
        if let Some(expand) = &self.expand {
            x = activate(self.relu6, expand.forward(x));
        }
        x = activate(self.relu6, self.depthwise.forward(x));
        if let Some(se) = &self.se {
            x = se.forward(x);
        }
        x = self.project.forward(x);
        if !self.residual {
            return x;
        }
        if self.drop_path > 0.0 && x.device().is_autodiff() {
            // Stochastic depth: drop the whole residual branch per sample while training.
            let [batch, ..] = x.dims();
            let keep = 1.0 - self.drop_path;
            let mask = Tensor::<4>::random([batch, 1, 1, 1], Distribution::Bernoulli(keep), &x.device());
            x = x * mask / keep;
        }
        x + input
    }
}
