//! The CDNet network: backbone + 1×1 adapters + WSLL (or global average pooling for the baseline),
//! the shared projection head, the per-view classifier and the fused classifier.

use super::efficientnet::{EfficientNet, EfficientNetConfig};
use super::wsll::{AttentionActivation, Wsll, WsllConfig, attention_mean};
use burn::module::Module;
use burn::nn::conv::{Conv2d, Conv2dConfig};
use burn::nn::{Linear, LinearConfig};
use burn::prelude::*;
use burn::tensor::activation::relu;
use burn::tensor::module::adaptive_avg_pool2d;

/// The hyper-parameters of what CDNet builds around its backbone (adapters, WSLL, projection,
/// classifiers) and the input size. Defaults are the reference (224 px, adapters to the ResNet-50
/// widths 1024/2048, M = 32 maps, projection 2048 → 128 → 128). A training config's `[model]`
/// section holds these keys directly.
#[derive(Config, Debug, PartialEq)]
pub struct NetworkConfig {
    /// Input side `N`; a multiple of 32.
    #[config(default = 224)]
    pub input_size: usize,
    /// Width of the 1×1 adapter on the stride-16 tap (texture features).
    #[config(default = 1024)]
    pub texture_channels: usize,
    /// Width of the 1×1 adapter on the stride-32 tap: the feature dimension `D`.
    #[config(default = 2048)]
    pub feature_dim: usize,
    /// Attention maps `M`.
    #[config(default = 32)]
    pub attention_maps: usize,
    /// Attention activation (ReLU as the code; sigmoid as the paper).
    #[config(default = "AttentionActivation::Relu")]
    pub attention_activation: AttentionActivation,
    /// Hidden width of the projection MLP.
    #[config(default = 128)]
    pub projection_hidden: usize,
    /// Output width of the projection MLP (the hypersphere).
    #[config(default = 128)]
    pub projection_dim: usize,
    /// WSLL attention + MCSP pooling; `false` gives the plain EfficientNet baseline (global average
    /// pooling, no attention, no zoom).
    #[config(default = true)]
    pub wsll: bool,
    /// Negative slope of the LeakyReLU in front of both classifiers.
    #[config(default = 0.01)]
    pub leaky_slope: f64,
}

/// The whole network: the backbone variant, the layers around it, the class count and the
/// inference path.
#[derive(Config, Debug, PartialEq)]
pub struct CdnetConfig {
    /// The EfficientNet variant.
    pub backbone: EfficientNetConfig,
    /// Number of classes `K`.
    pub num_classes: usize,
    /// Input size and the layers around the backbone.
    #[config(default = "NetworkConfig::new()")]
    pub network: NetworkConfig,
    /// Inference path: global pass, centre zoom on the attention box, second pass, fused head
    /// (`true`, CDNet); or one pass and the per-view head (`false`, the no-zoom ablations).
    #[config(default = true)]
    pub zoom_inference: bool,
}

impl CdnetConfig {
    /// Checks sizes that would otherwise fail deep inside a forward pass.
    pub fn validate(&self) -> Result<(), String> {
        self.backbone.validate()?;
        let network = &self.network;
        if network.input_size < 32 || !network.input_size.is_multiple_of(32) {
            return Err(format!(
                "input_size {} must be a multiple of 32 (the backbone's total stride)",
                network.input_size
            ));
        }
        if self.num_classes < 2 {
            return Err(format!("num_classes must be at least 2, got {}", self.num_classes));
        }
        if self.zoom_inference && !network.wsll {
            return Err("zoom_inference needs the WSLL attention (wsll = true): the zoom box comes from it".into());
        }
        if network.feature_dim == 0
            || network.texture_channels == 0
            || network.attention_maps == 0
            || network.projection_dim == 0
        {
            return Err("feature_dim, texture_channels, attention_maps and projection_dim must be positive".into());
        }
        Ok(())
    }

    /// Side of the attention map, `N / 32`.
    pub fn attention_size(&self) -> usize {
        self.network.input_size / 32
    }

    /// Builds the network.
    pub fn init(&self, device: &Device) -> Cdnet {
        let network = &self.network;
        let (c14, c7) = self.backbone.tap_channels();
        let adapter = |from: usize, to: usize| Conv2dConfig::new([from, to], [1, 1]).init(device);
        let head = |inputs: usize| Head {
            linear: LinearConfig::new(inputs, self.num_classes).init(device),
            leaky_slope: network.leaky_slope,
        };
        Cdnet {
            extractor: FeatureExtractor {
                backbone: self.backbone.init(device),
                adapter14: adapter(c14, network.texture_channels),
                adapter7: adapter(c7, network.feature_dim),
                wsll: network.wsll.then(|| {
                    WsllConfig::new(network.texture_channels, network.feature_dim)
                        .with_attention_maps(network.attention_maps)
                        .with_activation(network.attention_activation)
                        .init(device)
                }),
            },
            projection: Projection {
                hidden: LinearConfig::new(network.feature_dim, network.projection_hidden).init(device),
                out: LinearConfig::new(network.projection_hidden, network.projection_dim).init(device),
            },
            cls_head: head(network.feature_dim),
            en_fc: head(2 * network.feature_dim),
            zoom_inference: self.zoom_inference,
        }
    }
}

/// The CDNet network.
#[derive(Module, Debug)]
pub struct Cdnet {
    extractor: FeatureExtractor,
    projection: Projection,
    cls_head: Head,
    en_fc: Head,
    zoom_inference: bool,
}

/// The feature extractor `f`: backbone, the two 1×1 adapters and WSLL (or global average pooling).
/// This is the first exported graph: image → (feature, heatmap).
#[derive(Module, Debug)]
pub struct FeatureExtractor {
    backbone: EfficientNet,
    adapter14: Conv2d,
    adapter7: Conv2d,
    wsll: Option<Wsll>,
}

/// A classifier head: LeakyReLU → Linear. The fused head `en_fc` is the second exported graph.
#[derive(Module, Debug)]
pub struct Head {
    linear: Linear,
    leaky_slope: f64,
}

impl Head {
    /// Logits `[B, K]`.
    pub fn forward(&self, features: Tensor<2>) -> Tensor<2> {
        self.linear.forward(leaky_relu(features, self.leaky_slope))
    }
}

/// The projection head `g`: Linear → ReLU → Linear, then L2 normalisation.
#[derive(Module, Debug)]
pub struct Projection {
    hidden: Linear,
    out: Linear,
}

/// One backbone pass.
#[derive(Debug, Clone)]
pub struct Extracted {
    /// The view's feature `[B, D]`.
    pub feature: Tensor<2>,
    /// AttMS `[B, M, h, w]` (absent for the GAP baseline).
    pub attention: Option<Tensor<4>>,
    /// The stride-16 heatmap `[B, 1, 2h, 2w]` (absent for the GAP baseline).
    pub heatmap: Option<Tensor<4>>,
}

impl Extracted {
    /// AttS, the channel-mean attention `[B, 1, h, w]`.
    pub fn attention_mean(&self) -> Option<Tensor<4>> {
        self.attention.clone().map(attention_mean)
    }
}

impl FeatureExtractor {
    /// Images `[B, 3, N, N]` → feature and attention.
    pub fn extract(&self, images: Tensor<4>) -> Extracted {
        let taps = self.backbone.forward(images);
        let feat7 = self.adapter7.forward(taps.feat7);
        match &self.wsll {
            Some(wsll) => {
                let localised = wsll.forward(self.adapter14.forward(taps.feat14), feat7);
                Extracted {
                    feature: localised.feature,
                    attention: Some(localised.attention),
                    heatmap: Some(localised.heatmap),
                }
            }
            None => {
                let [b, d, _, _] = feat7.dims();
                let feature = adaptive_avg_pool2d(feat7, [1, 1]).reshape([b, d]);
                Extracted { feature, attention: None, heatmap: None }
            }
        }
    }

    /// The exported form: feature `[B, D]` and the stride-16 heatmap `[B, 1, 2h, 2w]` (needs WSLL;
    /// the device takes AttS, for the zoom box, as its 2 × 2 block means).
    pub fn forward(&self, images: Tensor<4>) -> (Tensor<2>, Tensor<4>) {
        let out = self.extract(images);
        let heatmap = out.heatmap.unwrap_or_else(|| {
            let [b, _] = out.feature.dims();
            Tensor::zeros([b, 1, 1, 1], &out.feature.device())
        });
        (out.feature, heatmap)
    }
}

impl Cdnet {
    /// Whether the network has the WSLL attention (and so can zoom).
    pub fn has_attention(&self) -> bool {
        self.extractor.wsll.is_some()
    }

    /// Whether inference takes the two-pass centre-zoom path.
    pub fn zoom_inference(&self) -> bool {
        self.zoom_inference && self.has_attention()
    }

    /// Replaces the backbone (after loading pretrained weights into it).
    pub fn with_backbone(mut self, backbone: EfficientNet) -> Self {
        self.extractor.backbone = backbone;
        self
    }

    /// The feature extractor (the first exported graph).
    pub fn extractor(&self) -> &FeatureExtractor {
        &self.extractor
    }

    /// The head used at inference: `en_fc` for two-pass models, `cls_head` otherwise (the second
    /// exported graph).
    pub fn inference_head(&self) -> &Head {
        if self.zoom_inference() { &self.en_fc } else { &self.cls_head }
    }

    /// The multi-scale feature extractor `f` (+ WSLL): images `[B, 3, N, N]` → feature and attention.
    pub fn extract(&self, images: Tensor<4>) -> Extracted {
        self.extractor.extract(images)
    }

    /// The projection `g` onto the unit hypersphere, `[B, D]` → `[B, P]`.
    pub fn project(&self, feature: Tensor<2>) -> Tensor<2> {
        let z = self.projection.out.forward(relu(self.projection.hidden.forward(feature)));
        let norm = z.clone().powi_scalar(2).sum_dim(1).sqrt().clamp_min(1e-12);
        z / norm
    }

    /// The per-view classifier (`cls_head`): LeakyReLU → Linear, logits `[B, K]`.
    pub fn classify(&self, feature: Tensor<2>) -> Tensor<2> {
        self.cls_head.forward(feature)
    }

    /// The fused classifier (`en_fc`) on `cat[global, local]`, logits `[B, K]`.
    pub fn fuse(&self, global: Tensor<2>, local: Tensor<2>) -> Tensor<2> {
        self.en_fc.forward(Tensor::cat(vec![global, local], 1))
    }
}

/// LeakyReLU written as `relu(x) − slope · relu(−x)`: exactly equal on both sides of zero, and made
/// of ops the ONNX exporter lowers (it has no LeakyRelu).
fn leaky_relu(x: Tensor<2>, slope: f64) -> Tensor<2> {
    relu(x.clone()) - relu(-x) * slope
}
