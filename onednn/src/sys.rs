//! The only module with `unsafe`: loading `libdnnl.so.2` (oneDNN v2 C API) at run time,
//! hand-written declarations from `dnnl.h`/`dnnl_types.h` (2.6.3), and RAII wrappers whose
//! safe methods cannot misuse the C objects.
//!
//! By-value C structs (`dnnl_memory_desc_t`, `dnnl_convolution_desc_t`,
//! `dnnl_batch_normalization_desc_t`) are never read field by field here: they are opaque,
//! correctly sized and aligned byte buffers that oneDNN's `*_init` functions fill and that
//! are only ever passed back by pointer. Their sizes were taken from the header with gcc
//! (`sizeof` 696, 5976 and 3496, `_Alignof` 8 on x86-64) and a test re-checks them against
//! the installed header when gcc and the header are present.

use std::ffi::{c_char, c_int, c_uint, c_void, CStr};

use libloading::Library;

/// `DNNL_MAX_NDIMS`.
pub const MAX_NDIMS: usize = 12;
/// `dnnl_dims_t`.
pub type Dims = [i64; MAX_NDIMS];

type Status = c_int;
type Handle = *mut c_void;

// dnnl_status_t
const SUCCESS: Status = 0;
// dnnl_data_type_t
const F32: c_int = 3;
// dnnl_engine_kind_t
const ENGINE_CPU: c_int = 1;
// dnnl_stream_flags_t
const STREAM_DEFAULT_FLAGS: c_uint = 1;
// dnnl_alg_kind_t
const CONVOLUTION_DIRECT: c_int = 1;
const ELTWISE_RELU: c_int = 0x1f;
// dnnl_scratchpad_mode_t
const SCRATCHPAD_MODE_USER: c_int = 1;
// dnnl_query_t
const QUERY_IMPL_INFO_STR: c_int = 8;
const QUERY_EXEC_ARG_MD: c_int = 255;
/// `DNNL_MEMORY_ALLOCATE`: the library allocates (and aligns) the buffer.
const MEMORY_ALLOCATE: Handle = usize::MAX as Handle;

/// `dnnl_format_tag_t` values used here.
pub mod tag {
    /// `dnnl_format_tag_any`: the primitive chooses (blocked on AVX-512).
    pub const ANY: i32 = 1;
    /// `dnnl_a` (= `dnnl_x`): 1-D.
    pub const A: i32 = 2;
    /// `dnnl_abcd` (= `dnnl_nchw`, `dnnl_oihw`).
    pub const ABCD: i32 = 5;
    /// `dnnl_acdb` (= `dnnl_nhwc`, `dnnl_ohwi`).
    pub const ACDB: i32 = 20;
}

/// `dnnl_prop_kind_t` values used here.
pub mod prop {
    /// `dnnl_forward_training`.
    pub const FORWARD_TRAINING: i32 = 64;
    /// `dnnl_forward_inference`.
    pub const FORWARD_INFERENCE: i32 = 96;
    /// `dnnl_backward` (data and scale/shift).
    pub const BACKWARD: i32 = 128;
}

/// `DNNL_ARG_*` values used here.
pub mod arg {
    pub const SRC: i32 = 1;
    pub const DST: i32 = 17;
    pub const FROM: i32 = 1;
    pub const TO: i32 = 17;
    pub const WEIGHTS: i32 = 33;
    pub const BIAS: i32 = 41;
    pub const MEAN: i32 = 49;
    pub const VARIANCE: i32 = 50;
    pub const SCALE: i32 = 51;
    pub const SHIFT: i32 = 52;
    pub const WORKSPACE: i32 = 64;
    pub const SCRATCHPAD: i32 = 80;
    pub const DIFF_SRC: i32 = 129;
    pub const DIFF_DST: i32 = 145;
    pub const DIFF_WEIGHTS: i32 = 161;
    pub const DIFF_BIAS: i32 = 169;
    pub const DIFF_SCALE: i32 = 255;
    pub const DIFF_SHIFT: i32 = 256;
}

/// `dnnl_normalization_flags_t` values used here (v2.6 has both the old combined
/// `dnnl_use_scaleshift` = 0x2, with one `[2, C]` argument, and the separate flags below,
/// with `[C]` arguments `DNNL_ARG_SCALE`/`DNNL_ARG_SHIFT`; this crate uses the separate ones).
pub mod bn_flags {
    /// `dnnl_fuse_norm_relu`: `y = relu(bn(x))`, with a workspace (the ReLU mask) that the
    /// backward pass takes.
    pub const FUSE_NORM_RELU: u32 = 0x4;
    pub const USE_SCALE: u32 = 0x8;
    pub const USE_SHIFT: u32 = 0x10;
}

/// `dnnl_memory_desc_t` as an opaque buffer (sizeof 696, alignof 8 in 2.6.3).
#[repr(C, align(8))]
#[derive(Clone, Copy)]
pub struct MemoryDesc([u8; 696]);

/// `dnnl_convolution_desc_t` as an opaque buffer (sizeof 5976, alignof 8).
#[repr(C, align(8))]
pub struct ConvDesc([u8; 5976]);

/// `dnnl_batch_normalization_desc_t` as an opaque buffer (sizeof 3496, alignof 8).
#[repr(C, align(8))]
pub struct BnDesc([u8; 3496]);

/// `dnnl_exec_arg_t`.
#[repr(C)]
struct ExecArg {
    arg: c_int,
    memory: Handle,
}

/// `dnnl_version_t`.
#[repr(C)]
struct Version {
    major: c_int,
    minor: c_int,
    patch: c_int,
    hash: *const c_char,
    cpu_runtime: c_uint,
    gpu_runtime: c_uint,
}

/// Sizes of the by-value structs as declared here, for the test against the C header.
#[cfg(test)]
pub fn struct_sizes() -> [(&'static str, usize, usize); 5] {
    use std::mem::{align_of, size_of};
    [
        (
            "dnnl_memory_desc_t",
            size_of::<MemoryDesc>(),
            align_of::<MemoryDesc>(),
        ),
        (
            "dnnl_convolution_desc_t",
            size_of::<ConvDesc>(),
            align_of::<ConvDesc>(),
        ),
        (
            "dnnl_batch_normalization_desc_t",
            size_of::<BnDesc>(),
            align_of::<BnDesc>(),
        ),
        (
            "dnnl_exec_arg_t",
            size_of::<ExecArg>(),
            align_of::<ExecArg>(),
        ),
        (
            "dnnl_version_t",
            size_of::<Version>(),
            align_of::<Version>(),
        ),
    ]
}

macro_rules! api {
    ($($name:ident : fn($($a:ty),*) $(-> $r:ty)?;)*) => {
        /// The loaded library and the entry points this crate uses.
        pub struct Api {
            $($name: unsafe extern "C" fn($($a),*) $(-> $r)?,)*
            version: unsafe extern "C" fn() -> *const Version,
            _lib: Library,
        }

        impl Api {
            /// Loads `libdnnl.so.2` (or `path`) and resolves every entry point.
            pub fn load(path: &str) -> Result<Api, String> {
                // SAFETY: loading a shared library runs its initialisers; libdnnl's are
                // ordinary C++ static constructors with no preconditions on the caller.
                let lib = unsafe { Library::new(path) }
                    .map_err(|e| format!("cannot load {path}: {e}"))?;
                // SAFETY: each symbol is looked up with the exact signature declared in
                // dnnl.h 2.6.3 (transcribed above); the fn pointers are copied out and
                // stay valid because `_lib` is kept alive in the same struct.
                unsafe {
                    Ok(Api {
                        $($name: *lib
                            .get(concat!("dnnl_", stringify!($name), "\0").as_bytes())
                            .map_err(|e| format!("{path}: symbol dnnl_{} missing: {e}", stringify!($name)))?,)*
                        version: *lib
                            .get(b"dnnl_version\0")
                            .map_err(|e| format!("{path}: symbol dnnl_version missing: {e}"))?,
                        _lib: lib,
                    })
                }
            }
        }
    };
}

api! {
    memory_desc_init_by_tag: fn(*mut MemoryDesc, c_int, *const i64, c_int, c_int) -> Status;
    memory_desc_equal: fn(*const MemoryDesc, *const MemoryDesc) -> c_int;
    memory_desc_get_size: fn(*const MemoryDesc) -> usize;
    memory_create: fn(*mut Handle, *const MemoryDesc, Handle, Handle) -> Status;
    memory_destroy: fn(Handle) -> Status;
    memory_set_data_handle: fn(Handle, Handle) -> Status;
    dilated_convolution_forward_desc_init: fn(*mut ConvDesc, c_int, c_int, *const MemoryDesc,
        *const MemoryDesc, *const MemoryDesc, *const MemoryDesc, *const i64, *const i64,
        *const i64, *const i64) -> Status;
    dilated_convolution_backward_data_desc_init: fn(*mut ConvDesc, c_int, *const MemoryDesc,
        *const MemoryDesc, *const MemoryDesc, *const i64, *const i64, *const i64,
        *const i64) -> Status;
    dilated_convolution_backward_weights_desc_init: fn(*mut ConvDesc, c_int, *const MemoryDesc,
        *const MemoryDesc, *const MemoryDesc, *const MemoryDesc, *const i64, *const i64,
        *const i64, *const i64) -> Status;
    batch_normalization_forward_desc_init: fn(*mut BnDesc, c_int, *const MemoryDesc, f32,
        c_uint) -> Status;
    batch_normalization_backward_desc_init: fn(*mut BnDesc, c_int, *const MemoryDesc,
        *const MemoryDesc, f32, c_uint) -> Status;
    primitive_attr_create: fn(*mut Handle) -> Status;
    primitive_attr_destroy: fn(Handle) -> Status;
    primitive_attr_set_post_ops: fn(Handle, Handle) -> Status;
    primitive_attr_set_scratchpad_mode: fn(Handle, c_int) -> Status;
    post_ops_create: fn(*mut Handle) -> Status;
    post_ops_destroy: fn(Handle) -> Status;
    post_ops_append_sum: fn(Handle, f32) -> Status;
    post_ops_append_eltwise: fn(Handle, f32, c_int, f32, f32) -> Status;
    primitive_desc_create: fn(*mut Handle, *const c_void, Handle, Handle, Handle) -> Status;
    primitive_desc_destroy: fn(Handle) -> Status;
    primitive_desc_query_md: fn(Handle, c_int, c_int) -> *const MemoryDesc;
    primitive_desc_query: fn(Handle, c_int, c_int, *mut c_void) -> Status;
    primitive_create: fn(*mut Handle, Handle) -> Status;
    primitive_execute: fn(Handle, Handle, c_int, *const ExecArg) -> Status;
    primitive_destroy: fn(Handle) -> Status;
    reorder_primitive_desc_create: fn(*mut Handle, *const MemoryDesc, Handle,
        *const MemoryDesc, Handle, Handle) -> Status;
    engine_create: fn(*mut Handle, c_int, usize) -> Status;
    stream_create: fn(*mut Handle, Handle, c_uint) -> Status;
    stream_wait: fn(Handle) -> Status;
}

fn check(what: &str, s: Status) -> Result<(), String> {
    if s == SUCCESS {
        return Ok(());
    }
    let name = match s {
        1 => "out_of_memory",
        2 => "invalid_arguments",
        3 => "unimplemented",
        4 => "iterator_ends",
        5 => "runtime_error",
        6 => "not_required",
        _ => "unknown status",
    };
    Err(format!("oneDNN {what} failed: {name} ({s})"))
}

impl Api {
    /// `dnnl_version()` as (major, minor, patch, cpu_runtime).
    pub fn version(&self) -> (i32, i32, i32, u32) {
        // SAFETY: dnnl_version takes nothing and returns a pointer to a static struct.
        unsafe {
            let v = (self.version)();
            if v.is_null() {
                return (0, 0, 0, 0);
            }
            ((*v).major, (*v).minor, (*v).patch, (*v).cpu_runtime)
        }
    }

    /// A plain or `any` f32 memory descriptor.
    pub fn md(&self, dims: &[i64], tag: i32) -> Result<MemoryDesc, String> {
        assert!(!dims.is_empty() && dims.len() <= MAX_NDIMS);
        let mut d: Dims = [0; MAX_NDIMS];
        d[..dims.len()].copy_from_slice(dims);
        let mut md = MemoryDesc([0; 696]);
        // SAFETY: md is a correctly sized, aligned out-buffer; d has DNNL_MAX_NDIMS entries.
        check("memory_desc_init_by_tag", unsafe {
            (self.memory_desc_init_by_tag)(&mut md, dims.len() as c_int, d.as_ptr(), F32, tag)
        })?;
        Ok(md)
    }

    /// Whether two descriptors describe the same layout.
    pub fn md_equal(&self, a: &MemoryDesc, b: &MemoryDesc) -> bool {
        // SAFETY: both point to initialised descriptors.
        unsafe { (self.memory_desc_equal)(a, b) != 0 }
    }

    /// Bytes a descriptor's memory takes (0 for the zero descriptor).
    pub fn md_size(&self, a: &MemoryDesc) -> usize {
        // SAFETY: a points to an initialised descriptor.
        unsafe { (self.memory_desc_get_size)(a) }
    }

    /// The CPU engine.
    pub fn engine(&'static self) -> Result<Engine, String> {
        let mut h: Handle = std::ptr::null_mut();
        // SAFETY: h is an out-pointer; index 0 is the only CPU engine.
        check("engine_create", unsafe {
            (self.engine_create)(&mut h, ENGINE_CPU, 0)
        })?;
        Ok(Engine(h))
    }

    /// An in-order stream on `engine`.
    pub fn stream(&'static self, engine: &Engine) -> Result<Stream, String> {
        let mut h: Handle = std::ptr::null_mut();
        // SAFETY: h is an out-pointer, engine a live engine.
        check("stream_create", unsafe {
            (self.stream_create)(&mut h, engine.0, STREAM_DEFAULT_FLAGS)
        })?;
        Ok(Stream(h))
    }
}

/// A `dnnl_engine_t` (never destroyed: it lives as long as the process's `Dnnl`).
pub struct Engine(Handle);
/// A `dnnl_stream_t` (never destroyed, see [`Engine`]). Not thread-safe: the caller keeps it
/// behind a mutex.
pub struct Stream(Handle);

// SAFETY: a CPU engine is an immutable, thread-safe object in oneDNN.
unsafe impl Send for Engine {}
// SAFETY: see above; primitives and memories may be created from any thread with it.
unsafe impl Sync for Engine {}
// SAFETY: a stream may be moved between threads; it is only used behind a Mutex (not Sync).
unsafe impl Send for Stream {}

/// Convolution geometry in oneDNN's terms (dilation 0-based: PyTorch's 1 is oneDNN's 0).
pub struct ConvArgs {
    pub strides: [i64; 2],
    pub dilates: [i64; 2],
    pub pad_l: [i64; 2],
    pub pad_r: [i64; 2],
}

fn dims2(a: [i64; 2]) -> Dims {
    let mut d = [0; MAX_NDIMS];
    d[..2].copy_from_slice(&a);
    d
}

/// An operation descriptor, boxed because the structs are several kB.
pub enum OpDesc {
    Conv(Box<ConvDesc>),
    Bn(Box<BnDesc>),
}

impl OpDesc {
    fn ptr(&self) -> *const c_void {
        match self {
            OpDesc::Conv(d) => &**d as *const ConvDesc as *const c_void,
            OpDesc::Bn(d) => &**d as *const BnDesc as *const c_void,
        }
    }

    /// Forward convolution (`prop` is [`prop::FORWARD_TRAINING`] or `FORWARD_INFERENCE`).
    pub fn conv_forward(
        api: &Api,
        prop: i32,
        src: &MemoryDesc,
        weights: &MemoryDesc,
        bias: Option<&MemoryDesc>,
        dst: &MemoryDesc,
        c: &ConvArgs,
    ) -> Result<OpDesc, String> {
        let mut d = Box::new(ConvDesc([0; 5976]));
        let bias = bias.map_or(std::ptr::null(), |b| b as *const MemoryDesc);
        // SAFETY: every pointer is to an initialised descriptor / DNNL_MAX_NDIMS array, or
        // null for the optional bias (documented as allowed); d is the out-buffer.
        check("convolution_forward_desc_init", unsafe {
            (api.dilated_convolution_forward_desc_init)(
                &mut *d,
                prop,
                CONVOLUTION_DIRECT,
                src,
                weights,
                bias,
                dst,
                dims2(c.strides).as_ptr(),
                dims2(c.dilates).as_ptr(),
                dims2(c.pad_l).as_ptr(),
                dims2(c.pad_r).as_ptr(),
            )
        })?;
        Ok(OpDesc::Conv(d))
    }

    /// Backward-data convolution.
    pub fn conv_backward_data(
        api: &Api,
        diff_src: &MemoryDesc,
        weights: &MemoryDesc,
        diff_dst: &MemoryDesc,
        c: &ConvArgs,
    ) -> Result<OpDesc, String> {
        let mut d = Box::new(ConvDesc([0; 5976]));
        // SAFETY: as in conv_forward.
        check("convolution_backward_data_desc_init", unsafe {
            (api.dilated_convolution_backward_data_desc_init)(
                &mut *d,
                CONVOLUTION_DIRECT,
                diff_src,
                weights,
                diff_dst,
                dims2(c.strides).as_ptr(),
                dims2(c.dilates).as_ptr(),
                dims2(c.pad_l).as_ptr(),
                dims2(c.pad_r).as_ptr(),
            )
        })?;
        Ok(OpDesc::Conv(d))
    }

    /// Backward-weights convolution (optionally with the bias gradient).
    pub fn conv_backward_weights(
        api: &Api,
        src: &MemoryDesc,
        diff_weights: &MemoryDesc,
        diff_bias: Option<&MemoryDesc>,
        diff_dst: &MemoryDesc,
        c: &ConvArgs,
    ) -> Result<OpDesc, String> {
        let mut d = Box::new(ConvDesc([0; 5976]));
        let diff_bias = diff_bias.map_or(std::ptr::null(), |b| b as *const MemoryDesc);
        // SAFETY: as in conv_forward.
        check("convolution_backward_weights_desc_init", unsafe {
            (api.dilated_convolution_backward_weights_desc_init)(
                &mut *d,
                CONVOLUTION_DIRECT,
                src,
                diff_weights,
                diff_bias,
                diff_dst,
                dims2(c.strides).as_ptr(),
                dims2(c.dilates).as_ptr(),
                dims2(c.pad_l).as_ptr(),
                dims2(c.pad_r).as_ptr(),
            )
        })?;
        Ok(OpDesc::Conv(d))
    }

    /// Forward batch normalisation.
    pub fn bn_forward(
        api: &Api,
        prop: i32,
        data: &MemoryDesc,
        eps: f32,
        flags: u32,
    ) -> Result<OpDesc, String> {
        let mut d = Box::new(BnDesc([0; 3496]));
        // SAFETY: data is an initialised descriptor, d the out-buffer.
        check("batch_normalization_forward_desc_init", unsafe {
            (api.batch_normalization_forward_desc_init)(&mut *d, prop, data, eps, flags)
        })?;
        Ok(OpDesc::Bn(d))
    }

    /// Backward batch normalisation ([`prop::BACKWARD`]: data and scale/shift gradients).
    pub fn bn_backward(
        api: &Api,
        diff_data: &MemoryDesc,
        data: &MemoryDesc,
        eps: f32,
        flags: u32,
    ) -> Result<OpDesc, String> {
        let mut d = Box::new(BnDesc([0; 3496]));
        // SAFETY: as in bn_forward.
        check("batch_normalization_backward_desc_init", unsafe {
            (api.batch_normalization_backward_desc_init)(
                &mut *d,
                prop::BACKWARD,
                diff_data,
                data,
                eps,
                flags,
            )
        })?;
        Ok(OpDesc::Bn(d))
    }
}

/// A `dnnl_primitive_desc_t`.
pub struct PrimDesc {
    h: Handle,
    api: &'static Api,
}

impl PrimDesc {
    /// The first (fastest) implementation of `op`, with an optional forward hint.
    pub fn new(
        api: &'static Api,
        op: &OpDesc,
        engine: &Engine,
        hint: Option<&PrimDesc>,
    ) -> Result<PrimDesc, String> {
        Self::with_attr(api, op, None, engine, hint)
    }

    /// [`PrimDesc::new`] with primitive attributes (post-ops).
    pub fn with_attr(
        api: &'static Api,
        op: &OpDesc,
        attr: Option<&Attr>,
        engine: &Engine,
        hint: Option<&PrimDesc>,
    ) -> Result<PrimDesc, String> {
        let mut h: Handle = std::ptr::null_mut();
        let hint = hint.map_or(std::ptr::null_mut(), |p| p.h);
        let default;
        let attr = match attr {
            Some(a) => a,
            None => {
                default = Attr::post_ops(api, &[])?;
                &default
            }
        };
        // SAFETY: op points to a descriptor filled by its init function; attr is a live
        // attribute object (oneDNN copies it); hint is null or a live primitive descriptor.
        check("primitive_desc_create", unsafe {
            (api.primitive_desc_create)(&mut h, op.ptr(), attr.h, engine.0, hint)
        })?;
        Ok(PrimDesc { h, api })
    }

    /// A reorder from `src` to `dst` layout.
    pub fn reorder(
        api: &'static Api,
        src: &MemoryDesc,
        dst: &MemoryDesc,
        engine: &Engine,
    ) -> Result<PrimDesc, String> {
        let mut h: Handle = std::ptr::null_mut();
        let attr = Attr::post_ops(api, &[])?;
        // SAFETY: both descriptors are initialised; attr is live (oneDNN copies it).
        check("reorder_primitive_desc_create", unsafe {
            (api.reorder_primitive_desc_create)(&mut h, src, engine.0, dst, engine.0, attr.h)
        })?;
        Ok(PrimDesc { h, api })
    }

    /// The descriptor the primitive expects for execution argument `arg` (`None` if the
    /// primitive takes no such argument).
    pub fn arg_md(&self, arg: i32) -> Option<MemoryDesc> {
        // SAFETY: h is live; the returned pointer (if not null) points into the primitive
        // descriptor and is copied out at once.
        let md = unsafe {
            let p = (self.api.primitive_desc_query_md)(self.h, QUERY_EXEC_ARG_MD, arg);
            if p.is_null() {
                return None;
            }
            *p
        };
        (self.api.md_size(&md) > 0).then_some(md)
    }

    /// The implementation's name (e.g. `jit:avx512_common`).
    pub fn impl_name(&self) -> String {
        let mut p: *const c_char = std::ptr::null();
        // SAFETY: the query writes a `const char *` owned by the primitive descriptor,
        // which is copied into a String before self can be dropped.
        unsafe {
            let s = (self.api.primitive_desc_query)(
                self.h,
                QUERY_IMPL_INFO_STR,
                0,
                &mut p as *mut *const c_char as *mut c_void,
            );
            if s != SUCCESS || p.is_null() {
                return String::from("?");
            }
            CStr::from_ptr(p).to_string_lossy().into_owned()
        }
    }

    /// Creates the primitive.
    pub fn primitive(&self) -> Result<Primitive, String> {
        let mut h: Handle = std::ptr::null_mut();
        // SAFETY: self.h is a live primitive descriptor; h an out-pointer.
        check("primitive_create", unsafe {
            (self.api.primitive_create)(&mut h, self.h)
        })?;
        Ok(Primitive { h, api: self.api })
    }
}

impl Drop for PrimDesc {
    fn drop(&mut self) {
        // SAFETY: h was created by primitive_desc_create and is destroyed once.
        unsafe { (self.api.primitive_desc_destroy)(self.h) };
    }
}

/// A post-op of a forward convolution, in execution order.
#[derive(Clone, Copy, Debug)]
pub enum PostOp {
    /// `dst += previous dst` (`dnnl_post_ops_append_sum`, scale 1): the primitive reads its
    /// destination before writing it.
    Sum,
    /// `dst = max(dst, 0)` (`dnnl_eltwise_relu`, scale 1, alpha 0, beta 0).
    Relu,
}

/// A `dnnl_primitive_attr_t` carrying a post-op chain, always with
/// `dnnl_scratchpad_mode_user`: oneDNN's default (library) scratchpad is a **thread-local**
/// buffer shared by the primitives created on a thread, so a cached primitive executed on
/// another thread (a rayon pool, another test) finds none (`invalid_arguments`, seen with
/// the 2.6.3 gemm convolutions) or a smaller one. With user mode each plan owns its
/// primitives' scratchpads (see `Plan`), and any thread may execute them.
pub struct Attr {
    h: Handle,
    api: &'static Api,
}

impl Attr {
    /// Attributes with the post-ops `ops`, in order (none: only the scratchpad mode).
    pub fn post_ops(api: &'static Api, ops: &[PostOp]) -> Result<Attr, String> {
        let mut h: Handle = std::ptr::null_mut();
        // SAFETY: h is an out-pointer.
        check("primitive_attr_create", unsafe {
            (api.primitive_attr_create)(&mut h)
        })?;
        let attr = Attr { h, api };
        // SAFETY: attr.h is live.
        check("primitive_attr_set_scratchpad_mode", unsafe {
            (api.primitive_attr_set_scratchpad_mode)(attr.h, SCRATCHPAD_MODE_USER)
        })?;
        if ops.is_empty() {
            return Ok(attr);
        }
        let mut po: Handle = std::ptr::null_mut();
        // SAFETY: po is an out-pointer.
        check("post_ops_create", unsafe { (api.post_ops_create)(&mut po) })?;
        // SAFETY: po is a live post-ops object, destroyed once below (set_post_ops copies
        // it into the attributes); attr.h is live.
        let r = unsafe {
            let mut r = Ok(());
            for op in ops {
                let st = match op {
                    PostOp::Sum => (api.post_ops_append_sum)(po, 1.0),
                    PostOp::Relu => (api.post_ops_append_eltwise)(po, 1.0, ELTWISE_RELU, 0.0, 0.0),
                };
                r = check("post_ops_append", st);
                if r.is_err() {
                    break;
                }
            }
            if r.is_ok() {
                r = check(
                    "primitive_attr_set_post_ops",
                    (api.primitive_attr_set_post_ops)(attr.h, po),
                );
            }
            (api.post_ops_destroy)(po);
            r
        };
        r.map(|()| attr)
    }
}

impl Drop for Attr {
    fn drop(&mut self) {
        // SAFETY: h was created by primitive_attr_create and is destroyed once.
        unsafe { (self.api.primitive_attr_destroy)(self.h) };
    }
}

/// A `dnnl_primitive_t`.
pub struct Primitive {
    h: Handle,
    api: &'static Api,
}

impl Drop for Primitive {
    fn drop(&mut self) {
        // SAFETY: h was created by primitive_create and is destroyed once.
        unsafe { (self.api.primitive_destroy)(self.h) };
    }
}

/// A `dnnl_memory_t`: either library-owned (allocated and aligned by oneDNN) or a binding
/// slot for a caller's slice, whose data handle is set only for the duration of [`run`].
pub struct Memory {
    h: Handle,
    bytes: usize,
    owned: bool,
    api: &'static Api,
}

impl Memory {
    /// A memory whose buffer oneDNN allocates now and frees on drop.
    pub fn owned(api: &'static Api, md: &MemoryDesc, engine: &Engine) -> Result<Memory, String> {
        Self::create(api, md, engine, MEMORY_ALLOCATE, true)
    }

    /// A memory with no buffer; [`run`] binds a caller's slice to it.
    pub fn slot(api: &'static Api, md: &MemoryDesc, engine: &Engine) -> Result<Memory, String> {
        Self::create(api, md, engine, std::ptr::null_mut(), false)
    }

    fn create(
        api: &'static Api,
        md: &MemoryDesc,
        engine: &Engine,
        handle: Handle,
        owned: bool,
    ) -> Result<Memory, String> {
        let mut h: Handle = std::ptr::null_mut();
        // SAFETY: md is initialised; handle is DNNL_MEMORY_ALLOCATE or DNNL_MEMORY_NONE.
        check("memory_create", unsafe {
            (api.memory_create)(&mut h, md, engine.0, handle)
        })?;
        Ok(Memory {
            h,
            bytes: api.md_size(md),
            owned,
            api,
        })
    }
}

impl Memory {
    /// Bytes of the memory's layout (for blocked layouts, padded channels included).
    pub fn bytes(&self) -> usize {
        self.bytes
    }
}

impl Drop for Memory {
    fn drop(&mut self) {
        // SAFETY: h was created by memory_create and is destroyed once (an owned buffer is
        // freed with it; a slot never keeps a caller's pointer past `run`).
        unsafe { (self.api.memory_destroy)(self.h) };
    }
}

// SAFETY: these wrap heap objects of oneDNN that are not tied to the creating thread; all
// mutation (binding data handles, executing) happens under the caller's stream mutex.
unsafe impl Send for PrimDesc {}
// SAFETY: see above.
unsafe impl Send for Primitive {}
// SAFETY: see above.
unsafe impl Send for Memory {}

/// Data bound to a [`Memory`] slot for one [`run`].
pub enum Data<'a> {
    /// Read by the primitives (bound as a mutable handle, but oneDNN only reads inputs).
    In(&'a [f32]),
    /// Written by the primitives.
    Out(&'a mut [f32]),
    /// An empty `Vec` whose spare capacity the primitives write; [`run`] sets its length to
    /// the memory's size once they have (see [`run`] for why that is sound).
    Fresh(&'a mut Vec<f32>),
    /// Bytes read by the primitives (a workspace).
    InBytes(&'a [u8]),
    /// Bytes written by the primitives (a workspace).
    OutBytes(&'a mut [u8]),
    /// The memory owns its buffer; nothing to bind.
    Owned,
}

/// One primitive execution: the primitive, its (argument id, memory index) pairs, and the
/// memory indices among them that it writes whole (destinations, `TO` of a reorder).
pub struct Step<'p> {
    pub prim: &'p Primitive,
    pub args: Vec<(i32, usize)>,
    pub writes: Vec<usize>,
}

/// Binds `data[i]` to `mems[i]`, executes `steps` in order on `stream`, waits, and unbinds.
/// Fails (without executing) if a buffer is shorter than its memory's layout, if a slot
/// would be executed unbound, or if a [`Data::Fresh`] vector is not empty, has too little
/// capacity, or is bound to a memory that no step lists in `writes`.
///
/// A [`Data::Fresh`] vector gets the length `bytes / 4` of its memory after all steps
/// succeeded. That is sound because such a memory is a dense plain f32 layout (the callers
/// bind them to NCHW/OIHW/`x` user memories, whose size is exactly the element count × 4)
/// and it is the destination of a step: oneDNN's primitives and reorders define every
/// element of their destination memory (there is no "partial write" mode for a dst), so
/// every f32 of `[0, bytes / 4)` has been written when the stream has finished. On any
/// failure the length stays 0 and nothing uninitialised is exposed.
pub fn run(
    api: &Api,
    stream: &mut Stream,
    mems: &[&Memory],
    data: &mut [Data<'_>],
    steps: &[Step<'_>],
) -> Result<(), String> {
    if mems.len() != data.len()
        || steps.iter().any(|s| {
            s.args.iter().any(|&(_, i)| i >= mems.len())
                || s.writes.iter().any(|w| !s.args.iter().any(|a| a.1 == *w))
        })
    {
        return Err("internal: plan and data do not match".into());
    }
    for (k, (m, d)) in mems.iter().zip(data.iter()).enumerate() {
        let bytes = match d {
            Data::In(s) => s.len() * 4,
            Data::Out(s) => s.len() * 4,
            Data::Fresh(v) => {
                if !v.is_empty() || m.bytes % 4 != 0 {
                    return Err("internal: fresh output not empty or not f32-sized".into());
                }
                if !steps.iter().any(|s| s.writes.contains(&k)) {
                    return Err("internal: fresh output that no step writes".into());
                }
                v.capacity() * 4
            }
            Data::InBytes(s) => s.len(),
            Data::OutBytes(s) => s.len(),
            Data::Owned if m.owned => continue,
            Data::Owned => return Err("internal: unbound memory slot".into()),
        };
        if m.owned {
            return Err("internal: binding a slice to an owned memory".into());
        }
        if bytes < m.bytes {
            return Err(format!(
                "buffer of {bytes} bytes, layout needs {} bytes",
                m.bytes
            ));
        }
    }
    let mut result = Ok(());
    // SAFETY: every slot is bound to a live buffer at least as long as its layout (checked
    // above; for `Fresh`, the vector's allocated capacity) that outlives this call; `data`
    // borrows the buffers (mutably for outputs) for the whole call, execution is synchronous
    // (stream_wait before return), and the handles are reset to null before returning so no
    // dangling pointer stays in a cached memory. Argument memories are live (borrowed) and
    // their indices were checked above. The `set_len` is justified in the doc comment: the
    // capacity covers `bytes / 4` floats, and all of them were written by a successful step.
    unsafe {
        for (m, d) in mems.iter().zip(data.iter_mut()) {
            let p: Handle = match d {
                Data::In(s) => s.as_ptr() as Handle,
                Data::Out(s) => s.as_mut_ptr() as Handle,
                Data::Fresh(v) => v.spare_capacity_mut().as_mut_ptr() as Handle,
                Data::InBytes(s) => s.as_ptr() as Handle,
                Data::OutBytes(s) => s.as_mut_ptr() as Handle,
                Data::Owned => continue,
            };
            if let Err(e) = check(
                "memory_set_data_handle",
                (api.memory_set_data_handle)(m.h, p),
            ) {
                result = Err(e);
            }
        }
        if result.is_ok() {
            for s in steps {
                let args: Vec<ExecArg> = s
                    .args
                    .iter()
                    .map(|&(a, i)| ExecArg {
                        arg: a,
                        memory: mems[i].h,
                    })
                    .collect();
                let st =
                    (api.primitive_execute)(s.prim.h, stream.0, args.len() as c_int, args.as_ptr());
                if let Err(e) = check("primitive_execute", st) {
                    result = Err(e);
                    break;
                }
            }
            let st = (api.stream_wait)(stream.0);
            if result.is_ok() {
                result = check("stream_wait", st);
            }
        }
        for (m, d) in mems.iter().zip(data.iter_mut()) {
            if !matches!(d, Data::Owned) {
                (api.memory_set_data_handle)(m.h, std::ptr::null_mut());
            }
            if let (Data::Fresh(v), Ok(())) = (d, &result) {
                v.set_len(m.bytes / 4);
            }
        }
    }
    result
}
