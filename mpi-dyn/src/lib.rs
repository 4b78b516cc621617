//! MPI loaded at run time, for the few collective calls a data-parallel trainer makes.
//!
//! Linking MPI at build time (the `mpi` crate) needs `mpicc` and libclang wherever the
//! program is built, and its build-time dependencies change the feature set of crates
//! the rest of the workspace shares, which rebuilds everything. Loading the library at
//! run time needs neither, as `onednn` does for oneDNN: a binary built anywhere joins an
//! MPI job on a machine that has MPI, and says so clearly on one that has not.
//!
//! MPI fixes the C API but not the ABI. Two ABIs cover the implementations in use:
//!
//! - **Open MPI** (`libmpi.so.40`, versions 3 to 5): handles are pointers, and the
//!   predefined ones are the addresses of exported objects (`MPI_COMM_WORLD` is
//!   `&ompi_mpi_comm_world`, `MPI_FLOAT` `&ompi_mpi_float`, `MPI_SUM` `&ompi_mpi_op_sum`).
//! - **The MPICH ABI** (`libmpi.so.12`, Debian's `libmpich.so.12`: MPICH ≥ 3.1, Intel MPI, MVAPICH2, Cray MPICH):
//!   handles are `int`s with fixed values (`MPI_COMM_WORLD` = 0x44000000, `MPI_FLOAT` =
//!   0x4c00040a, `MPI_SUM` = 0x58000003, from `mpi.h`).
//!
//! Which one a library is: Open MPI's exports `ompi_mpi_comm_world`.

use std::ffi::{c_char, c_int, c_void};

use libloading::Library;

/// The libraries tried, in order, when `RECTRAIN_MPI_LIB` does not name one.
pub const CANDIDATES: &[&str] = &[
    "libmpi.so.40",
    "libmpi.so.12",
    "libmpich.so.12",
    "libmpi.so",
];

/// MPICH ABI handle values (mpich's `mpi.h`, stable since MPICH 3.1).
mod mpich {
    use std::ffi::c_int;
    pub const COMM_WORLD: c_int = 0x4400_0000;
    pub const FLOAT: c_int = 0x4c00_040a;
    pub const BYTE: c_int = 0x4c00_010d;
    pub const SUM: c_int = 0x5800_0003;
}

/// The entry points used, with handles of type `H` (a pointer for Open MPI, an int for
/// the MPICH ABI).
struct Api<H> {
    initialized: unsafe extern "C" fn(*mut c_int) -> c_int,
    init: unsafe extern "C" fn(*mut c_int, *mut *mut *mut c_char) -> c_int,
    finalize: unsafe extern "C" fn() -> c_int,
    comm_rank: unsafe extern "C" fn(H, *mut c_int) -> c_int,
    comm_size: unsafe extern "C" fn(H, *mut c_int) -> c_int,
    reduce: unsafe extern "C" fn(*const c_void, *mut c_void, c_int, H, H, c_int, H) -> c_int,
    bcast: unsafe extern "C" fn(*mut c_void, c_int, H, c_int, H) -> c_int,
    abort: unsafe extern "C" fn(H, c_int) -> c_int,
    world: H,
    float: H,
    byte: H,
    sum: H,
}

impl<H: Copy> Api<H> {
    /// Resolve every entry point of `lib` with handles of type `H`.
    ///
    /// # Safety
    /// `H` must be the library's handle type, and `handles` its predefined
    /// MPI_COMM_WORLD, MPI_FLOAT, MPI_BYTE and MPI_SUM.
    unsafe fn resolve(lib: &Library, path: &str, handles: [H; 4]) -> Result<Self, String> {
        let [world, float, byte, sum] = handles;
        macro_rules! sym {
            ($name:literal) => {
                // SAFETY: the caller vouches for the handle type; the signatures are
                // MPI-3's, and the copied fn pointers stay valid while `lib` lives
                // (the `Mpi` that owns both never drops the library before them).
                *unsafe { lib.get(concat!($name, "\0").as_bytes()) }
                    .map_err(|e| format!("{path}: {} missing: {e}", $name))?
            };
        }
        Ok(Api {
            initialized: sym!("MPI_Initialized"),
            init: sym!("MPI_Init"),
            finalize: sym!("MPI_Finalize"),
            comm_rank: sym!("MPI_Comm_rank"),
            comm_size: sym!("MPI_Comm_size"),
            reduce: sym!("MPI_Reduce"),
            bcast: sym!("MPI_Bcast"),
            abort: sym!("MPI_Abort"),
            world,
            float,
            byte,
            sum,
        })
    }
}

enum Flavour {
    OpenMpi(Api<*mut c_void>),
    Mpich(Api<c_int>),
}

/// Calls `$body` with `$api` bound to whichever ABI the library has.
macro_rules! with_api {
    ($self:expr, $api:ident => $body:expr) => {
        match &$self.flavour {
            Flavour::OpenMpi($api) => $body,
            Flavour::Mpich($api) => $body,
        }
    };
}

/// A loaded MPI library. [`Mpi::init`] joins the job its launcher started.
pub struct Mpi {
    flavour: Flavour,
    path: String,
    // Last: the fn pointers above point into it.
    _lib: Library,
}

// SAFETY: the handles are process-wide constants (addresses of Open MPI's predefined
// objects, or MPICH's integers); MPI itself is only called from one thread at a time
// (`init` asks for MPI_THREAD_SINGLE semantics, and the owner serialises its calls).
unsafe impl Send for Mpi {}
unsafe impl Sync for Mpi {}

/// An MPI call's error code, with the call's name.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MpiError {
    pub call: &'static str,
    pub code: c_int,
}

impl std::fmt::Display for MpiError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} failed with MPI error code {}", self.call, self.code)
    }
}

impl std::error::Error for MpiError {}

fn check(call: &'static str, code: c_int) -> Result<(), MpiError> {
    if code == 0 {
        Ok(())
    } else {
        Err(MpiError { call, code })
    }
}

/// The element types sent.
#[derive(Clone, Copy)]
enum Datatype {
    Float,
    Byte,
}

/// The most elements one MPI call takes (`count` is an `int`).
const MAX_COUNT: usize = c_int::MAX as usize;

impl Mpi {
    /// Load `RECTRAIN_MPI_LIB`, else the first of [`CANDIDATES`] that loads. The error
    /// lists what was tried.
    pub fn load() -> Result<Mpi, String> {
        if let Ok(path) = std::env::var("RECTRAIN_MPI_LIB") {
            return Self::load_from(&path);
        }
        let mut tried = Vec::new();
        for path in CANDIDATES {
            match Self::load_from(path) {
                Ok(mpi) => return Ok(mpi),
                Err(e) => tried.push(e),
            }
        }
        Err(tried.join("; "))
    }

    /// Load the MPI library at `path` (a name the dynamic loader finds, or a path).
    pub fn load_from(path: &str) -> Result<Mpi, String> {
        // RTLD_GLOBAL: Open MPI's own plugins, which it dlopens, resolve symbols of
        // libmpi through the global namespace.
        let flags = libloading::os::unix::RTLD_NOW | libloading::os::unix::RTLD_GLOBAL;
        // SAFETY: loading runs the library's initialisers; MPI libraries' have no
        // preconditions (MPI itself starts in MPI_Init).
        let lib: Library = unsafe { libloading::os::unix::Library::open(Some(path), flags) }
            .map_err(|e| format!("cannot load {path}: {e}"))?
            .into();
        // SAFETY: an exported `ompi_mpi_comm_world` is Open MPI's (pointer handles,
        // predefined handles are the objects' addresses); any other libmpi is taken as
        // the MPICH ABI, whose handles are ints with mpi.h's fixed values.
        let flavour = unsafe {
            let object = |name: &str| -> Option<*mut c_void> {
                lib.get::<*mut c_void>(name.as_bytes()).ok().map(|s| *s)
            };
            match object("ompi_mpi_comm_world\0") {
                Some(world) => {
                    let get = |name: &str| {
                        object(&format!("{name}\0"))
                            .ok_or_else(|| format!("{path}: {name} missing"))
                    };
                    let handles = [
                        world,
                        get("ompi_mpi_float")?,
                        get("ompi_mpi_byte")?,
                        get("ompi_mpi_op_sum")?,
                    ];
                    Flavour::OpenMpi(Api::resolve(&lib, path, handles)?)
                }
                None => Flavour::Mpich(Api::resolve(
                    &lib,
                    path,
                    [mpich::COMM_WORLD, mpich::FLOAT, mpich::BYTE, mpich::SUM],
                )?),
            }
        };
        Ok(Mpi {
            flavour,
            path: path.to_string(),
            _lib: lib,
        })
    }

    /// The library loaded, and its ABI.
    pub fn describe(&self) -> String {
        let abi = match self.flavour {
            Flavour::OpenMpi(_) => "Open MPI",
            Flavour::Mpich(_) => "MPICH ABI",
        };
        format!("{} ({abi})", self.path)
    }

    /// MPI_Init, unless MPI is already initialised in this process.
    pub fn init(&self) -> Result<(), MpiError> {
        with_api!(self, api => {
            let mut done: c_int = 0;
            // SAFETY: valid out-pointer; MPI_Initialized may be called at any time.
            check("MPI_Initialized", unsafe { (api.initialized)(&mut done) })?;
            if done == 0 {
                // SAFETY: MPI-2 allows NULL argc/argv.
                check("MPI_Init", unsafe {
                    (api.init)(std::ptr::null_mut(), std::ptr::null_mut())
                })?;
            }
            Ok(())
        })
    }

    /// This process's rank in MPI_COMM_WORLD.
    pub fn rank(&self) -> Result<usize, MpiError> {
        let mut r: c_int = 0;
        // SAFETY: valid out-pointer and the library's own MPI_COMM_WORLD.
        with_api!(self, api => check("MPI_Comm_rank", unsafe { (api.comm_rank)(api.world, &mut r) }))?;
        Ok(r as usize)
    }

    /// The number of processes in MPI_COMM_WORLD.
    pub fn size(&self) -> Result<usize, MpiError> {
        let mut s: c_int = 0;
        // SAFETY: as in `rank`.
        with_api!(self, api => check("MPI_Comm_size", unsafe { (api.comm_size)(api.world, &mut s) }))?;
        Ok(s as usize)
    }

    /// MPI_Reduce with MPI_SUM of every rank's `values` onto rank `root`, in place: on
    /// the root `values` becomes the sum (MPI_IN_PLACE, no second buffer); elsewhere it
    /// is only sent. Every rank must call it with the same length and root.
    pub fn reduce_sum(&self, values: &mut [f32], root: usize) -> Result<(), MpiError> {
        let at_root = self.rank()? == root;
        for chunk in values.chunks_mut(MAX_COUNT) {
            let n = chunk.len() as c_int;
            let data = chunk.as_mut_ptr().cast::<c_void>();
            // On the root: send MPI_IN_PLACE, receive into the chunk; elsewhere: send the
            // chunk, no receive buffer (MPI ignores it off the root).
            let (send, recv) = if at_root {
                (self.in_place(), data)
            } else {
                (data.cast_const(), std::ptr::null_mut())
            };
            // SAFETY: `chunk` holds `n` f32s (MPI_FLOAT) and stays borrowed for the call;
            // MPI_IN_PLACE and the handles are the library's own.
            with_api!(self, api => check("MPI_Reduce", unsafe {
                (api.reduce)(send, recv, n, api.float, api.sum, root as c_int, api.world)
            }))?;
        }
        Ok(())
    }

    /// The library's MPI_IN_PLACE (`(void *) 1` in Open MPI's mpi.h, `(void *) -1` in
    /// MPICH's).
    fn in_place(&self) -> *const c_void {
        match self.flavour {
            Flavour::OpenMpi(_) => std::ptr::without_provenance(1),
            Flavour::Mpich(_) => std::ptr::without_provenance(usize::MAX),
        }
    }

    /// MPI_Bcast of `buf` from rank `root` to every rank.
    pub fn broadcast(&self, buf: &mut [f32], root: usize) -> Result<(), MpiError> {
        // SAFETY: f32 is MPI_FLOAT.
        unsafe { self.bcast(buf, Datatype::Float, root) }
    }

    /// MPI_Bcast of the bytes of `buf` from rank `root` to every rank.
    pub fn broadcast_bytes(&self, buf: &mut [u8], root: usize) -> Result<(), MpiError> {
        // SAFETY: u8 is MPI_BYTE.
        unsafe { self.bcast(buf, Datatype::Byte, root) }
    }

    /// MPI_Bcast of `buf`, `MAX_COUNT` elements at a time.
    ///
    /// # Safety
    /// `T` must be the type `datatype` describes.
    unsafe fn bcast<T>(
        &self,
        buf: &mut [T],
        datatype: Datatype,
        root: usize,
    ) -> Result<(), MpiError> {
        for chunk in buf.chunks_mut(MAX_COUNT) {
            with_api!(self, api => {
                let dt = match datatype {
                    Datatype::Float => api.float,
                    Datatype::Byte => api.byte,
                };
                // SAFETY: `chunk` holds `len` elements of `dt` (the caller's promise) and
                // stays borrowed for the call; the handles are the library's own.
                check("MPI_Bcast", unsafe {
                    (api.bcast)(chunk.as_mut_ptr().cast(), chunk.len() as c_int, dt, root as c_int, api.world)
                })
            })?;
        }
        Ok(())
    }

    /// MPI_Abort on MPI_COMM_WORLD: the launcher ends every process of the job with
    /// `code`. Exits this process if MPI returns.
    pub fn abort(&self, code: i32) -> ! {
        // SAFETY: the library's own MPI_COMM_WORLD.
        with_api!(self, api => unsafe { (api.abort)(api.world, code) });
        std::process::exit(code)
    }

    /// MPI_Finalize (every rank calls it once, after its last MPI call).
    pub fn finalize(&self) -> Result<(), MpiError> {
        // SAFETY: no arguments.
        with_api!(self, api => check("MPI_Finalize", unsafe { (api.finalize)() }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_missing_library_is_an_error_naming_it() {
        let err = Mpi::load_from("libmpi-not-here.so.99")
            .err()
            .expect("no such library");
        assert!(
            err.starts_with("cannot load libmpi-not-here.so.99"),
            "{err}"
        );
    }

    /// With MPI installed (required where `RECTRAIN_REQUIRE_MPI=1`, as in CI), one
    /// process started without a launcher is a world of one (a singleton), whose
    /// reduce and broadcast give back its own values.
    #[test]
    fn a_singleton_reduces_and_broadcasts_its_own_values() {
        let mpi = match Mpi::load() {
            Ok(m) => m,
            Err(e) if std::env::var_os("RECTRAIN_REQUIRE_MPI").is_none() => {
                eprintln!("SKIPPED: no MPI library ({e})");
                return;
            }
            Err(e) => panic!("RECTRAIN_REQUIRE_MPI is set but MPI does not load: {e}"),
        };
        mpi.init().unwrap();
        assert_eq!(
            (mpi.rank().unwrap(), mpi.size().unwrap()),
            (0, 1),
            "{}",
            mpi.describe()
        );
        let mut values = [1.5f32, -2.0, 3.25];
        mpi.reduce_sum(&mut values, 0).unwrap();
        assert_eq!(values, [1.5, -2.0, 3.25]);
        let mut buf = [7.0f32, 8.0];
        mpi.broadcast(&mut buf, 0).unwrap();
        assert_eq!(buf, [7.0, 8.0]);
        let mut bytes = *b"state";
        mpi.broadcast_bytes(&mut bytes, 0).unwrap();
        assert_eq!(&bytes, b"state");
        mpi.finalize().unwrap();
    }
}
