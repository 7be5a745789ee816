//! SiLU and ReLU6 as single fused operations on burn's Flex CPU backend, forward and backward.
//!
//! burn 0.22 has no SiLU or clamp-style activation op: `activation::silu` is `x · sigmoid(x)`, so
//! under autodiff each SiLU is two passes forward and four backward (two products, the sigmoid's
//! derivative, a sum), each into a fresh buffer; our ReLU6 written as `relu(x) − relu(x − 6)` (a
//! `clamp` cannot be exported by burn-onnx and is two masked fills each way under autodiff) is four
//! passes each way. Activations run on every expanded feature map, so on EfficientNet that is a
//! large share of a CPU training step. PyTorch runs one kernel each way.
//!
//! This module adds the two activations through burn's backend-extension API
//! (`#[backend_extension]`): a one-pass kernel on Flex for each direction, and an autodiff node
//! whose backward pass calls the fused derivative. Nothing in burn is patched. Other devices (the
//! CUDA backend, where burn-fusion already fuses element-wise chains, and the ONNX exporter's
//! capture device, which records only burn's built-in ops) take the composed form, so the exported
//! graph is unchanged.

use burn::backend::autodiff::checkpoint::base::Checkpointer;
use burn::backend::autodiff::checkpoint::strategy::CheckpointStrategy;
use burn::backend::autodiff::grads::Gradients;
use burn::backend::autodiff::ops::{Backward, Ops, OpsKind};
use burn::backend::tensor::FloatTensor;
use burn::backend::{Autodiff, Backend, Dispatch, Flex, backend_extension};
use burn::prelude::*;
use burn::tensor::activation::{relu, silu as composed_silu};

mod kernels;

/// SiLU, `x · σ(x)`.
pub fn silu<const D: usize>(x: Tensor<D>) -> Tensor<D> {
    if runs_on_flex(&x) {
        Tensor::from_dispatch(<Dispatch as FusedActivations>::silu(x.into_dispatch()))
    } else {
        composed_silu(x)
    }
}

/// ReLU6, `min(max(x, 0), 6)`.
pub fn relu6<const D: usize>(x: Tensor<D>) -> Tensor<D> {
    if runs_on_flex(&x) {
        Tensor::from_dispatch(<Dispatch as FusedActivations>::relu6(x.into_dispatch()))
    } else {
        // Two ReLUs rather than `clamp`: burn-onnx 0.22 cannot export a clamp. The export writes
        // the pair back as one `Clip` (`export::onnx::Graph::fuse_relu6`).
        relu(x.clone()) - relu(x - 6.0)
    }
}

/// Whether the tensor lives on Flex (with or without autodiff), the one backend with the fused
/// kernels.
fn runs_on_flex<const D: usize>(x: &Tensor<D>) -> bool {
    x.device().inner() == Device::flex()
}

/// The fused activations as a burn backend extension, implemented for Flex and Autodiff<Flex>.
#[backend_extension(Flex, Autodiff)]
pub trait FusedActivations: Backend {
    /// SiLU, `x · σ(x)`.
    fn silu(x: FloatTensor<Self>) -> FloatTensor<Self>;
    /// ReLU6, `min(max(x, 0), 6)`.
    fn relu6(x: FloatTensor<Self>) -> FloatTensor<Self>;
}

impl FusedActivations for Flex {
    fn silu(x: FloatTensor<Self>) -> FloatTensor<Self> {
        kernels::map(x, kernels::silu_f32, kernels::silu_f64)
    }

    fn relu6(x: FloatTensor<Self>) -> FloatTensor<Self> {
        kernels::map(x, kernels::relu6_f32, kernels::relu6_f64)
    }
}

impl<C: CheckpointStrategy> FusedActivations for Autodiff<Flex, C> {
    fn silu(x: FloatTensor<Self>) -> FloatTensor<Self> {
        differentiable::<C>(x, Flex::silu, |x, grad| {
            kernels::map_with_grad(x, grad, kernels::silu_grad_f32, kernels::silu_grad_f64)
        })
    }

    fn relu6(x: FloatTensor<Self>) -> FloatTensor<Self> {
        differentiable::<C>(x, Flex::relu6, |x, grad| {
            kernels::map_with_grad(x, grad, kernels::relu6_grad_f32, kernels::relu6_grad_f64)
        })
    }
}

/// An element-wise activation as one autodiff node: `forward` on the way in; on the way back,
/// `backward(x, grad)` from the saved input `x` (an `Arc` clone: it is the previous layer's output,
/// which that layer's own backward pass keeps anyway).
fn differentiable<C: CheckpointStrategy>(
    x: FloatTensor<Autodiff<Flex, C>>,
    forward: fn(FloatTensor<Flex>) -> FloatTensor<Flex>,
    backward: DerivativeFn,
) -> FloatTensor<Autodiff<Flex, C>> {
    match ElementwiseBackward(backward).prepare::<C>([x.node()]).compute_bound().stateful() {
        OpsKind::Tracked(prep) => {
            let input = x.primitive().clone();
            prep.finish(input, forward(x.into_primitive()))
        }
        OpsKind::UnTracked(prep) => prep.finish(forward(x.into_primitive())),
    }
}

/// `(x, grad) → grad · f'(x)` for an element-wise `f`.
type DerivativeFn = fn(FloatTensor<Flex>, FloatTensor<Flex>) -> FloatTensor<Flex>;

#[derive(Debug)]
struct ElementwiseBackward(DerivativeFn);

impl Backward<Flex, 1> for ElementwiseBackward {
    type State = FloatTensor<Flex>;

    fn backward(self, ops: Ops<Self::State, 1>, grads: &mut Gradients, _: &mut Checkpointer) {
        let [parent] = ops.parents;
        let grad = grads.consume::<Flex>(&ops.node);
        if let Some(parent) = parent {
            grads.register::<Flex>(parent.id, (self.0)(ops.state, grad));
        }
    }
}
