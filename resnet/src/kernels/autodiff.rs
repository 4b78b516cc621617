//! Convolution and batch norm as burn autodiff operations with their own backward
//! step, generic over the kernels that compute them.
//!
//! A backend's kernels implement [`ConvKernels`] (and [`NormKernels`]) on its *inner*
//! backend (`Flex`, `Cuda<F>`); [`conv2d`] and [`batch_norm`] put them into
//! `Autodiff<inner>`'s graph as one node each, whose backward step calls the same
//! kernels' gradients. The CPU's kernels ([`super::cpu`]) and cuDNN's
//! ([`super::cudnn`]) share this plumbing, so the CPU tests of it (against burn's own
//! operations) cover what the GPU runs.

use std::fmt::Debug;
use std::marker::PhantomData;

use burn::backend::Autodiff;
use burn::tensor::backend::{AutodiffBackend, Backend};
use burn::tensor::ops::{ConvOptions, FloatTensor};
use burn_autodiff::checkpoint::base::Checkpointer;
use burn_autodiff::checkpoint::strategy::NoCheckpointing;
use burn_autodiff::grads::Gradients;
use burn_autodiff::ops::{Backward, Ops, OpsKind};

/// Convolution kernels of one backend: 2-D, no bias, one group, symmetric padding
/// (what a ResNet has; [`super::conv2d`] sends anything else to burn).
pub trait ConvKernels: Debug + Send + Sync + 'static {
    /// The backend they compute on.
    type B: Backend;

    /// `x` and `w` as the kernels want them (contiguous, say). The node keeps what
    /// this returns for the backward step, so a copy made here is made once per step,
    /// not once per pass. The default takes them as they are.
    fn operands(
        x: FloatTensor<Self::B>,
        w: FloatTensor<Self::B>,
    ) -> (FloatTensor<Self::B>, FloatTensor<Self::B>) {
        (x, w)
    }

    /// `y = conv(x, w)`.
    fn forward(
        x: FloatTensor<Self::B>,
        w: FloatTensor<Self::B>,
        options: &ConvOptions<2>,
    ) -> FloatTensor<Self::B>;

    /// The gradients of `x` and `w` (each only when asked for) from the output's `dy`.
    fn backward(
        x: FloatTensor<Self::B>,
        w: FloatTensor<Self::B>,
        dy: FloatTensor<Self::B>,
        options: &ConvOptions<2>,
        want: [bool; 2],
    ) -> [Option<FloatTensor<Self::B>>; 2];
}

/// What a training-mode batch norm's forward step returns.
#[derive(Debug, Clone)]
pub struct NormForward<T> {
    /// The normalised output, `[N, C, H, W]`.
    pub y: T,
    /// The batch's per-channel mean, `[C]`, in γ's dtype.
    pub mean: T,
    /// The batch's per-channel biased variance, `[C]`, in γ's dtype.
    pub var: T,
    /// What the backward step needs besides `x` and γ (kernel-specific: e.g. the mean
    /// and 1/√(σ²+ε) in the statistics' own dtype).
    pub saved: [T; 2],
}

/// Batch norm kernels of one backend (training mode: the batch's statistics).
pub trait NormKernels: Debug + Send + Sync + 'static {
    /// The backend they compute on.
    type B: Backend;

    /// Whether the kernels apply a following ReLU themselves (`relu` is then passed
    /// through; without, it is always `false` and the caller applies burn's ReLU).
    const FUSES_RELU: bool = false;

    /// `y = γ·(x − μ)/√(σ² + ε) + β` per channel of `x: [N, C, H, W]`, then
    /// `max(y, 0)` when `relu`.
    fn forward(
        x: FloatTensor<Self::B>,
        gamma: FloatTensor<Self::B>,
        beta: FloatTensor<Self::B>,
        epsilon: f64,
        relu: bool,
    ) -> NormForward<FloatTensor<Self::B>>;

    /// The gradients of `x`, γ and β from the output's `dy` (`relu` as in
    /// [`Self::forward`]).
    fn backward(
        x: FloatTensor<Self::B>,
        gamma: FloatTensor<Self::B>,
        saved: [FloatTensor<Self::B>; 2],
        dy: FloatTensor<Self::B>,
        epsilon: f64,
        relu: bool,
    ) -> [FloatTensor<Self::B>; 3];
}

/// The convolution node of `Autodiff<K::B>`.
#[derive(Debug)]
struct ConvNode<K>(PhantomData<K>);

impl<K: ConvKernels> Backward<K::B, 2> for ConvNode<K> {
    type State = (FloatTensor<K::B>, FloatTensor<K::B>, ConvOptions<2>);

    fn backward(self, ops: Ops<Self::State, 2>, grads: &mut Gradients, _: &mut Checkpointer) {
        let [node_x, node_w] = ops.parents;
        let dy = grads.consume::<K::B>(&ops.node);
        let (x, w, options) = ops.state;
        let [dx, dw] = K::backward(x, w, dy, &options, [node_x.is_some(), node_w.is_some()]);
        if let (Some(node), Some(g)) = (node_x, dx) {
            grads.register::<K::B>(node.id, g);
        }
        if let (Some(node), Some(g)) = (node_w, dw) {
            grads.register::<K::B>(node.id, g);
        }
    }
}

/// `conv(x, w)` on `Autodiff<K::B>` with `K`'s kernels forward and backward.
pub fn conv2d<K: ConvKernels>(
    x: FloatTensor<Autodiff<K::B>>,
    w: FloatTensor<Autodiff<K::B>>,
    options: ConvOptions<2>,
) -> FloatTensor<Autodiff<K::B>> {
    let node = ConvNode::<K>(PhantomData);
    match node
        .prepare::<NoCheckpointing>([x.node.clone(), w.node.clone()])
        .compute_bound()
        .stateful()
    {
        OpsKind::Tracked(prep) => {
            let (x, w) = K::operands(x.primitive, w.primitive);
            let y = K::forward(x.clone(), w.clone(), &options);
            prep.finish((x, w, options), y)
        }
        OpsKind::UnTracked(prep) => prep.finish(K::forward(x.primitive, w.primitive, &options)),
    }
}

/// The batch norm node of `Autodiff<K::B>`.
#[derive(Debug)]
struct NormNode<K>(PhantomData<K>);

impl<K: NormKernels> Backward<K::B, 3> for NormNode<K> {
    type State = (
        FloatTensor<K::B>,
        FloatTensor<K::B>,
        [FloatTensor<K::B>; 2],
        f64,
        bool,
    );

    fn backward(self, ops: Ops<Self::State, 3>, grads: &mut Gradients, _: &mut Checkpointer) {
        let dy = grads.consume::<K::B>(&ops.node);
        let (x, gamma, saved, epsilon, relu) = ops.state;
        let gradients = K::backward(x, gamma, saved, dy, epsilon, relu);
        for (node, g) in ops.parents.into_iter().zip(gradients) {
            if let Some(node) = node {
                grads.register::<K::B>(node.id, g);
            }
        }
    }
}

/// Training-mode batch norm on `Autodiff<K::B>` with `K`'s kernels forward and
/// backward: `[y, mean, var]`, the output (differentiable in `x`, γ and β; after ReLU
/// when `relu`, which needs [`NormKernels::FUSES_RELU`]) and the batch's mean and biased
/// variance (constants, for the running statistics).
pub fn batch_norm<K: NormKernels>(
    x: FloatTensor<Autodiff<K::B>>,
    gamma: FloatTensor<Autodiff<K::B>>,
    beta: FloatTensor<Autodiff<K::B>>,
    epsilon: f64,
    relu: bool,
) -> [FloatTensor<Autodiff<K::B>>; 3] {
    assert!(
        !relu || K::FUSES_RELU,
        "{}'s batch norm does not apply ReLU",
        std::any::type_name::<K>()
    );
    let out = K::forward(
        x.primitive.clone(),
        gamma.primitive.clone(),
        beta.primitive.clone(),
        epsilon,
        relu,
    );
    let node = NormNode::<K>(PhantomData);
    let y = match node
        .prepare::<NoCheckpointing>([x.node.clone(), gamma.node.clone(), beta.node.clone()])
        .compute_bound()
        .stateful()
    {
        OpsKind::Tracked(prep) => prep.finish(
            (
                x.primitive,
                gamma.primitive,
                out.saved.clone(),
                epsilon,
                relu,
            ),
            out.y,
        ),
        OpsKind::UnTracked(prep) => prep.finish(out.y),
    };
    let constant = Autodiff::<K::B>::from_inner;
    [y, constant(out.mean), constant(out.var)]
}
