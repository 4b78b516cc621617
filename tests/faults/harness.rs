//! The fault tests' machinery: running a child with a timeout and its peak RSS, small
//! and read-only folders (tmpfs when the test can mount, else the fallbacks), snapshots
//! of folders, a seeded generator, and generated inputs.

use std::collections::BTreeMap;
use std::fs::{self, File};
use std::io::Read;
use std::os::unix::process::{CommandExt, ExitStatusExt};
use std::path::{Path, PathBuf};
use std::process::{Command, ExitStatus, Stdio};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use im2list::lst::LstEntry;
use pipeline_tests::tool;
// ---------------------------------------------------------------------------------
// Running a child with a timeout and measuring it

/// A finished run.
pub struct Finished {
    pub status: ExitStatus,
    pub stdout: Vec<u8>,
    pub stderr: Vec<u8>,
    /// Peak resident memory of the child, KiB.
    pub peak_rss_kib: u64,
    pub wall: Duration,
}

impl Finished {
    pub fn code(&self) -> Option<i32> {
        self.status.code()
    }

    pub fn err(&self) -> String {
        String::from_utf8_lossy(&self.stderr).into_owned()
    }

    pub fn out(&self) -> String {
        String::from_utf8_lossy(&self.stdout).into_owned()
    }

    /// Panic with the output unless the exit code is `code`.
    pub fn expect(&self, code: i32, what: &str) -> &Self {
        assert_eq!(
            self.code(),
            Some(code),
            "{what}: exit {:?} (expected {code})\n--- stdout\n{}\n--- stderr\n{}",
            self.status,
            tail(&self.out()),
            tail(&self.err())
        );
        self
    }
}

pub fn tail(s: &str) -> &str {
    let start = s.len().saturating_sub(4000);
    let start = (start..s.len())
        .find(|&i| s.is_char_boundary(i))
        .unwrap_or(s.len());
    &s[start..]
}

/// A started child whose stdout and stderr are being collected.
pub struct Running {
    pub pid: libc::pid_t,
    pub child: std::process::Child,
    pub stdout: JoinHandle<Vec<u8>>,
    pub stderr: JoinHandle<Vec<u8>>,
    pub start: Instant,
    pub what: String,
}

pub fn collect(mut r: impl Read + Send + 'static) -> JoinHandle<Vec<u8>> {
    thread::spawn(move || {
        let mut v = Vec::new();
        let _ = r.read_to_end(&mut v);
        v
    })
}

pub fn spawn(cmd: &mut Command, stdin: Stdio) -> Running {
    cmd.stdin(stdin)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let what = format!("{cmd:?}");
    let start = Instant::now();
    let mut child = cmd.spawn().unwrap_or_else(|e| panic!("spawn {what}: {e}"));
    let stdout = collect(child.stdout.take().unwrap());
    let stderr = collect(child.stderr.take().unwrap());
    Running {
        pid: child.id() as libc::pid_t,
        child,
        stdout,
        stderr,
        start,
        what,
    }
}

impl Running {
    pub fn kill(&self) {
        // SAFETY: plain syscall on our own child, which is not reaped before `finish`.
        unsafe { libc::kill(self.pid, libc::SIGKILL) };
    }

    /// Wait for the child (reaping it with `wait4` for its rusage); after `timeout` it
    /// is killed and the test fails as hung.
    pub fn finish(self, timeout: Duration) -> Finished {
        let deadline = self.start + timeout;
        let mut hung = false;
        let (status, usage) = loop {
            let mut status = 0;
            // SAFETY: zeroed rusage is a valid value; wait4 only writes to the two out-params.
            let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
            let r = unsafe { libc::wait4(self.pid, &mut status, libc::WNOHANG, &mut usage) };
            if r == self.pid {
                break (status, usage);
            }
            assert!(
                r == 0 || std::io::Error::last_os_error().kind() == std::io::ErrorKind::Interrupted,
                "wait4: {}",
                std::io::Error::last_os_error()
            );
            if !hung && Instant::now() > deadline {
                hung = true;
                self.kill();
            }
            thread::sleep(Duration::from_millis(10));
        };
        let wall = self.start.elapsed();
        drop(self.child);
        let stdout = self.stdout.join().unwrap();
        let stderr = self.stderr.join().unwrap();
        assert!(
            !hung,
            "{} hung: killed after {timeout:?}\n--- stderr\n{}",
            self.what,
            tail(&String::from_utf8_lossy(&stderr))
        );
        Finished {
            status: ExitStatus::from_raw(status),
            stdout,
            stderr,
            peak_rss_kib: usage.ru_maxrss.max(0) as u64,
            wall,
        }
    }
}

pub fn run(cmd: &mut Command, timeout: Duration) -> Finished {
    spawn(cmd, Stdio::null()).finish(timeout)
}

pub fn run_stdin_file(cmd: &mut Command, stdin: &Path, timeout: Duration) -> Finished {
    spawn(cmd, Stdio::from(File::open(stdin).unwrap())).finish(timeout)
}

// ---------------------------------------------------------------------------------
// Full disks and read-only folders

/// How a test gets a full disk.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DiskMode {
    /// A tmpfs of the given size.
    Tmpfs,
    /// A plain folder; the child gets `RLIMIT_FSIZE` = the size.
    FileSizeLimit,
}

/// A folder on a small "disk" (see the module docs); unmounted when dropped.
pub struct SmallDisk {
    pub dir: PathBuf,
    pub mode: DiskMode,
    pub bytes: u64,
    pub _tmp: tempfile::TempDir,
}

pub fn mount_allowed() -> bool {
    std::env::var_os("FAULTS_NO_MOUNT").is_none()
}

pub fn try_mount(dir: &Path, options: &str) -> bool {
    mount_allowed()
        && Command::new("mount")
            .args(["-t", "tmpfs", "-o", options, "tmpfs"])
            .arg(dir)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success())
}

pub fn unmount(dir: &Path) {
    for _ in 0..50 {
        let ok = Command::new("umount")
            .arg(dir)
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success());
        if ok {
            return;
        }
        thread::sleep(Duration::from_millis(100));
    }
    let _ = Command::new("umount").arg("-l").arg(dir).status();
}

impl SmallDisk {
    /// A tmpfs of `tmpfs_bytes`, else (cannot mount) a plain folder whose writers get
    /// `RLIMIT_FSIZE` = `fsize_bytes`.
    pub fn new(test: &str, tmpfs_bytes: u64, fsize_bytes: u64) -> Self {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("disk");
        fs::create_dir(&dir).unwrap();
        let (mode, bytes) = if try_mount(&dir, &format!("size={tmpfs_bytes}")) {
            (DiskMode::Tmpfs, tmpfs_bytes)
        } else {
            (DiskMode::FileSizeLimit, fsize_bytes)
        };
        eprintln!(
            "{test}: full-disk mode: {} of {bytes} bytes",
            match mode {
                DiskMode::Tmpfs => "tmpfs",
                DiskMode::FileSizeLimit => "RLIMIT_FSIZE (cannot mount here)",
            }
        );
        SmallDisk {
            dir,
            mode,
            bytes,
            _tmp: tmp,
        }
    }

    /// `cmd` set up to hit this disk's limit (RLIMIT_FSIZE in the fallback mode).
    pub fn limit<'c>(&self, cmd: &'c mut Command) -> &'c mut Command {
        if self.mode == DiskMode::FileSizeLimit {
            let bytes = self.bytes;
            // SAFETY: only async-signal-safe calls (signal, setrlimit) between fork and exec.
            unsafe {
                cmd.pre_exec(move || {
                    libc::signal(libc::SIGXFSZ, libc::SIG_IGN);
                    let lim = libc::rlimit {
                        rlim_cur: bytes,
                        rlim_max: bytes,
                    };
                    if libc::setrlimit(libc::RLIMIT_FSIZE, &lim) != 0 {
                        return Err(std::io::Error::last_os_error());
                    }
                    Ok(())
                });
            }
        }
        cmd
    }

    /// The error text a write past the limit gives.
    pub fn full_text(&self) -> &'static str {
        match self.mode {
            DiskMode::Tmpfs => "No space left on device",
            DiskMode::FileSizeLimit => "File too large",
        }
    }
}

impl Drop for SmallDisk {
    fn drop(&mut self) {
        if self.mode == DiskMode::Tmpfs {
            unmount(&self.dir);
        }
    }
}

/// A folder nothing can be created in, and the error text that gives; unmounted when
/// dropped.
pub struct ReadOnlyDir {
    pub dir: PathBuf,
    pub mounted: bool,
    /// The error texts a refused creation gives (sysfs: EACCES for files, EPERM for folders).
    pub texts: &'static [&'static str],
    pub _tmp: tempfile::TempDir,
}

impl ReadOnlyDir {
    pub fn new(test: &str) -> Self {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("ro");
        fs::create_dir(&dir).unwrap();
        // SAFETY: geteuid has no preconditions.
        let root = unsafe { libc::geteuid() } == 0;
        let (dir, mounted, text, mode) = if try_mount(&dir, "ro,size=64k") {
            (dir, true, &["Read-only file system"][..], "read-only tmpfs")
        } else if !root {
            use std::os::unix::fs::PermissionsExt;
            fs::set_permissions(&dir, fs::Permissions::from_mode(0o555)).unwrap();
            (dir, false, &["Permission denied"][..], "chmod 555 folder")
        } else {
            (
                PathBuf::from("/sys"),
                false,
                &["Permission denied", "Operation not permitted"][..],
                "/sys (root, cannot mount)",
            )
        };
        eprintln!("{test}: read-only mode: {mode}");
        ReadOnlyDir {
            dir,
            mounted,
            texts: text,
            _tmp: tmp,
        }
    }
}

impl ReadOnlyDir {
    /// Whether `err` holds one of the refusal texts right after `what` (`what: text`).
    pub fn refused(&self, err: &str, what: &Path) -> bool {
        self.texts
            .iter()
            .any(|t| err.contains(&format!("{}: {t}", what.display())))
    }
}

impl Drop for ReadOnlyDir {
    fn drop(&mut self) {
        if self.mounted {
            unmount(&self.dir);
        } else if self.dir != Path::new("/sys") {
            use std::os::unix::fs::PermissionsExt;
            let _ = fs::set_permissions(&self.dir, fs::Permissions::from_mode(0o755));
        }
    }
}

// ---------------------------------------------------------------------------------
// Data

/// Every file under `dir` (recursively, hidden ones included), relative, with its bytes.
pub fn snapshot(dir: &Path) -> BTreeMap<String, Vec<u8>> {
    let mut files = BTreeMap::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        let Ok(entries) = fs::read_dir(&d) else {
            continue;
        };
        for e in entries {
            let p = e.unwrap().path();
            if p.is_dir() {
                stack.push(p);
            } else {
                let rel = p.strip_prefix(dir).unwrap().to_string_lossy().into_owned();
                files.insert(rel, fs::read(&p).unwrap_or_default());
            }
        }
    }
    files
}

/// Names under `dir` that look temporary (`*.tmp*`, `.*`).
pub fn temporaries(dir: &Path) -> Vec<String> {
    snapshot(dir)
        .into_keys()
        .filter(|n| {
            n.contains(".tmp")
                || Path::new(n)
                    .components()
                    .any(|c| c.as_os_str().to_string_lossy().starts_with('.'))
        })
        .collect()
}

/// A small deterministic generator (xorshift64*), for kill points and noise.
pub struct Rng(pub u64);

impl Rng {
    pub fn seeded(default: u64) -> Self {
        let seed = std::env::var("FAULTS_SEED")
            .ok()
            .and_then(|s| s.parse().ok())
            .unwrap_or(default);
        eprintln!("kill points from seed {seed} (FAULTS_SEED)");
        Rng(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1)
    }

    pub fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    /// Uniform in [0, 1).
    pub fn unit(&mut self) -> f64 {
        (self.next() >> 11) as f64 / (1u64 << 53) as f64
    }
}

/// `n` files of `size` incompressible bytes in `dir` (`f<i>.bin`), and their list.
pub fn random_files(dir: &Path, n: usize, size: usize, seed: u64) -> String {
    fs::create_dir_all(dir).unwrap();
    let mut rng = Rng(seed | 1);
    let mut list = String::new();
    for i in 0..n {
        let body: Vec<u8> = (0..size).map(|_| rng.next() as u8).collect();
        let name = format!("f{i}.bin");
        fs::write(dir.join(&name), body).unwrap();
        list.push_str(&LstEntry::new(i as u64, (i % 2) as f64, name).to_line());
    }
    list
}

/// `n` noisy PNGs of `size`×`size` per class (`dark/`, `bright/`) under `root`.
pub fn noisy_pngs(root: &Path, n: usize, size: u32) {
    let mut rng = Rng(7);
    for (class, base) in [("bright", 190u8), ("dark", 20u8)] {
        fs::create_dir_all(root.join(class)).unwrap();
        for i in 0..n {
            let img = image::RgbImage::from_fn(size, size, |_, _| {
                let t = (rng.next() % 50) as u8;
                image::Rgb([base + t, base + t / 2, base + (50 - t) / 2])
            });
            img.save(root.join(class).join(format!("{i:03}.png")))
                .unwrap();
        }
    }
}

pub fn im2rec_stdin(root: &Path, out: &Path, threads: usize, extra: &[&str]) -> Command {
    let mut cmd = tool("im2rec");
    cmd.args(["--num-thread", &threads.to_string()])
        .args(extra)
        .arg("-")
        .arg(root)
        .arg("-o")
        .arg(out);
    cmd
}
