//! oneDNN's CPU convolution and batch normalisation kernels (what PyTorch uses on the CPU)
//! for plain f32 NCHW slices, with oneDNN loaded **at run time** (`libdnnl.so.2`, the v2 C
//! API, e.g. Debian's `libdnnl2` 2.6.3): nothing links against it at build time, and
//! [`Dnnl::get`] returns `Err` (saying why) where it is missing, so a caller can fall back
//! to its own kernels. The environment variable `ONEDNN_LIBRARY` may name another file.
//!
//! # Layout
//! Callers pass contiguous row-major NCHW activations and OIHW weights. Inside, each pass
//! runs the primitive in the [`Layout`] that measured fastest on the ResNet-18 shapes
//! (see [`Layout::choose`]), reordering to and from the caller's layout around it;
//! the reorders' time is part of what was measured.
//!
//! # Caching
//! A primitive descriptor, its primitive, the reorders and the internal (blocked) buffers
//! are created once per (pass, layout, shape) and cached for the life of the process.
//! Weights are never cached: they change every training step.
//!
//! # Threading
//! oneDNN primitives may be executed from several threads, but a stream may not; and this
//! build of oneDNN (Debian's) parallelises every primitive with OpenMP (`libgomp`) over all
//! cores. So every call takes one process-wide mutex around the stream and the cache: calls
//! from several threads (e.g. a rayon pool) run one at a time, each using all cores, rather
//! than oversubscribing the cores with one OpenMP team per calling thread (libgomp keeps a
//! team per calling thread). Measured on 2 cores: a 128×28×28 3×3 forward at batch 16 took
//! 49 ms per call from one thread and 41 ms per call from two threads at once (no slowdown).
//! Every primitive uses a user-managed scratchpad owned by its plan
//! (`dnnl_scratchpad_mode_user`): oneDNN's default scratchpad is thread-local, so a cached
//! primitive executed on a thread other than its creator's failed (`invalid_arguments`) or
//! could get another primitive's smaller buffer; see [`Dnnl::scratchpad_bytes`].
//!
//! # Outputs without a zero-fill pass
//! The `*_vec` calls, the fused convolutions and the batch norms return outputs allocated
//! with `Vec::with_capacity` and handed to oneDNN uninitialised; their length is set only
//! after the primitive (or the reorder to the caller's layout) that writes them succeeded.
//! oneDNN writes every element of a destination memory, and these are dense plain layouts
//! of exactly the output's size (the argument in `sys::run`).
//!
//! OpenMP threads spin a while after each primitive; a caller whose own pool then competes
//! for the cores can set `OMP_WAIT_POLICY=passive`, and `OMP_NUM_THREADS` caps oneDNN's
//! threads.

use std::collections::HashMap;
use std::sync::{Mutex, OnceLock};

mod batch_norm;
mod sys;

pub use batch_norm::{BnBackward, BnForward, BnReluForward};

use sys::{arg, prop, tag, Api, ConvArgs, Data, Engine, Memory, MemoryDesc, OpDesc, PrimDesc};
use sys::{Primitive, Step, Stream};

/// Layout a convolution primitive runs in (the caller's memory is always NCHW/OIHW).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Layout {
    /// Activations `nchw`, weights `oihw`: no reorders.
    Plain,
    /// Activations `nhwc`, weights as the primitive prefers; reorders around it.
    Nhwc,
    /// Everything `any` (blocked, e.g. `nChw16c`/`OIhw16i16o` on AVX-512); reorders around it.
    Blocked,
}

/// A convolution pass.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Pass {
    /// `y = conv(x, w) + b`.
    Forward,
    /// `dx` from `dy` and `w`.
    BackwardData,
    /// `dw` (and `db`) from `x` and `dy`.
    BackwardWeights,
}

impl Layout {
    /// The layout a pass uses by default, from `examples/conv_bench.rs` over ResNet-18 at
    /// batch 16, 224², reorders included (2-core AVX-512 EPYC, three runs, all while a
    /// workspace build shared the cores, so ±15%): blocked (`any`) had the lowest network
    /// sum per training step in every run (2207 / 2317 ms against plain 2414 / 3016 and nhwc
    /// 2519 / 2331, minimum of 7); its clearest win is backward-weights (698–741 ms against
    /// 958–1545 plain). The exception is backward-data with fewer than 16 input channels
    /// (the stem, whose input gradient training does not need anyway): 54–58 ms plain
    /// against 176–213 blocked or nhwc.
    pub fn choose(pass: Pass, geom: &ConvGeom) -> Layout {
        match pass {
            Pass::BackwardData if geom.x_dims[1] < 16 => Layout::Plain,
            Pass::Forward | Pass::BackwardData | Pass::BackwardWeights => Layout::Blocked,
        }
    }
}

/// Geometry of a 2-D convolution with groups 1 and symmetric padding.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct ConvGeom {
    /// `[n, c, h, w]` of the input.
    pub x_dims: [usize; 4],
    /// `[k, c, r, s]` of the weights.
    pub w_dims: [usize; 4],
    /// `[sh, sw]`.
    pub stride: [usize; 2],
    /// `[ph, pw]`, applied on both sides.
    pub padding: [usize; 2],
    /// `[dh, dw]`, PyTorch's convention: 1 is an ordinary convolution.
    pub dilation: [usize; 2],
}

/// Output dims `[n, k, oh, ow]` of a convolution, or why the shapes do not fit.
pub fn conv_output_dims(
    x_dims: [usize; 4],
    w_dims: [usize; 4],
    stride: [usize; 2],
    padding: [usize; 2],
    dilation: [usize; 2],
) -> Result<[usize; 4], String> {
    let [n, c, h, w] = x_dims;
    let [k, wc, r, s] = w_dims;
    if c != wc {
        return Err(format!("input has {c} channels, weights expect {wc}"));
    }
    if stride.contains(&0) || dilation.contains(&0) || x_dims.contains(&0) || w_dims.contains(&0) {
        return Err(format!(
            "zero in {x_dims:?} {w_dims:?} stride {stride:?} dilation {dilation:?}"
        ));
    }
    let out = |len: usize, ker: usize, i: usize| {
        let span = dilation[i] * (ker - 1) + 1;
        let padded = len + 2 * padding[i];
        (padded >= span).then(|| (padded - span) / stride[i] + 1)
    };
    match (out(h, r, 0), out(w, s, 1)) {
        (Some(oh), Some(ow)) => Ok([n, k, oh, ow]),
        _ => Err(format!(
            "kernel {r}x{s} (dilation {dilation:?}) larger than padded input {h}x{w}"
        )),
    }
}

impl ConvGeom {
    /// Output dims `[n, k, oh, ow]`.
    pub fn y_dims(&self) -> Result<[usize; 4], String> {
        conv_output_dims(
            self.x_dims,
            self.w_dims,
            self.stride,
            self.padding,
            self.dilation,
        )
    }

    fn args(&self) -> ConvArgs {
        let p = self.padding.map(|v| v as i64);
        ConvArgs {
            strides: self.stride.map(|v| v as i64),
            // oneDNN counts dilation from 0.
            dilates: self.dilation.map(|v| v as i64 - 1),
            pad_l: p,
            pad_r: p,
        }
    }
}

fn numel(d: [usize; 4]) -> usize {
    d.iter().product()
}

fn dims_i64(d: [usize; 4]) -> [i64; 4] {
    d.map(|v| v as i64)
}

fn check_len(what: &str, got: usize, want: usize) -> Result<(), String> {
    if got == want {
        Ok(())
    } else {
        Err(format!("{what}: {got} floats, expected {want}"))
    }
}

/// Training passes; forward inference on the caller's plain weights (`Infer`) or on
/// weights prepared by [`Dnnl::prepare_conv`] (`Prepared`; `PrepareWeights` is the plan that
/// reorders them).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
enum Mode {
    Train,
    Infer,
    Prepared,
    PrepareWeights,
}

/// Post-ops fused into an inference convolution, applied in this order:
/// `y = conv(x, w) + bias`, then `y += residual` (`sum`), then `y = max(y, 0)` (`relu`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct PostOps {
    /// Add a residual of the output's shape (oneDNN's `sum` post-op).
    pub sum: bool,
    /// ReLU after everything else.
    pub relu: bool,
}

impl PostOps {
    fn ops(self) -> Vec<sys::PostOp> {
        let mut v = Vec::new();
        if self.sum {
            v.push(sys::PostOp::Sum);
        }
        if self.relu {
            v.push(sys::PostOp::Relu);
        }
        v
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
enum Key {
    Conv {
        pass: Pass,
        layout: Layout,
        geom: ConvGeom,
        bias: bool,
        mode: Mode,
        post: PostOps,
    },
    Bn {
        backward: bool,
        dims: [usize; 4],
        eps_bits: u32,
        relu: bool,
    },
}

/// A reorder primitive and its scratchpad (user-managed, see `sys::Attr`).
struct Reorder {
    prim: Primitive,
    scratch: Option<Memory>,
}

impl Reorder {
    fn new(
        api: &'static Api,
        src: &MemoryDesc,
        dst: &MemoryDesc,
        engine: &Engine,
    ) -> Result<Reorder, String> {
        let pd = PrimDesc::reorder(api, src, dst, engine)?;
        let scratch = match pd.arg_md(arg::SCRATCHPAD) {
            Some(md) => Some(Memory::owned(api, &md, engine)?),
            None => None,
        };
        Ok(Reorder {
            prim: pd.primitive()?,
            scratch,
        })
    }

    /// The step `from → to` (memory indices), appending the scratchpad to `mems`/`data`.
    fn step<'p>(
        &'p self,
        from: usize,
        to: usize,
        mems: &mut Vec<&'p Memory>,
        data: &mut Vec<Data<'_>>,
    ) -> Step<'p> {
        let mut args = vec![(arg::FROM, from), (arg::TO, to)];
        if let Some(m) = &self.scratch {
            args.push((arg::SCRATCHPAD, mems.len()));
            mems.push(m);
            data.push(Data::Owned);
        }
        Step {
            prim: &self.prim,
            args,
            writes: vec![to],
        }
    }
}

/// One argument of a cached plan: the caller's layout, and where the primitive wants
/// another, an internal buffer and the reorder between them.
struct Slot {
    arg: i32,
    user: Memory,
    /// The caller-side layout of `user`.
    md: MemoryDesc,
    inner: Option<(Memory, Reorder)>,
    out: bool,
}

/// The input of a `sum` post-op: the caller's (plain) residual and the reorder that writes
/// it into the destination slot's internal buffer before the primitive runs.
struct Residual {
    dst_slot: usize,
    user: Memory,
    reorder: Reorder,
}

/// A cached primitive with its argument slots.
struct Plan {
    prim: Primitive,
    slots: Vec<Slot>,
    residual: Option<Residual>,
    /// Arguments the primitive needs that the caller never sees (e.g. a workspace).
    extra: Vec<(i32, Memory)>,
    impl_name: String,
    // Descriptors are kept alive with their primitives (the forward hint of a backward
    // primitive included), though oneDNN copies what it needs.
    _pd: PrimDesc,
    _hint: Option<PrimDesc>,
}

impl Plan {
    fn new(
        api: &'static Api,
        engine: &Engine,
        pd: PrimDesc,
        hint: Option<PrimDesc>,
        specs: &[(i32, MemoryDesc, bool)],
    ) -> Result<Plan, String> {
        Self::with_residual(api, engine, pd, hint, specs, None)
    }

    /// A plan whose argument `residual_into` (an output) is initialised from one more
    /// caller input, the last in [`Plan::run`]'s data, before the primitive runs: the
    /// destination of a primitive with a `sum` post-op. That argument always gets an
    /// internal buffer (a plain copy where the layouts agree), so the caller's output is
    /// written only by the final reorder and never read.
    fn with_residual(
        api: &'static Api,
        engine: &Engine,
        pd: PrimDesc,
        hint: Option<PrimDesc>,
        specs: &[(i32, MemoryDesc, bool)],
        residual_into: Option<i32>,
    ) -> Result<Plan, String> {
        let mut slots = Vec::new();
        let mut residual = None;
        for (a, user_md, out) in specs {
            let want = pd
                .arg_md(*a)
                .ok_or_else(|| format!("primitive {} takes no argument {a}", pd.impl_name()))?;
            let user = Memory::slot(api, user_md, engine)?;
            let is_residual = residual_into == Some(*a);
            let inner = if api.md_equal(&want, user_md) && !is_residual {
                None
            } else {
                let r = if *out {
                    Reorder::new(api, &want, user_md, engine)?
                } else {
                    Reorder::new(api, user_md, &want, engine)?
                };
                Some((Memory::owned(api, &want, engine)?, r))
            };
            if is_residual {
                residual = Some(Residual {
                    dst_slot: slots.len(),
                    user: Memory::slot(api, user_md, engine)?,
                    reorder: Reorder::new(api, user_md, &want, engine)?,
                });
            }
            slots.push(Slot {
                arg: *a,
                user,
                md: *user_md,
                inner,
                out: *out,
            });
        }
        if residual_into.is_some() && residual.is_none() {
            return Err("internal: residual into an argument the plan lacks".into());
        }
        // Arguments the primitive reports that the caller does not pass: its scratchpad, a
        // workspace, and the shift of a batch norm backward with `dnnl_use_shift`, which
        // oneDNN 2.6 insists on being given though the gradients do not depend on it (tests
        // check they don't).
        let mut extra = Vec::new();
        for a in [arg::SCRATCHPAD, arg::WORKSPACE, arg::SHIFT] {
            if specs.iter().any(|s| s.0 == a) {
                continue;
            }
            if let Some(md) = pd.arg_md(a) {
                extra.push((a, Memory::owned(api, &md, engine)?));
            }
        }
        Ok(Plan {
            prim: pd.primitive()?,
            slots,
            residual,
            extra,
            impl_name: pd.impl_name(),
            _pd: pd,
            _hint: hint,
        })
    }

    /// Bytes of slot `i`'s caller-side layout.
    fn user_bytes(&self, i: usize) -> usize {
        self.slots[i].user.bytes()
    }

    /// Runs the plan with `data[i]` bound to slot `i` (and, for a plan with a residual, the
    /// residual last).
    fn run(&self, api: &Api, stream: &mut Stream, data: Vec<Data<'_>>) -> Result<(), String> {
        let n = self.slots.len();
        if data.len() != n + usize::from(self.residual.is_some()) {
            return Err("internal: wrong number of arguments".into());
        }
        let mut mems: Vec<&Memory> = self.slots.iter().map(|s| &s.user).collect();
        if let Some(r) = &self.residual {
            mems.push(&r.user);
        }
        let mut data = data;
        let mut main_args = Vec::with_capacity(n + self.extra.len());
        let mut main_writes = Vec::new();
        let mut before = Vec::new();
        let mut after = Vec::new();
        for (i, s) in self.slots.iter().enumerate() {
            match &s.inner {
                None => {
                    main_args.push((s.arg, i));
                    if s.out {
                        main_writes.push(i);
                    }
                }
                Some((m, reorder)) => {
                    let j = mems.len();
                    mems.push(m);
                    data.push(Data::Owned);
                    main_args.push((s.arg, j));
                    if s.out {
                        after.push(reorder.step(j, i, &mut mems, &mut data));
                    } else {
                        before.push(reorder.step(i, j, &mut mems, &mut data));
                    }
                    if let Some(r) = self.residual.as_ref().filter(|r| r.dst_slot == i) {
                        before.push(r.reorder.step(n, j, &mut mems, &mut data));
                    }
                }
            }
        }
        for (a, m) in &self.extra {
            main_args.push((*a, mems.len()));
            mems.push(m);
            data.push(Data::Owned);
        }
        before.push(Step {
            prim: &self.prim,
            args: main_args,
            writes: main_writes,
        });
        before.extend(after);
        sys::run(api, stream, &mems, &mut data, &before)
    }
}

struct State {
    stream: Stream,
    plans: HashMap<Key, Plan>,
}

/// The loaded library, its CPU engine, and the primitive cache. See the crate docs for
/// threading.
pub struct Dnnl {
    api: &'static Api,
    engine: Engine,
    state: Mutex<State>,
    version: String,
    runtime: &'static str,
}

impl Dnnl {
    /// The process's oneDNN, loaded on first use; `Err` says why it is unavailable
    /// (library not found, symbol missing, wrong major version, engine creation failed).
    pub fn get() -> Result<&'static Dnnl, String> {
        static CELL: OnceLock<Result<Dnnl, String>> = OnceLock::new();
        CELL.get_or_init(Dnnl::load).as_ref().map_err(Clone::clone)
    }

    fn load() -> Result<Dnnl, String> {
        let path = std::env::var("ONEDNN_LIBRARY").unwrap_or_else(|_| "libdnnl.so.2".into());
        // Leaked once per process: primitives keep `&'static Api`.
        let api: &'static Api = Box::leak(Box::new(Api::load(&path)?));
        let (major, minor, patch, rt) = api.version();
        if major != 2 {
            return Err(format!(
                "{path} is oneDNN {major}.{minor}.{patch}; this crate needs 2.x"
            ));
        }
        let engine = api.engine()?;
        let stream = api.stream(&engine)?;
        // dnnl_runtime_* values from dnnl_types.h.
        let runtime = match rt {
            1 => "sequential",
            2 => "OpenMP",
            4 => "TBB",
            8 => "threadpool",
            _ => "unknown",
        };
        Ok(Dnnl {
            api,
            engine,
            state: Mutex::new(State {
                stream,
                plans: HashMap::new(),
            }),
            version: format!("{major}.{minor}.{patch}"),
            runtime,
        })
    }

    /// oneDNN's version, e.g. `"2.6.3"`.
    pub fn version(&self) -> &str {
        &self.version
    }

    /// The CPU threading runtime oneDNN was built with (`"OpenMP"` for Debian's).
    pub fn cpu_runtime(&self) -> &'static str {
        self.runtime
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        // A panic while holding the lock leaves no half-updated invariant the next call
        // relies on (plans are inserted whole), so poisoning is ignored.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn conv_md(&self, d: [usize; 4], t: i32) -> Result<MemoryDesc, String> {
        self.api.md(&dims_i64(d), t)
    }

    fn conv_plan(&self, key: &Key) -> Result<Plan, String> {
        let Key::Conv {
            pass,
            layout,
            geom,
            bias,
            mode,
            post,
        } = *key
        else {
            unreachable!("conv_plan with a non-conv key")
        };
        let api = self.api;
        let y_dims = geom.y_dims()?;
        let (act, wt) = match layout {
            Layout::Plain => (tag::ABCD, tag::ABCD),
            Layout::Nhwc => (tag::ACDB, tag::ANY),
            Layout::Blocked => (tag::ANY, tag::ANY),
        };
        let x = self.conv_md(geom.x_dims, act)?;
        let w = self.conv_md(geom.w_dims, wt)?;
        let y = self.conv_md(y_dims, act)?;
        let b = api.md(&[geom.w_dims[0] as i64], tag::A)?;
        let ux = self.conv_md(geom.x_dims, tag::ABCD)?;
        let uw = self.conv_md(geom.w_dims, tag::ABCD)?;
        let uy = self.conv_md(y_dims, tag::ABCD)?;
        let c = geom.args();
        let fprop = if mode == Mode::Train {
            prop::FORWARD_TRAINING
        } else {
            prop::FORWARD_INFERENCE
        };
        let fwd = OpDesc::conv_forward(api, fprop, &x, &w, bias.then_some(&b), &y, &c)?;
        let attr = if post == PostOps::default() {
            None
        } else {
            Some(sys::Attr::post_ops(api, &post.ops())?)
        };
        let fpd = PrimDesc::with_attr(api, &fwd, attr.as_ref(), &self.engine, None)?;
        drop(attr); // oneDNN copied it into the primitive descriptor
        if mode != Mode::Train {
            // With prepared weights the caller's weights are already in (or go into) the
            // primitive's own layout; with `Infer` they are plain and reordered per call.
            let pw = fpd
                .arg_md(arg::WEIGHTS)
                .ok_or("convolution has no weights argument")?;
            if mode == Mode::PrepareWeights {
                let rpd = PrimDesc::reorder(api, &uw, &pw, &self.engine)?;
                let specs = [(arg::FROM, uw, false), (arg::TO, pw, true)];
                return Plan::new(api, &self.engine, rpd, None, &specs);
            }
            let wmd = if mode == Mode::Prepared { pw } else { uw };
            let mut specs = vec![(arg::SRC, ux, false), (arg::WEIGHTS, wmd, false)];
            if bias {
                specs.push((arg::BIAS, b, false));
            }
            specs.push((arg::DST, uy, true));
            let residual = post.sum.then_some(arg::DST);
            return Plan::with_residual(api, &self.engine, fpd, None, &specs, residual);
        }
        match pass {
            Pass::Forward => {
                let mut specs = vec![(arg::SRC, ux, false), (arg::WEIGHTS, uw, false)];
                if bias {
                    specs.push((arg::BIAS, b, false));
                }
                specs.push((arg::DST, uy, true));
                Plan::new(api, &self.engine, fpd, None, &specs)
            }
            Pass::BackwardData => {
                let op = OpDesc::conv_backward_data(api, &x, &w, &y, &c)?;
                let pd = PrimDesc::new(api, &op, &self.engine, Some(&fpd))?;
                let specs = [
                    (arg::DIFF_DST, uy, false),
                    (arg::WEIGHTS, uw, false),
                    (arg::DIFF_SRC, ux, true),
                ];
                Plan::new(api, &self.engine, pd, Some(fpd), &specs)
            }
            Pass::BackwardWeights => {
                let op = OpDesc::conv_backward_weights(api, &x, &w, bias.then_some(&b), &y, &c)?;
                let pd = PrimDesc::new(api, &op, &self.engine, Some(&fpd))?;
                let mut specs = vec![
                    (arg::SRC, ux, false),
                    (arg::DIFF_DST, uy, false),
                    (arg::DIFF_WEIGHTS, uw, true),
                ];
                if bias {
                    specs.push((arg::DIFF_BIAS, b, true));
                }
                Plan::new(api, &self.engine, pd, Some(fpd), &specs)
            }
        }
    }

    fn run_plan(&self, key: Key, data: Vec<Data<'_>>) -> Result<(), String> {
        self.with_plan(key, |api, stream, plan| plan.run(api, stream, data))
    }

    /// Runs `f` on the cached (or new) plan for `key`, holding the lock.
    fn with_plan<T>(
        &self,
        key: Key,
        f: impl FnOnce(&Api, &mut Stream, &Plan) -> Result<T, String>,
    ) -> Result<T, String> {
        let mut guard = self.lock();
        let state = &mut *guard;
        let plan = match state.plans.entry(key) {
            std::collections::hash_map::Entry::Occupied(e) => e.into_mut(),
            std::collections::hash_map::Entry::Vacant(e) => {
                let plan = match key {
                    Key::Conv { .. } => self.conv_plan(&key)?,
                    Key::Bn { .. } => self.bn_plan(&key)?,
                };
                e.insert(plan)
            }
        };
        f(self.api, &mut state.stream, plan)
    }

    /// Reorders inference weights once into the layout oneDNN's forward-inference
    /// primitive wants, for [`Dnnl::conv_forward_prepared`]: a caller running the same
    /// weights many times (inference) saves the weights' reorder on every call. Training
    /// must not use this (its weights change every step).
    pub fn prepare_conv(
        &self,
        geom: &ConvGeom,
        w: &[f32],
        bias: Option<&[f32]>,
    ) -> Result<PreparedConv, String> {
        self.prepare_conv_for(geom, w, bias, PostOps::default())
    }

    /// [`Dnnl::prepare_conv`] for the primitive with post-ops `post`. The weights' layout
    /// is that primitive's; [`Dnnl::conv_forward_fused_prepared`] with other post-ops works
    /// as long as its primitive wants the same layout (on AVX-512 f32 they all do: the
    /// tests run every combination on weights from [`Dnnl::prepare_conv`]) and returns an
    /// `Err` saying so otherwise.
    pub fn prepare_conv_for(
        &self,
        geom: &ConvGeom,
        w: &[f32],
        bias: Option<&[f32]>,
        post: PostOps,
    ) -> Result<PreparedConv, String> {
        geom.y_dims()?;
        check_len("w", w.len(), numel(geom.w_dims))?;
        if let Some(b) = bias {
            check_len("bias", b.len(), geom.w_dims[0])?;
        }
        let key = Key::Conv {
            pass: Pass::Forward,
            layout: Layout::Blocked,
            geom: *geom,
            bias: bias.is_some(),
            mode: Mode::PrepareWeights,
            post,
        };
        let (weights, weights_md) = self.with_plan(key, |api, stream, plan| {
            let mut out = Vec::with_capacity(plan.user_bytes(1).div_ceil(4));
            plan.run(api, stream, vec![Data::In(w), Data::Fresh(&mut out)])?;
            Ok((out, Box::new(plan.slots[1].md)))
        })?;
        Ok(PreparedConv {
            geom: *geom,
            weights,
            weights_md,
            bias: bias.map(<[f32]>::to_vec),
        })
    }

    /// `y = conv(x, w) + bias` for inference with weights from [`Dnnl::prepare_conv`].
    pub fn conv_forward_prepared(
        &self,
        prepared: &PreparedConv,
        x: &[f32],
        y: &mut [f32],
    ) -> Result<(), String> {
        let geom = &prepared.geom;
        check_len("x", x.len(), numel(geom.x_dims))?;
        check_len("y", y.len(), numel(geom.y_dims()?))?;
        self.run_prepared(prepared, x, None, PostOps::default(), Data::Out(y))
    }

    /// [`Dnnl::conv_forward_prepared`] into a new vector (no zero-fill pass).
    pub fn conv_forward_prepared_vec(
        &self,
        prepared: &PreparedConv,
        x: &[f32],
    ) -> Result<Vec<f32>, String> {
        self.conv_forward_fused_prepared(prepared, x, None, false)
    }

    /// [`Dnnl::conv_forward_fused`] with weights (and bias) from [`Dnnl::prepare_conv`]:
    /// no per-call work on the weights. The result is a new vector (no zero-fill pass).
    pub fn conv_forward_fused_prepared(
        &self,
        prepared: &PreparedConv,
        x: &[f32],
        residual: Option<&[f32]>,
        relu: bool,
    ) -> Result<Vec<f32>, String> {
        let geom = &prepared.geom;
        let n = numel(geom.y_dims()?);
        check_len("x", x.len(), numel(geom.x_dims))?;
        if let Some(r) = residual {
            check_len("residual", r.len(), n)?;
        }
        let post = PostOps {
            sum: residual.is_some(),
            relu,
        };
        let mut y = Vec::with_capacity(n);
        self.run_prepared(prepared, x, residual, post, Data::Fresh(&mut y))?;
        check_len("y", y.len(), n)?;
        Ok(y)
    }

    /// [`Dnnl::conv_forward_prepared_vec`] on an input of `x_dims`, which may differ from
    /// the prepared geometry's in batch size and image size (the kernel, channels, stride,
    /// padding and dilation are the prepared ones): one set of prepared weights serves
    /// every batch size whose primitive wants the same weights layout. `Ok(None)` when this
    /// geometry's primitive wants another layout (prepare the weights for it).
    pub fn conv_forward_prepared_at(
        &self,
        prepared: &PreparedConv,
        x_dims: [usize; 4],
        x: &[f32],
    ) -> Result<Option<Vec<f32>>, String> {
        let geom = ConvGeom {
            x_dims,
            ..prepared.geom
        };
        if x_dims[1] != prepared.geom.x_dims[1] {
            return Err(format!(
                "input has {} channels, the weights were prepared for {}",
                x_dims[1], prepared.geom.x_dims[1]
            ));
        }
        let n = numel(geom.y_dims()?);
        check_len("x", x.len(), numel(x_dims))?;
        let mut y = Vec::with_capacity(n);
        let ran = self.run_prepared_as(
            prepared,
            &geom,
            x,
            None,
            PostOps::default(),
            Data::Fresh(&mut y),
        )?;
        if !ran {
            return Ok(None);
        }
        check_len("y", y.len(), n)?;
        Ok(Some(y))
    }

    fn run_prepared(
        &self,
        prepared: &PreparedConv,
        x: &[f32],
        residual: Option<&[f32]>,
        post: PostOps,
        y: Data<'_>,
    ) -> Result<(), String> {
        if self.run_prepared_as(prepared, &prepared.geom, x, residual, post, y)? {
            Ok(())
        } else {
            Err(format!(
                "weights were prepared for another layout than the primitive with \
                 {post:?} wants; use prepare_conv_for with these post-ops"
            ))
        }
    }

    /// Runs the prepared-weights primitive of `geom` (`false`: it wants the weights in
    /// another layout than `prepared`'s, nothing ran).
    fn run_prepared_as(
        &self,
        prepared: &PreparedConv,
        geom: &ConvGeom,
        x: &[f32],
        residual: Option<&[f32]>,
        post: PostOps,
        y: Data<'_>,
    ) -> Result<bool, String> {
        let mut data = vec![Data::In(x), Data::In(&prepared.weights)];
        if let Some(b) = &prepared.bias {
            data.push(Data::In(b));
        }
        data.push(y);
        if let Some(r) = residual {
            data.push(Data::In(r));
        }
        let key = Key::Conv {
            pass: Pass::Forward,
            layout: Layout::Blocked,
            geom: *geom,
            bias: prepared.bias.is_some(),
            mode: Mode::Prepared,
            post,
        };
        self.with_plan(key, |api, stream, plan| {
            if !api.md_equal(&plan.slots[1].md, &prepared.weights_md) {
                return Ok(false);
            }
            plan.run(api, stream, data).map(|()| true)
        })
    }

    /// Inference convolution with fused post-ops, for networks with batch norm folded into
    /// the convolutions: `y = conv(x, w) + bias`, then `y += residual` if given, then
    /// `y = max(y, 0)` if `relu`; all NCHW/OIHW, `residual` of dims [`ConvGeom::y_dims`].
    /// One oneDNN forward-inference primitive with `sum`/`eltwise_relu` post-ops (the
    /// residual is reordered into the primitive's destination buffer first). The weights
    /// are reordered on every call; see [`Dnnl::conv_forward_fused_prepared`].
    pub fn conv_forward_fused(
        &self,
        geom: &ConvGeom,
        x: &[f32],
        w: &[f32],
        bias: Option<&[f32]>,
        residual: Option<&[f32]>,
        relu: bool,
    ) -> Result<Vec<f32>, String> {
        let n = numel(geom.y_dims()?);
        check_len("x", x.len(), numel(geom.x_dims))?;
        check_len("w", w.len(), numel(geom.w_dims))?;
        let mut y = Vec::with_capacity(n);
        let mut data = vec![Data::In(x), Data::In(w)];
        if let Some(b) = bias {
            check_len("bias", b.len(), geom.w_dims[0])?;
            data.push(Data::In(b));
        }
        data.push(Data::Fresh(&mut y));
        if let Some(r) = residual {
            check_len("residual", r.len(), n)?;
            data.push(Data::In(r));
        }
        let key = Key::Conv {
            pass: Pass::Forward,
            layout: Layout::Blocked,
            geom: *geom,
            bias: bias.is_some(),
            mode: Mode::Infer,
            post: PostOps {
                sum: residual.is_some(),
                relu,
            },
        };
        self.run_plan(key, data)?;
        check_len("y", y.len(), n)?;
        Ok(y)
    }

    /// Bytes of the scratchpads owned by the cached plans (primitives and reorders).
    pub fn scratchpad_bytes(&self) -> usize {
        let g = self.lock();
        g.plans
            .values()
            .map(|p| {
                let main: usize = p
                    .extra
                    .iter()
                    .filter(|(a, _)| *a == arg::SCRATCHPAD)
                    .map(|(_, m)| m.bytes())
                    .sum();
                let reorders = p
                    .slots
                    .iter()
                    .filter_map(|s| s.inner.as_ref())
                    .map(|(_, r)| &r.scratch)
                    .chain(p.residual.as_ref().map(|r| &r.reorder.scratch))
                    .flatten()
                    .map(Memory::bytes)
                    .sum::<usize>();
                main + reorders
            })
            .sum()
    }

    /// The implementation oneDNN chose for a pass (e.g. `jit:avx512_common`), creating and
    /// caching its plan if needed.
    pub fn conv_impl_name(
        &self,
        pass: Pass,
        layout: Layout,
        geom: &ConvGeom,
    ) -> Result<String, String> {
        let key = Key::Conv {
            pass,
            layout,
            geom: *geom,
            bias: false,
            mode: Mode::Train,
            post: PostOps::default(),
        };
        let mut guard = self.lock();
        let plan = match guard.plans.entry(key) {
            std::collections::hash_map::Entry::Occupied(e) => e.into_mut(),
            std::collections::hash_map::Entry::Vacant(e) => e.insert(self.conv_plan(&key)?),
        };
        Ok(plan.impl_name.clone())
    }

    /// `y = conv(x, w) + bias` with `y` of dims [`ConvGeom::y_dims`], all NCHW/OIHW.
    pub fn conv_forward(
        &self,
        geom: &ConvGeom,
        x: &[f32],
        w: &[f32],
        bias: Option<&[f32]>,
        y: &mut [f32],
    ) -> Result<(), String> {
        self.conv_forward_with(Layout::choose(Pass::Forward, geom), geom, x, w, bias, y)
    }

    /// [`Dnnl::conv_forward`] in a given layout.
    pub fn conv_forward_with(
        &self,
        layout: Layout,
        geom: &ConvGeom,
        x: &[f32],
        w: &[f32],
        bias: Option<&[f32]>,
        y: &mut [f32],
    ) -> Result<(), String> {
        let yd = geom.y_dims()?;
        check_len("x", x.len(), numel(geom.x_dims))?;
        check_len("w", w.len(), numel(geom.w_dims))?;
        check_len("y", y.len(), numel(yd))?;
        let mut data = vec![Data::In(x), Data::In(w)];
        if let Some(b) = bias {
            check_len("bias", b.len(), geom.w_dims[0])?;
            data.push(Data::In(b));
        }
        data.push(Data::Out(y));
        let key = Key::Conv {
            pass: Pass::Forward,
            layout,
            geom: *geom,
            bias: bias.is_some(),
            mode: Mode::Train,
            post: PostOps::default(),
        };
        self.run_plan(key, data)
    }

    /// `dx` (dims `geom.x_dims`) from `dy` (dims [`ConvGeom::y_dims`]) and `w`.
    pub fn conv_backward_data(
        &self,
        geom: &ConvGeom,
        dy: &[f32],
        w: &[f32],
        dx: &mut [f32],
    ) -> Result<(), String> {
        self.conv_backward_data_with(Layout::choose(Pass::BackwardData, geom), geom, dy, w, dx)
    }

    /// [`Dnnl::conv_backward_data`] in a given layout.
    pub fn conv_backward_data_with(
        &self,
        layout: Layout,
        geom: &ConvGeom,
        dy: &[f32],
        w: &[f32],
        dx: &mut [f32],
    ) -> Result<(), String> {
        check_len("dy", dy.len(), numel(geom.y_dims()?))?;
        check_len("w", w.len(), numel(geom.w_dims))?;
        check_len("dx", dx.len(), numel(geom.x_dims))?;
        let key = Key::Conv {
            pass: Pass::BackwardData,
            layout,
            geom: *geom,
            bias: false,
            mode: Mode::Train,
            post: PostOps::default(),
        };
        self.run_plan(key, vec![Data::In(dy), Data::In(w), Data::Out(dx)])
    }

    /// `dw` (dims `geom.w_dims`) and optionally `db` (`[k]`) from `x` and `dy`.
    pub fn conv_backward_weights(
        &self,
        geom: &ConvGeom,
        x: &[f32],
        dy: &[f32],
        dw: &mut [f32],
        db: Option<&mut [f32]>,
    ) -> Result<(), String> {
        self.conv_backward_weights_with(
            Layout::choose(Pass::BackwardWeights, geom),
            geom,
            x,
            dy,
            dw,
            db,
        )
    }

    /// [`Dnnl::conv_backward_weights`] in a given layout.
    pub fn conv_backward_weights_with(
        &self,
        layout: Layout,
        geom: &ConvGeom,
        x: &[f32],
        dy: &[f32],
        dw: &mut [f32],
        db: Option<&mut [f32]>,
    ) -> Result<(), String> {
        check_len("x", x.len(), numel(geom.x_dims))?;
        check_len("dy", dy.len(), numel(geom.y_dims()?))?;
        check_len("dw", dw.len(), numel(geom.w_dims))?;
        let bias = db.is_some();
        let mut data = vec![Data::In(x), Data::In(dy), Data::Out(dw)];
        if let Some(db) = db {
            check_len("db", db.len(), geom.w_dims[0])?;
            data.push(Data::Out(db));
        }
        let key = Key::Conv {
            pass: Pass::BackwardWeights,
            layout,
            geom: *geom,
            bias,
            mode: Mode::Train,
            post: PostOps::default(),
        };
        self.run_plan(key, data)
    }

    /// [`Dnnl::conv_forward`] into a new vector: no zero-fill pass over the output
    /// (oneDNN writes every element of it; see the crate docs).
    pub fn conv_forward_vec(
        &self,
        geom: &ConvGeom,
        x: &[f32],
        w: &[f32],
        bias: Option<&[f32]>,
    ) -> Result<Vec<f32>, String> {
        let n = numel(geom.y_dims()?);
        check_len("x", x.len(), numel(geom.x_dims))?;
        check_len("w", w.len(), numel(geom.w_dims))?;
        let mut y = Vec::with_capacity(n);
        let mut data = vec![Data::In(x), Data::In(w)];
        if let Some(b) = bias {
            check_len("bias", b.len(), geom.w_dims[0])?;
            data.push(Data::In(b));
        }
        data.push(Data::Fresh(&mut y));
        let key = Key::Conv {
            pass: Pass::Forward,
            layout: Layout::choose(Pass::Forward, geom),
            geom: *geom,
            bias: bias.is_some(),
            mode: Mode::Train,
            post: PostOps::default(),
        };
        self.run_plan(key, data)?;
        check_len("y", y.len(), n)?;
        Ok(y)
    }

    /// [`Dnnl::conv_backward_data`] into a new vector (no zero-fill pass).
    pub fn conv_backward_data_vec(
        &self,
        geom: &ConvGeom,
        dy: &[f32],
        w: &[f32],
    ) -> Result<Vec<f32>, String> {
        let n = numel(geom.x_dims);
        check_len("dy", dy.len(), numel(geom.y_dims()?))?;
        check_len("w", w.len(), numel(geom.w_dims))?;
        let mut dx = Vec::with_capacity(n);
        let key = Key::Conv {
            pass: Pass::BackwardData,
            layout: Layout::choose(Pass::BackwardData, geom),
            geom: *geom,
            bias: false,
            mode: Mode::Train,
            post: PostOps::default(),
        };
        self.run_plan(key, vec![Data::In(dy), Data::In(w), Data::Fresh(&mut dx)])?;
        check_len("dx", dx.len(), n)?;
        Ok(dx)
    }

    /// [`Dnnl::conv_backward_weights`] into new vectors (no zero-fill pass): `dw`, and
    /// `db` when `with_bias`.
    pub fn conv_backward_weights_vec(
        &self,
        geom: &ConvGeom,
        x: &[f32],
        dy: &[f32],
        with_bias: bool,
    ) -> Result<(Vec<f32>, Option<Vec<f32>>), String> {
        check_len("x", x.len(), numel(geom.x_dims))?;
        check_len("dy", dy.len(), numel(geom.y_dims()?))?;
        let k = geom.w_dims[0];
        let mut dw = Vec::with_capacity(numel(geom.w_dims));
        let mut db = Vec::with_capacity(if with_bias { k } else { 0 });
        let mut data = vec![Data::In(x), Data::In(dy), Data::Fresh(&mut dw)];
        if with_bias {
            data.push(Data::Fresh(&mut db));
        }
        let key = Key::Conv {
            pass: Pass::BackwardWeights,
            layout: Layout::choose(Pass::BackwardWeights, geom),
            geom: *geom,
            bias: with_bias,
            mode: Mode::Train,
            post: PostOps::default(),
        };
        self.run_plan(key, data)?;
        check_len("dw", dw.len(), numel(geom.w_dims))?;
        if with_bias {
            check_len("db", db.len(), k)?;
        }
        Ok((dw, with_bias.then_some(db)))
    }
}

/// Convolution weights (and bias) already in the layout of oneDNN's forward-inference
/// primitive for one geometry; see [`Dnnl::prepare_conv`].
pub struct PreparedConv {
    geom: ConvGeom,
    weights: Vec<f32>,
    weights_md: Box<MemoryDesc>,
    bias: Option<Vec<f32>>,
}

impl PreparedConv {
    /// The geometry the weights were prepared for.
    pub fn geom(&self) -> &ConvGeom {
        &self.geom
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn output_dims_of_resnet_convolutions() {
        let d = |x, w, s, p| conv_output_dims(x, w, [s, s], [p, p], [1, 1]).unwrap();
        assert_eq!(
            d([16, 3, 224, 224], [64, 3, 7, 7], 2, 3),
            [16, 64, 112, 112]
        );
        assert_eq!(d([2, 64, 56, 56], [64, 64, 3, 3], 1, 1), [2, 64, 56, 56]);
        assert_eq!(d([2, 64, 56, 56], [128, 64, 3, 3], 2, 1), [2, 128, 28, 28]);
        assert_eq!(d([3, 64, 56, 56], [128, 64, 1, 1], 2, 0), [3, 128, 28, 28]);
        assert_eq!(d([1, 256, 14, 14], [64, 256, 1, 1], 1, 0), [1, 64, 14, 14]);
        assert_eq!(d([1, 8, 7, 5], [4, 8, 3, 3], 2, 1), [1, 4, 4, 3]);
        assert_eq!(
            conv_output_dims([1, 2, 9, 9], [1, 2, 3, 3], [1, 1], [0, 0], [2, 2]).unwrap(),
            [1, 1, 5, 5]
        );
        assert!(conv_output_dims([1, 2, 2, 2], [1, 2, 5, 5], [1, 1], [0, 0], [1, 1]).is_err());
        assert!(conv_output_dims([1, 3, 8, 8], [1, 2, 3, 3], [1, 1], [1, 1], [1, 1]).is_err());
        assert!(conv_output_dims([1, 2, 8, 8], [1, 2, 3, 3], [0, 1], [1, 1], [1, 1]).is_err());
    }

    /// The opaque buffers must match the C structs exactly: against the numbers measured
    /// from the 2.6.3 header, and against the installed header when gcc can compile it.
    #[test]
    fn struct_sizes_match_the_header() {
        let want = [
            ("dnnl_memory_desc_t", 696, 8),
            ("dnnl_convolution_desc_t", 5976, 8),
            ("dnnl_batch_normalization_desc_t", 3496, 8),
            ("dnnl_exec_arg_t", 16, 8),
            ("dnnl_version_t", 32, 8),
        ];
        assert_eq!(sys::struct_sizes(), want);
        if !std::path::Path::new("/usr/include/oneapi/dnnl/dnnl_types.h").exists() {
            eprintln!("no oneDNN header installed; checked against the recorded sizes only");
            return;
        }
        let dir = std::env::temp_dir().join(format!("onednn-sizes-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let src = dir.join("sizes.c");
        let mut c =
            String::from("#include <stdio.h>\n#include <oneapi/dnnl/dnnl.h>\nint main(void){\n");
        for (name, _, _) in want {
            c += &format!("printf(\"%zu %zu\\n\", sizeof({name}), _Alignof({name}));\n");
        }
        c += "return 0;}\n";
        std::fs::write(&src, c).unwrap();
        let exe = dir.join("sizes");
        match std::process::Command::new("gcc")
            .arg(&src)
            .arg("-o")
            .arg(&exe)
            .status()
        {
            Ok(s) if s.success() => {}
            other => {
                eprintln!("gcc could not build the size probe ({other:?}); recorded sizes only");
                return;
            }
        }
        let out = std::process::Command::new(&exe).output().unwrap();
        let text = String::from_utf8(out.stdout).unwrap();
        let got: Vec<(usize, usize)> = text
            .lines()
            .map(|l| {
                let mut it = l.split(' ').map(|v| v.parse::<usize>().unwrap());
                (it.next().unwrap(), it.next().unwrap())
            })
            .collect();
        let ours: Vec<(usize, usize)> = sys::struct_sizes()
            .iter()
            .map(|&(_, s, a)| (s, a))
            .collect();
        assert_eq!(
            got, ours,
            "struct sizes/alignments differ from the installed dnnl.h"
        );
        let _ = std::fs::remove_dir_all(&dir);
    }
}
