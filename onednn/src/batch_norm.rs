//! Training batch normalisation (spatial, f32, NCHW), alone or with a fused ReLU: the
//! plans and the calls of [`Dnnl`] that run them.

use super::sys::{self, arg, prop, tag, Data, OpDesc, PrimDesc};
use super::{check_len, numel, Dnnl, Key, Plan};

/// Outputs of [`Dnnl::batch_norm_forward_training`].
#[derive(Debug, Clone)]
pub struct BnForward {
    /// Normalised, scaled and shifted output, NCHW.
    pub y: Vec<f32>,
    /// Per-channel batch mean.
    pub mean: Vec<f32>,
    /// Per-channel **biased** batch variance (divided by N·H·W, not N·H·W − 1), as
    /// oneDNN computes it; a running estimate in PyTorch's convention needs the factor
    /// `m / (m − 1)`.
    pub variance: Vec<f32>,
}

/// Outputs of [`Dnnl::batch_norm_relu_forward_training`].
#[derive(Debug, Clone)]
pub struct BnReluForward {
    /// `relu(bn(x))`, NCHW.
    pub y: Vec<f32>,
    /// Per-channel batch mean.
    pub mean: Vec<f32>,
    /// Per-channel biased batch variance (see [`BnForward::variance`]).
    pub variance: Vec<f32>,
    /// oneDNN's workspace (the ReLU mask) for [`Dnnl::batch_norm_relu_backward`].
    pub workspace: Vec<u8>,
}

/// Outputs of [`Dnnl::batch_norm_backward`] and [`Dnnl::batch_norm_relu_backward`].
#[derive(Debug, Clone)]
pub struct BnBackward {
    /// Gradient of the input, NCHW.
    pub dx: Vec<f32>,
    /// Gradient of γ.
    pub dgamma: Vec<f32>,
    /// Gradient of β.
    pub dbeta: Vec<f32>,
}

impl Dnnl {
    pub(super) fn bn_plan(&self, key: &Key) -> Result<Plan, String> {
        let Key::Bn {
            backward,
            dims,
            eps_bits,
            relu,
        } = *key
        else {
            unreachable!("bn_plan with a non-bn key")
        };
        let api = self.api;
        let eps = f32::from_bits(eps_bits);
        let mut flags = sys::bn_flags::USE_SCALE | sys::bn_flags::USE_SHIFT;
        if relu {
            flags |= sys::bn_flags::FUSE_NORM_RELU;
        }
        let data = self.conv_md(dims, tag::ABCD)?;
        let ch = api.md(&[dims[1] as i64], tag::A)?;
        let fwd = OpDesc::bn_forward(api, prop::FORWARD_TRAINING, &data, eps, flags)?;
        let fpd = PrimDesc::new(api, &fwd, &self.engine, None)?;
        let ws = if relu {
            Some(
                fpd.arg_md(arg::WORKSPACE)
                    .ok_or("batch norm with fuse_norm_relu reports no workspace")?,
            )
        } else {
            None
        };
        if !backward {
            let mut specs = vec![
                (arg::SRC, data, false),
                (arg::SCALE, ch, false),
                (arg::SHIFT, ch, false),
                (arg::DST, data, true),
                (arg::MEAN, ch, true),
                (arg::VARIANCE, ch, true),
            ];
            if let Some(ws) = ws {
                specs.push((arg::WORKSPACE, ws, true));
            }
            return Plan::new(api, &self.engine, fpd, None, &specs);
        }
        let op = OpDesc::bn_backward(api, &data, &data, eps, flags)?;
        let pd = PrimDesc::new(api, &op, &self.engine, Some(&fpd))?;
        let mut specs = vec![
            (arg::SRC, data, false),
            (arg::DIFF_DST, data, false),
            (arg::MEAN, ch, false),
            (arg::VARIANCE, ch, false),
            (arg::SCALE, ch, false),
            (arg::DIFF_SRC, data, true),
            (arg::DIFF_SCALE, ch, true),
            (arg::DIFF_SHIFT, ch, true),
        ];
        if let Some(ws) = ws {
            specs.push((arg::WORKSPACE, ws, false));
        }
        Plan::new(api, &self.engine, pd, Some(fpd), &specs)
    }

    /// Training-mode spatial batch normalisation of NCHW `x`:
    /// `y = γ (x − mean) / sqrt(variance + eps) + β` with the batch statistics over N, H, W.
    /// The outputs are allocated without a zero-fill pass (oneDNN writes all of them).
    pub fn batch_norm_forward_training(
        &self,
        x: &[f32],
        dims: [usize; 4],
        gamma: &[f32],
        beta: &[f32],
        eps: f32,
    ) -> Result<BnForward, String> {
        let (f, _) = self.bn_forward(x, dims, gamma, beta, eps, false)?;
        Ok(f)
    }

    /// Training batch normalisation fused with a ReLU (oneDNN's `dnnl_fuse_norm_relu`):
    /// `y = max(0, γ (x − mean) / sqrt(variance + eps) + β)`, plus the workspace (the ReLU
    /// mask, in oneDNN's format) that [`Dnnl::batch_norm_relu_backward`] needs. `Err` if
    /// this oneDNN has no implementation of the fused primitive for these dims; the caller
    /// can then use [`Dnnl::batch_norm_forward_training`] and its own ReLU.
    pub fn batch_norm_relu_forward_training(
        &self,
        x: &[f32],
        dims: [usize; 4],
        gamma: &[f32],
        beta: &[f32],
        eps: f32,
    ) -> Result<BnReluForward, String> {
        let (f, workspace) = self.bn_forward(x, dims, gamma, beta, eps, true)?;
        Ok(BnReluForward {
            y: f.y,
            mean: f.mean,
            variance: f.variance,
            workspace,
        })
    }

    fn bn_forward(
        &self,
        x: &[f32],
        dims: [usize; 4],
        gamma: &[f32],
        beta: &[f32],
        eps: f32,
        relu: bool,
    ) -> Result<(BnForward, Vec<u8>), String> {
        let c = dims[1];
        check_len("x", x.len(), numel(dims))?;
        check_len("gamma", gamma.len(), c)?;
        check_len("beta", beta.len(), c)?;
        let mut out = BnForward {
            y: Vec::with_capacity(x.len()),
            mean: Vec::with_capacity(c),
            variance: Vec::with_capacity(c),
        };
        let key = Key::Bn {
            backward: false,
            dims,
            eps_bits: eps.to_bits(),
            relu,
        };
        let workspace = self.with_plan(key, |api, stream, plan| {
            // The workspace is zero-filled (it is small: a byte or a bit per element): its
            // format is oneDNN's, and nothing documents that every byte of it is written.
            let mut ws = vec![0u8; if relu { plan.user_bytes(6) } else { 0 }];
            let mut data = vec![
                Data::In(x),
                Data::In(gamma),
                Data::In(beta),
                Data::Fresh(&mut out.y),
                Data::Fresh(&mut out.mean),
                Data::Fresh(&mut out.variance),
            ];
            if relu {
                data.push(Data::OutBytes(&mut ws));
            }
            plan.run(api, stream, data)?;
            Ok(ws)
        })?;
        check_len("y", out.y.len(), x.len())?;
        check_len("mean", out.mean.len(), c)?;
        check_len("variance", out.variance.len(), c)?;
        Ok((out, workspace))
    }

    /// Gradients of [`Dnnl::batch_norm_forward_training`] given the forward's `mean` and
    /// (biased) `variance`. The outputs are allocated without a zero-fill pass.
    #[allow(clippy::too_many_arguments)]
    pub fn batch_norm_backward(
        &self,
        x: &[f32],
        dy: &[f32],
        dims: [usize; 4],
        mean: &[f32],
        variance: &[f32],
        gamma: &[f32],
        eps: f32,
    ) -> Result<BnBackward, String> {
        self.bn_backward(x, dy, dims, mean, variance, gamma, eps, None)
    }

    /// Gradients of [`Dnnl::batch_norm_relu_forward_training`] (the composite
    /// `relu(bn(x))`): `dy` is the gradient of its output, `workspace` the forward's.
    #[allow(clippy::too_many_arguments)]
    pub fn batch_norm_relu_backward(
        &self,
        x: &[f32],
        dy: &[f32],
        dims: [usize; 4],
        mean: &[f32],
        variance: &[f32],
        gamma: &[f32],
        eps: f32,
        workspace: &[u8],
    ) -> Result<BnBackward, String> {
        self.bn_backward(x, dy, dims, mean, variance, gamma, eps, Some(workspace))
    }

    #[allow(clippy::too_many_arguments)]
    fn bn_backward(
        &self,
        x: &[f32],
        dy: &[f32],
        dims: [usize; 4],
        mean: &[f32],
        variance: &[f32],
        gamma: &[f32],
        eps: f32,
        workspace: Option<&[u8]>,
    ) -> Result<BnBackward, String> {
        let c = dims[1];
        check_len("x", x.len(), numel(dims))?;
        check_len("dy", dy.len(), numel(dims))?;
        check_len("mean", mean.len(), c)?;
        check_len("variance", variance.len(), c)?;
        check_len("gamma", gamma.len(), c)?;
        let mut out = BnBackward {
            dx: Vec::with_capacity(x.len()),
            dgamma: Vec::with_capacity(c),
            dbeta: Vec::with_capacity(c),
        };
        let key = Key::Bn {
            backward: true,
            dims,
            eps_bits: eps.to_bits(),
            relu: workspace.is_some(),
        };
        self.with_plan(key, |api, stream, plan| {
            let mut data = vec![
                Data::In(x),
                Data::In(dy),
                Data::In(mean),
                Data::In(variance),
                Data::In(gamma),
                Data::Fresh(&mut out.dx),
                Data::Fresh(&mut out.dgamma),
                Data::Fresh(&mut out.dbeta),
            ];
            if let Some(ws) = workspace {
                if ws.len() != plan.user_bytes(8) {
                    return Err(format!(
                        "workspace: {} bytes, expected {}",
                        ws.len(),
                        plan.user_bytes(8)
                    ));
                }
                data.push(Data::InBytes(ws));
            }
            plan.run(api, stream, data)
        })?;
        check_len("dx", out.dx.len(), x.len())?;
        check_len("dgamma", out.dgamma.len(), c)?;
        check_len("dbeta", out.dbeta.len(), c)?;
        Ok(out)
    }
}
