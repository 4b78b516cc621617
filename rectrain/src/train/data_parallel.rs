//! Data-parallel gradients over several devices, like PyTorch's `DataParallel`.

use std::ops::Range;

use burn::module::{AutodiffModule, ModuleMapper, Param};
use burn::optim::{GradientsAccumulator, GradientsParams};
use burn::tensor::backend::AutodiffBackend;
use burn::tensor::{ElementConversion, Tensor};

use resnet::backend::host_f32;

/// One replica's shard: the replica and the model's weights to load into it, its items
/// and its device.
type ReplicaJob<'a, B, M> = (
    ((M, <M as burn::module::Module<B>>::Record), Range<usize>),
    &'a burn::tensor::Device<B>,
);

/// Sizes of the contiguous shards that split `n` images over `devices` replicas: as
/// even as possible, larger ones first, none empty (fewer shards than devices when
/// `n < devices`; none when `n` is 0).
pub fn shard_sizes(n: usize, devices: usize) -> Vec<usize> {
    let k = devices.min(n);
    if k == 0 {
        return Vec::new();
    }
    (0..k).map(|i| n / k + usize::from(i < n % k)).collect()
}

/// What [`DataParallel::step`] computed for one mini-batch.
pub struct ParallelStep {
    /// The gradient of the mini-batch's mean loss, on the first device, keyed by the
    /// model's parameter ids (ready for [`Optimizer::step`](burn::optim::Optimizer::step)).
    pub grads: GradientsParams,
    /// The mini-batch's mean loss: the shard losses weighted by shard size.
    pub loss: f64,
    /// The model outputs of every image (row-major, in batch order).
    pub outputs: Vec<f32>,
}

/// Data-parallel gradient computation over several devices, like PyTorch's
/// `DataParallel`: the model lives on the first device; each step splits the
/// mini-batch into contiguous shards (one per device, [`shard_sizes`]), copies the
/// current weights to one replica per further device, runs forward and backward of each
/// shard on its device, moves the gradients to the first device and sums them weighted by
/// shard size, so that they equal the gradient of the whole mini-batch's mean loss for
/// models without batch statistics. The caller then runs one optimizer step on the model.
///
/// BatchNorm in training mode normalises each shard by its own statistics (as in
/// PyTorch's `DataParallel`), and the running statistics the model keeps are those of
/// the first device's shard: the replicas' are overwritten by the model's at every step.
///
/// Each device's work is issued from a thread of its own, and nothing is read back to
/// the host until every shard's backward pass is queued, so the devices run
/// concurrently even where one device's kernels wait on the host (cuDNN's ordering). The same device may appear more than
/// once (several replicas on one device); with one device this is plain training.
pub struct DataParallel<B: AutodiffBackend, M> {
    devices: Vec<B::Device>,
    /// One replica per device after the first, with its own buffers (BatchNorm running
    /// statistics) so that copying weights into it never touches the model.
    replicas: Vec<M>,
    /// The loss scale (mixed precision's float16; 1 otherwise): each shard's loss is
    /// multiplied by it before its backward pass.
    loss_scale: f64,
}

impl<B: AutodiffBackend, M: AutodiffModule<B>> DataParallel<B, M> {
    /// Replicas for `devices[1..]`, made by `init` on each device (their weights are
    /// replaced by the model's at every step). `devices` must not be empty.
    pub fn new(devices: Vec<B::Device>, init: impl Fn(&B::Device) -> M) -> Self {
        let replicas = devices.iter().skip(1).map(&init).collect();
        DataParallel {
            devices,
            replicas,
            loss_scale: 1.0,
        }
    }

    /// Sets the factor every shard's loss is multiplied by before its backward pass
    /// (the gradients come out multiplied by it).
    pub fn set_loss_scale(&mut self, scale: f64) {
        self.loss_scale = scale;
    }

    /// The devices, the model's first.
    pub fn devices(&self) -> &[B::Device] {
        &self.devices
    }

    /// Gradient, mean loss and outputs of a mini-batch of `n` items for `model` (which
    /// must live on the first device). `shard(replica, range, device)` runs the forward
    /// pass of items `range` on `device` with `replica` and returns their mean loss (one
    /// element) and their outputs (`[range.len(), k]`).
    ///
    /// The first shard runs on the calling thread with the model; every further shard
    /// runs on a thread of its own (scoped: all are joined before this returns), so that
    /// one device's host work (kernel launches, cuDNN's waits) never holds up another's.
    /// The gradients are summed in shard order, so the result does not depend on which
    /// thread finishes first.
    pub fn step<F>(&mut self, model: &M, n: usize, shard: F) -> ParallelStep
    where
        F: Fn(&M, Range<usize>, &B::Device) -> (Tensor<B, 1>, Tensor<B, 2>) + Sync,
        M: Send,
        M::Record: Send,
    {
        let sizes = shard_sizes(n, self.devices.len());
        let ranges: Vec<Range<usize>> = sizes
            .iter()
            .scan(0, |start, &size| {
                *start += size;
                Some(*start - size..*start)
            })
            .collect();
        let main = &self.devices[0];
        let scale = |size: usize| size as f64 / n as f64 * self.loss_scale;
        let shard = &shard;
        // The replicas' jobs: the model's current weights (copied on this thread, which
        // owns the model) and the replica to load them into.
        let busy = ranges.len().saturating_sub(1);
        let jobs: Vec<(M, M::Record)> = self
            .replicas
            .drain(..busy)
            .map(|replica| (replica, model.clone().into_record()))
            .collect();
        let replica_step = |(((replica, record), range), device): ReplicaJob<'_, B, M>| {
            let size = range.len();
            let replica = replica.load_record(record).map(&mut FreshLeaves);
            let (loss, outputs) = shard(&replica, range, device);
            let scaled = loss.clone().mul_scalar(scale(size));
            let grads = GradientsParams::from_grads::<B, M>(scaled.backward(), &replica)
                .to_device::<B, M>(main, &replica);
            (replica, (size, loss, outputs.detach()), grads)
        };
        let first_step = || {
            ranges.first().map(|range| {
                let size = range.len();
                let (loss, outputs) = shard(model, range.clone(), main);
                let scaled = if ranges.len() > 1 || self.loss_scale != 1.0 {
                    loss.clone().mul_scalar(scale(size))
                } else {
                    loss.clone()
                };
                let grads = GradientsParams::from_grads::<B, M>(scaled.backward(), model);
                ((size, loss, outputs.detach()), grads)
            })
        };
        let work: Vec<ReplicaJob<'_, B, M>> = jobs
            .into_iter()
            .zip(ranges.iter().skip(1).cloned())
            .zip(self.devices.iter().skip(1))
            .collect();
        // Replicas on other devices run on threads of their own. Replicas on the model's
        // own device (the CPU's tests, `cuda:0,0`) run after the model's shard on this
        // thread: that device's kernels already use all of it, and oneDNN's CPU kernels
        // called from two threads at once gave results that differed from run to run.
        let (first, rest) = if work.iter().any(|(_, device)| *device != main) {
            std::thread::scope(|scope| {
                let replica_step = &replica_step;
                let handles: Vec<_> = work
                    .into_iter()
                    .map(|job| scope.spawn(move || replica_step(job)))
                    .collect();
                let first = first_step();
                let rest: Vec<_> = handles
                    .into_iter()
                    .map(|h| h.join().unwrap_or_else(|e| std::panic::resume_unwind(e)))
                    .collect();
                (first, rest)
            })
        } else {
            let first = first_step();
            (first, work.into_iter().map(replica_step).collect())
        };
        let Some((first, grads)) = first else {
            return self.finish(n, Vec::new(), GradientsParams::new());
        };
        if rest.is_empty() {
            return self.finish(n, vec![first], grads);
        }
        let mut accumulator = GradientsAccumulator::<M>::new();
        accumulator.accumulate::<B>(model, grads);
        let mut pending = vec![first];
        let mut used = Vec::with_capacity(rest.len());
        for (replica, out, grads) in rest {
            accumulator.accumulate::<B>(model, grads);
            pending.push(out);
            used.push(replica);
        }
        // Back in device order, before the replicas this step did not need.
        self.replicas.splice(0..0, used);
        self.finish(n, pending, accumulator.grads())
    }

    /// Read the losses and outputs back once all the work is queued.
    fn finish(
        &self,
        n: usize,
        pending: Vec<(usize, Tensor<B, 1>, Tensor<B, 2>)>,
        grads: GradientsParams,
    ) -> ParallelStep {
        let single = pending.len() == 1;
        let mut loss = 0.0;
        let mut outputs = Vec::new();
        for (size, l, out) in pending {
            let l: f64 = l.into_scalar().elem();
            loss += if single {
                l
            } else {
                l * size as f64 / n as f64
            };
            outputs.extend(host_f32(out));
        }
        ParallelStep {
            grads,
            loss,
            outputs,
        }
    }
}

/// Gives every trainable parameter of a replica a fresh autodiff leaf (same values, same
/// id), so that a replica on the model's own device never shares graph nodes with the
/// model; buffers (no gradient) are left alone.
struct FreshLeaves;

impl<B: AutodiffBackend> ModuleMapper<B> for FreshLeaves {
    fn map_float<const D: usize>(&mut self, param: Param<Tensor<B, D>>) -> Param<Tensor<B, D>> {
        let (id, tensor, mapper) = param.consume();
        let tensor = if tensor.is_require_grad() {
            tensor.detach().require_grad()
        } else {
            tensor
        };
        Param::from_mapped_value(id, tensor, mapper)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use burn::module::Module;
    use burn::optim::{AdamConfig, Optimizer, SgdConfig};
    use burn::tensor::backend::Backend;
    use burn::tensor::TensorData;

    use crate::loader::Batch;
    use crate::train::epoch::shard_images;
    use crate::train::loss::batch_loss;
    use crate::train::optim::all_finite;
    use resnet::model::{ResNet, ResNetConfig};
    use resnet::Head;

    type Cpu = burn::backend::Flex;
    type CpuAd = burn::backend::Autodiff<burn::backend::Flex>;

    #[test]
    fn shards_are_contiguous_even_and_never_empty() {
        assert_eq!(shard_sizes(8, 2), vec![4, 4]);
        assert_eq!(shard_sizes(7, 3), vec![3, 2, 2]);
        assert_eq!(shard_sizes(5, 1), vec![5]);
        assert_eq!(shard_sizes(2, 4), vec![1, 1]);
        assert_eq!(shard_sizes(0, 2), Vec::<usize>::new());
        for n in 1..20 {
            for k in 1..6 {
                let s = shard_sizes(n, k);
                assert_eq!(s.iter().sum::<usize>(), n);
                assert_eq!(s.len(), k.min(n));
                assert!(s.iter().all(|&x| x > 0));
                assert!(s.iter().max().unwrap() - s.iter().min().unwrap() <= 1);
            }
        }
    }

    fn max_diff(a: &[f32], b: &[f32]) -> f32 {
        assert_eq!(a.len(), b.len());
        a.iter()
            .zip(b)
            .map(|(x, y)| (x - y).abs())
            .fold(0.0, f32::max)
    }

    #[test]
    fn sharded_gradients_equal_the_full_batch_gradient() {
        use burn::nn::{Linear, LinearConfig};
        let device: burn::tensor::Device<CpuAd> = Default::default();
        CpuAd::seed(&device, 3);
        let (n, k, classes) = (7, 6, 3);
        let mut model: Linear<CpuAd> = LinearConfig::new(k, classes).init(&device);
        let xs: Vec<f32> = (0..n * k)
            .map(|i| ((i * 37 % 11) as f32 - 5.0) * 0.3)
            .collect();
        let labels: Vec<Vec<f32>> = (0..n).map(|i| vec![(i % classes) as f32]).collect();
        let forward = |m: &Linear<CpuAd>, r: Range<usize>, d: &burn::tensor::Device<CpuAd>| {
            let x = Tensor::<CpuAd, 2>::from_data(
                TensorData::new(xs[r.start * k..r.end * k].to_vec(), [r.len(), k]),
                d,
            );
            let logits = m.forward(x);
            let loss = batch_loss(logits.clone(), &labels[r], classes, Head::Softmax, None, d);
            (loss, logits)
        };
        let init = |d: &burn::tensor::Device<CpuAd>| LinearConfig::new(k, classes).init(d);
        let mut single = DataParallel::new(vec![device], init);
        // Two and three replicas of the CPU device: shards 4+3 and 3+2+2.
        let mut split = [
            DataParallel::new(vec![device; 2], init),
            DataParallel::new(vec![device; 3], init),
        ];
        let mut optim = SgdConfig::new().init::<CpuAd, Linear<CpuAd>>();
        let grad = |g: &GradientsParams, m: &Linear<CpuAd>| {
            let w = g.get::<Cpu, 2>(m.weight.id).unwrap();
            let b = g.get::<Cpu, 1>(m.bias.as_ref().unwrap().id).unwrap();
            let mut v = host_f32(w);
            v.extend(host_f32(b));
            v
        };
        for step in 0..3 {
            let full = single.step(&model, n, forward);
            let want = grad(&full.grads, &model);
            assert!(want.iter().any(|g| g.abs() > 1e-3), "{want:?}");
            for dp in split.iter_mut() {
                let part = dp.step(&model, n, forward);
                let got = grad(&part.grads, &model);
                let d = max_diff(&got, &want);
                assert!(
                    d < 1e-5,
                    "step {step}, {} devices: gradient differs by {d}",
                    dp.devices().len()
                );
                assert!(
                    (part.loss - full.loss).abs() < 1e-5,
                    "{} vs {}",
                    part.loss,
                    full.loss
                );
                assert!(max_diff(&part.outputs, &full.outputs) < 1e-5);
                assert_eq!(part.outputs.len(), n * classes);
            }
            // The replicas must follow the updated weights at the next step.
            model = optim.step(0.5, model, full.grads);
        }
    }

    /// Replaces every weight of two or more dimensions with fixed He-uniform values from
    /// a seeded LCG: tests run in parallel and share burn's global RNG, so a seeded
    /// `init` alone does not give the same weights in two runs.
    struct FixedInit(u64);

    impl<B: Backend> ModuleMapper<B> for FixedInit {
        fn map_float<const D: usize>(&mut self, param: Param<Tensor<B, D>>) -> Param<Tensor<B, D>> {
            let (id, tensor, mapper) = param.consume();
            if D < 2 {
                return Param::from_mapped_value(id, tensor, mapper);
            }
            let dims = tensor.dims();
            let n: usize = dims.iter().product();
            // Conv [out, in, kh, kw]: fan-in in·kh·kw; Linear [in, out]: fan-in in.
            let fan_in = if D == 4 { n / dims[0] } else { dims[0] };
            let bound = (6.0 / fan_in as f64).sqrt();
            let values: Vec<f32> = (0..n)
                .map(|_| {
                    self.0 = self
                        .0
                        .wrapping_mul(6364136223846793005)
                        .wrapping_add(1442695040888963407);
                    let u = (self.0 >> 11) as f64 / (1u64 << 53) as f64;
                    ((2.0 * u - 1.0) * bound) as f32
                })
                .collect();
            let fixed = Tensor::<B, D>::from_data(TensorData::new(values, dims), &tensor.device());
            let fixed = if tensor.is_require_grad() {
                fixed.require_grad()
            } else {
                fixed
            };
            Param::from_mapped_value(id, fixed, mapper)
        }
    }

    /// Data-parallel training of a tiny ResNet-18 over two replicas of the CPU device.
    fn data_parallel_losses(seed: u64) -> Vec<f64> {
        let device: burn::tensor::Device<CpuAd> = Default::default();
        let cfg = ResNetConfig::new(18, 2);
        let mut model: ResNet<CpuAd> = cfg.init(&device).map(&mut FixedInit(seed));
        let bias = Tensor::<CpuAd, 1>::zeros([2], &device);
        model.fc.bias = Some(Param::from_tensor(bias));
        let mut dp = DataParallel::new(vec![device; 2], |d| cfg.init(d));
        let mut optim = AdamConfig::new().init::<CpuAd, ResNet<CpuAd>>();
        // Eight 3×32×32 images, dark (label 0) and bright (label 1): shards of 4 + 4.
        let (n, side) = (8, 32);
        let len = 3 * side * side;
        let mut pixels = Vec::with_capacity(n * len);
        for i in 0..n {
            let v = if i % 2 == 0 { -1.5f32 } else { 1.5 };
            pixels.extend((0..len).map(|k| v + ((k + i) % 7) as f32 * 0.05));
        }
        let labels: Vec<Vec<f32>> = (0..n).map(|i| vec![(i % 2) as f32]).collect();
        let batch = Batch {
            images: pixels,
            labels,
            indices: (0..n).collect(),
            n,
            ids: (0..n as u64).collect(),
            upscaled: Vec::new(),
        };
        let mut losses = Vec::new();
        for _ in 0..8 {
            let out = dp.step(&model, n, |m, r, d| {
                let x = shard_images::<CpuAd>(&batch, r.clone(), [3, side, side], d);
                let logits = m.forward(x);
                let loss = batch_loss(logits.clone(), &batch.labels[r], 2, Head::Softmax, None, d);
                (loss, logits)
            });
            losses.push(out.loss);
            model = optim.step(0.001, model, out.grads);
        }
        assert!(all_finite(&model.valid()));
        losses
    }

    #[test]
    fn data_parallel_resnet_learns_and_is_deterministic() {
        let a = data_parallel_losses(11);
        assert!(a.iter().all(|l| l.is_finite()), "{a:?}");
        assert!(a[7] < a[0] * 0.6, "loss did not decrease enough: {a:?}");
        let b = data_parallel_losses(11);
        assert_eq!(a, b, "same seed, different losses");
    }
}
