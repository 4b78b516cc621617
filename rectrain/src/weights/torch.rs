//! Reader for PyTorch's `torch.save` zip format (PyTorch ≥ 1.6, the format of
//! torchvision's published `.pth` files).
//!
//! The file is a zip archive (entries stored uncompressed) holding
//! `<archive>/data.pkl`, a pickle of the saved object whose tensors refer to
//! storages by key through pickle "persistent ids", and one entry
//! `<archive>/data/<key>` with the raw little-endian bytes of each storage.
//!
//! Only what a `state_dict` (or a checkpoint dict around one) needs is interpreted:
//! dicts, lists, tuples, scalars, strings, `collections.OrderedDict`,
//! `torch._utils._rebuild_tensor_v2`/`_v3` and `_rebuild_parameter`. Any other object
//! is kept as an opaque value, never executed: reading a file runs no code from it.

use std::cell::RefCell;
use std::collections::{BTreeMap, HashMap};
use std::rc::Rc;

use burn::tensor::{bf16, f16};

use super::{HostData, HostTensor};

/// Why a torch file could not be read (the caller adds the path).
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum TorchError {
    /// The zip container is damaged or uses a feature we do not read.
    #[error("zip archive: {0}")]
    Zip(String),
    /// The pickle stream is damaged or uses an opcode we do not read.
    #[error("pickle at byte {offset} of {entry}: {message}")]
    Pickle {
        /// The archive entry (`.../data.pkl`).
        entry: String,
        /// Byte offset of the failing opcode.
        offset: usize,
        /// What went wrong.
        message: String,
    },
    /// The pickle was read but does not describe tensors we can load.
    #[error("{0}")]
    Content(String),
}

fn zip_err(msg: impl Into<String>) -> TorchError {
    TorchError::Zip(msg.into())
}

// ---------------------------------------------------------------------------
// Zip (stored entries only; torch never compresses)
// ---------------------------------------------------------------------------

struct ZipEntry {
    method: u16,
    size: u64,
    local_offset: u64,
}

fn u16_at(b: &[u8], at: usize) -> Option<u16> {
    b.get(at..at + 2).map(|s| u16::from_le_bytes([s[0], s[1]]))
}
fn u32_at(b: &[u8], at: usize) -> Option<u32> {
    b.get(at..at + 4)
        .map(|s| u32::from_le_bytes(s.try_into().expect("4 bytes")))
}
fn u64_at(b: &[u8], at: usize) -> Option<u64> {
    b.get(at..at + 8)
        .map(|s| u64::from_le_bytes(s.try_into().expect("8 bytes")))
}

/// Returns the zip's central directory as name → entry.
fn zip_directory(b: &[u8]) -> Result<HashMap<String, ZipEntry>, TorchError> {
    const EOCD: u32 = 0x0605_4b50;
    let search_from = b.len().saturating_sub(22 + 65_535);
    let eocd = (search_from..=b.len().saturating_sub(22))
        .rev()
        .find(|&i| u32_at(b, i) == Some(EOCD))
        .ok_or_else(|| {
            zip_err("no end-of-central-directory record (not a zip file, or truncated)")
        })?;
    let short = |at| u16_at(b, eocd + at).ok_or_else(|| zip_err("truncated end record"));
    let long = |at| u32_at(b, eocd + at).ok_or_else(|| zip_err("truncated end record"));
    let mut count = u64::from(short(10)?);
    let mut cd_offset = u64::from(long(16)?);
    if count == 0xFFFF || cd_offset == 0xFFFF_FFFF {
        // Zip64: the locator sits just before the classic end record.
        let loc = eocd
            .checked_sub(20)
            .filter(|&l| u32_at(b, l) == Some(0x0706_4b50))
            .ok_or_else(|| zip_err("zip64 end locator missing"))?;
        let rec = u64_at(b, loc + 8).ok_or_else(|| zip_err("zip64 locator truncated"))? as usize;
        if u32_at(b, rec) != Some(0x0606_4b50) {
            return Err(zip_err("zip64 end record missing"));
        }
        count = u64_at(b, rec + 32).ok_or_else(|| zip_err("zip64 end record truncated"))?;
        cd_offset = u64_at(b, rec + 48).ok_or_else(|| zip_err("zip64 end record truncated"))?;
    }
    let mut entries = HashMap::new();
    let mut at = usize::try_from(cd_offset).map_err(|_| zip_err("central directory offset"))?;
    for i in 0..count {
        let bad = || {
            zip_err(format!(
                "central directory entry {i} at byte {at} is truncated"
            ))
        };
        if u32_at(b, at) != Some(0x0201_4b50) {
            return Err(zip_err(format!(
                "bad central directory signature at byte {at}"
            )));
        }
        let method = u16_at(b, at + 10).ok_or_else(bad)?;
        let mut size = u64::from(u32_at(b, at + 20).ok_or_else(bad)?);
        let mut usize_ = u64::from(u32_at(b, at + 24).ok_or_else(bad)?);
        let name_len = usize::from(u16_at(b, at + 28).ok_or_else(bad)?);
        let extra_len = usize::from(u16_at(b, at + 30).ok_or_else(bad)?);
        let comment_len = usize::from(u16_at(b, at + 32).ok_or_else(bad)?);
        let mut local_offset = u64::from(u32_at(b, at + 42).ok_or_else(bad)?);
        let name = b.get(at + 46..at + 46 + name_len).ok_or_else(bad)?;
        let name = String::from_utf8_lossy(name).into_owned();
        // Zip64 extended information: only the fields that overflowed are present.
        let extra = b
            .get(at + 46 + name_len..at + 46 + name_len + extra_len)
            .ok_or_else(bad)?;
        let mut e = 0;
        while e + 4 <= extra.len() {
            let id = u16_at(extra, e).unwrap_or(0);
            let len = usize::from(u16_at(extra, e + 2).unwrap_or(0));
            if id == 0x0001 {
                let mut f = e + 4;
                for field in [&mut usize_, &mut size, &mut local_offset] {
                    if *field == 0xFFFF_FFFF {
                        *field = u64_at(extra, f).ok_or_else(bad)?;
                        f += 8;
                    }
                }
            }
            e += 4 + len;
        }
        let _ = usize_;
        entries.insert(
            name,
            ZipEntry {
                method,
                size,
                local_offset,
            },
        );
        at += 46 + name_len + extra_len + comment_len;
    }
    Ok(entries)
}

fn zip_data<'a>(b: &'a [u8], name: &str, e: &ZipEntry) -> Result<&'a [u8], TorchError> {
    if e.method != 0 {
        return Err(zip_err(format!(
            "entry {name} is compressed (method {}); torch.save writes stored entries only",
            e.method
        )));
    }
    let at = usize::try_from(e.local_offset).map_err(|_| zip_err("offset overflow"))?;
    if u32_at(b, at) != Some(0x0403_4b50) {
        return Err(zip_err(format!("bad local header for {name} at byte {at}")));
    }
    let bad = || zip_err(format!("local header of {name} truncated"));
    let n = usize::from(u16_at(b, at + 26).ok_or_else(bad)?);
    let x = usize::from(u16_at(b, at + 28).ok_or_else(bad)?);
    let start = at + 30 + n + x;
    let end = usize::try_from(e.size)
        .ok()
        .and_then(|s| start.checked_add(s))
        .ok_or_else(bad)?;
    b.get(start..end).ok_or_else(|| {
        zip_err(format!(
            "entry {name} runs past the end of the file ({end} > {} bytes): truncated download?",
            b.len()
        ))
    })
}

// ---------------------------------------------------------------------------
// Pickle (the subset torch.save produces)
// ---------------------------------------------------------------------------

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Elem {
    F32,
    F64,
    F16,
    Bf16,
    I64,
    I32,
    I16,
    I8,
    U8,
    Bool,
}

impl Elem {
    fn size(self) -> usize {
        match self {
            Elem::F64 | Elem::I64 => 8,
            Elem::F32 | Elem::I32 => 4,
            Elem::F16 | Elem::Bf16 | Elem::I16 => 2,
            Elem::I8 | Elem::U8 | Elem::Bool => 1,
        }
    }
    fn from_storage(name: &str) -> Option<Elem> {
        Some(match name {
            "FloatStorage" => Elem::F32,
            "DoubleStorage" => Elem::F64,
            "HalfStorage" => Elem::F16,
            "BFloat16Storage" => Elem::Bf16,
            "LongStorage" => Elem::I64,
            "IntStorage" => Elem::I32,
            "ShortStorage" => Elem::I16,
            "CharStorage" => Elem::I8,
            "ByteStorage" => Elem::U8,
            "BoolStorage" => Elem::Bool,
            _ => return None,
        })
    }
    fn from_dtype(name: &str) -> Option<Elem> {
        Some(match name {
            "float32" | "float" => Elem::F32,
            "float64" | "double" => Elem::F64,
            "float16" | "half" => Elem::F16,
            "bfloat16" => Elem::Bf16,
            "int64" | "long" => Elem::I64,
            "int32" | "int" => Elem::I32,
            "int16" | "short" => Elem::I16,
            "int8" => Elem::I8,
            "uint8" => Elem::U8,
            "bool" => Elem::Bool,
            _ => return None,
        })
    }
}

#[derive(Clone, Debug)]
struct StorageRef {
    elem: Option<Elem>,
    key: String,
    /// Legacy files only: element offset of a storage view into its root storage.
    view_offset: usize,
}

#[derive(Clone, Debug)]
struct TensorRef {
    storage: StorageRef,
    offset: usize,
    shape: Vec<usize>,
    stride: Vec<usize>,
}

type DictRc = Rc<RefCell<Vec<(Value, Value)>>>;
type ListRc = Rc<RefCell<Vec<Value>>>;

// Scalar payloads are only read through `Debug` (in error messages).
#[allow(dead_code)]
#[derive(Clone, Debug)]
enum Value {
    None,
    Bool(bool),
    Int(i64),
    Float(f64),
    Str(String),
    Bytes(Vec<u8>),
    Tuple(Vec<Value>),
    List(ListRc),
    Dict(DictRc),
    Global(String, String),
    Storage(StorageRef),
    Tensor(TensorRef),
    /// An object we do not interpret (e.g. an `argparse.Namespace` in a checkpoint).
    Opaque(String),
}

impl Value {
    fn describe(&self) -> String {
        match self {
            Value::Opaque(s) => s.clone(),
            Value::Global(m, n) => format!("{m}.{n}"),
            other => format!("{other:?}").chars().take(60).collect(),
        }
    }
}

struct Unpickler<'a> {
    b: &'a [u8],
    pos: usize,
    entry: &'a str,
    stack: Vec<Value>,
    marks: Vec<usize>,
    memo: HashMap<u32, Value>,
    /// Element type of every storage key seen in a persistent id.
    storages: HashMap<String, Option<Elem>>,
}

impl<'a> Unpickler<'a> {
    fn err(&self, offset: usize, message: impl Into<String>) -> TorchError {
        TorchError::Pickle {
            entry: self.entry.to_string(),
            offset,
            message: message.into(),
        }
    }
    fn take(&mut self, n: usize) -> Result<&'a [u8], TorchError> {
        let s = self
            .b
            .get(self.pos..self.pos + n)
            .ok_or_else(|| self.err(self.pos, "unexpected end of pickle"))?;
        self.pos += n;
        Ok(s)
    }
    fn u8(&mut self) -> Result<u8, TorchError> {
        Ok(self.take(1)?[0])
    }
    fn u16(&mut self) -> Result<u16, TorchError> {
        Ok(u16::from_le_bytes(self.take(2)?.try_into().expect("2")))
    }
    fn u32(&mut self) -> Result<u32, TorchError> {
        Ok(u32::from_le_bytes(self.take(4)?.try_into().expect("4")))
    }
    fn u64(&mut self) -> Result<u64, TorchError> {
        Ok(u64::from_le_bytes(self.take(8)?.try_into().expect("8")))
    }
    fn line(&mut self) -> Result<String, TorchError> {
        let rest = &self.b[self.pos.min(self.b.len())..];
        let end = rest
            .iter()
            .position(|&c| c == b'\n')
            .ok_or_else(|| self.err(self.pos, "unterminated text line"))?;
        let s = String::from_utf8_lossy(&rest[..end]).into_owned();
        self.pos += end + 1;
        Ok(s)
    }
    fn string(&mut self, n: usize) -> Result<String, TorchError> {
        let at = self.pos;
        let s = self.take(n)?;
        String::from_utf8(s.to_vec()).map_err(|_| self.err(at, "string is not UTF-8"))
    }
    fn pop(&mut self, at: usize) -> Result<Value, TorchError> {
        self.stack
            .pop()
            .ok_or_else(|| self.err(at, "stack underflow"))
    }
    fn pop_mark(&mut self, at: usize) -> Result<Vec<Value>, TorchError> {
        let m = self
            .marks
            .pop()
            .ok_or_else(|| self.err(at, "MARK missing"))?;
        if m > self.stack.len() {
            return Err(self.err(at, "MARK above the stack"));
        }
        Ok(self.stack.split_off(m))
    }
    fn top(&mut self, at: usize) -> Result<&mut Value, TorchError> {
        let e = self.err(at, "stack underflow");
        self.stack.last_mut().ok_or(e)
    }
    fn memo_put(&mut self, key: u32, at: usize) -> Result<(), TorchError> {
        let v = self
            .stack
            .last()
            .cloned()
            .ok_or_else(|| self.err(at, "memoize on an empty stack"))?;
        self.memo.insert(key, v);
        Ok(())
    }
    fn memo_get(&mut self, key: u32, at: usize) -> Result<(), TorchError> {
        let v = self
            .memo
            .get(&key)
            .cloned()
            .ok_or_else(|| self.err(at, format!("memo key {key} missing")))?;
        self.stack.push(v);
        Ok(())
    }

    fn new(b: &'a [u8], entry: &'a str) -> Self {
        Unpickler {
            b,
            pos: 0,
            entry,
            stack: Vec::new(),
            marks: Vec::new(),
            memo: HashMap::new(),
            storages: HashMap::new(),
        }
    }

    /// Runs one pickle from the current position to its STOP (each `pickle.dump`
    /// starts with an empty memo).
    fn run(&mut self) -> Result<Value, TorchError> {
        self.stack.clear();
        self.marks.clear();
        self.memo.clear();
        loop {
            let at = self.pos;
            let op = self.u8()?;
            match op {
                0x80 => {
                    self.u8()?; // PROTO
                }
                0x95 => {
                    self.u64()?; // FRAME
                }
                b'.' => return self.pop(at),
                b'(' => self.marks.push(self.stack.len()),
                b'N' => self.stack.push(Value::None),
                0x88 => self.stack.push(Value::Bool(true)),
                0x89 => self.stack.push(Value::Bool(false)),
                b'J' => {
                    let v = self.u32()? as i32;
                    self.stack.push(Value::Int(i64::from(v)));
                }
                b'K' => {
                    let v = self.u8()?;
                    self.stack.push(Value::Int(i64::from(v)));
                }
                b'M' => {
                    let v = self.u16()?;
                    self.stack.push(Value::Int(i64::from(v)));
                }
                0x8a => {
                    // LONG1: little-endian two's complement of n bytes.
                    let n = usize::from(self.u8()?);
                    let bytes = self.take(n)?;
                    if n > 8 {
                        // Only torch's legacy magic number is this wide.
                        self.stack.push(Value::Opaque("wide integer".into()));
                        continue;
                    }
                    let mut v: i64 = 0;
                    for (i, &byte) in bytes.iter().enumerate() {
                        v |= i64::from(byte) << (8 * i);
                    }
                    if n > 0 && n < 8 && bytes[n - 1] & 0x80 != 0 {
                        v -= 1i64 << (8 * n);
                    }
                    self.stack.push(Value::Int(v));
                }
                b'G' => {
                    let v = f64::from_be_bytes(self.take(8)?.try_into().expect("8"));
                    self.stack.push(Value::Float(v));
                }
                b'X' => {
                    let n = self.u32()? as usize;
                    let s = self.string(n)?;
                    self.stack.push(Value::Str(s));
                }
                0x8c => {
                    let n = usize::from(self.u8()?);
                    let s = self.string(n)?;
                    self.stack.push(Value::Str(s));
                }
                0x8d => {
                    let n = usize::try_from(self.u64()?)
                        .map_err(|_| self.err(at, "string too long"))?;
                    let s = self.string(n)?;
                    self.stack.push(Value::Str(s));
                }
                b'U' | b'C' => {
                    let n = usize::from(self.u8()?);
                    let s = self.take(n)?.to_vec();
                    self.stack.push(Value::Bytes(s));
                }
                b'T' | b'B' => {
                    let n = self.u32()? as usize;
                    let s = self.take(n)?.to_vec();
                    self.stack.push(Value::Bytes(s));
                }
                0x8e => {
                    let n =
                        usize::try_from(self.u64()?).map_err(|_| self.err(at, "bytes too long"))?;
                    let s = self.take(n)?.to_vec();
                    self.stack.push(Value::Bytes(s));
                }
                b')' => self.stack.push(Value::Tuple(Vec::new())),
                b't' => {
                    let items = self.pop_mark(at)?;
                    self.stack.push(Value::Tuple(items));
                }
                0x85..=0x87 => {
                    let n = usize::from(op - 0x84);
                    if self.stack.len() < n {
                        return Err(self.err(at, "stack underflow"));
                    }
                    let items = self.stack.split_off(self.stack.len() - n);
                    self.stack.push(Value::Tuple(items));
                }
                b'}' => self
                    .stack
                    .push(Value::Dict(Rc::new(RefCell::new(Vec::new())))),
                b']' => self
                    .stack
                    .push(Value::List(Rc::new(RefCell::new(Vec::new())))),
                b'l' => {
                    let items = self.pop_mark(at)?;
                    self.stack.push(Value::List(Rc::new(RefCell::new(items))));
                }
                b'd' => {
                    let items = self.pop_mark(at)?;
                    let pairs = pairs(items).ok_or_else(|| self.err(at, "odd DICT items"))?;
                    self.stack.push(Value::Dict(Rc::new(RefCell::new(pairs))));
                }
                0x8f => self.stack.push(Value::Opaque("set".into())),
                0x90 => {
                    self.pop_mark(at)?; // ADDITEMS to a set we do not keep
                }
                0x91 => {
                    self.pop_mark(at)?;
                    self.stack.push(Value::Opaque("frozenset".into()));
                }
                b'a' => {
                    let v = self.pop(at)?;
                    match self.top(at)? {
                        Value::List(l) => l.borrow_mut().push(v),
                        _ => return Err(self.err(at, "APPEND to a non-list")),
                    }
                }
                b'e' => {
                    let items = self.pop_mark(at)?;
                    match self.top(at)? {
                        Value::List(l) => l.borrow_mut().extend(items),
                        _ => return Err(self.err(at, "APPENDS to a non-list")),
                    }
                }
                b's' => {
                    let v = self.pop(at)?;
                    let k = self.pop(at)?;
                    match self.top(at)? {
                        Value::Dict(d) => d.borrow_mut().push((k, v)),
                        _ => return Err(self.err(at, "SETITEM on a non-dict")),
                    }
                }
                b'u' => {
                    let items = self.pop_mark(at)?;
                    let p = pairs(items).ok_or_else(|| self.err(at, "odd SETITEMS items"))?;
                    match self.top(at)? {
                        Value::Dict(d) => d.borrow_mut().extend(p),
                        // OrderedDict subclasses restored through REDUCE are dicts too; any
                        // other object's items are not needed.
                        Value::Opaque(_) => {}
                        _ => return Err(self.err(at, "SETITEMS on a non-dict")),
                    }
                }
                b'0' => {
                    self.pop(at)?;
                }
                b'1' => {
                    self.pop_mark(at)?;
                }
                b'2' => {
                    let v = self
                        .stack
                        .last()
                        .cloned()
                        .ok_or_else(|| self.err(at, "DUP on an empty stack"))?;
                    self.stack.push(v);
                }
                b'c' => {
                    let module = self.line()?;
                    let name = self.line()?;
                    self.stack.push(Value::Global(module, name));
                }
                0x93 => {
                    let name = self.pop(at)?;
                    let module = self.pop(at)?;
                    match (module, name) {
                        (Value::Str(m), Value::Str(n)) => self.stack.push(Value::Global(m, n)),
                        _ => return Err(self.err(at, "STACK_GLOBAL needs two strings")),
                    }
                }
                b'q' => {
                    let k = u32::from(self.u8()?);
                    self.memo_put(k, at)?;
                }
                b'r' => {
                    let k = self.u32()?;
                    self.memo_put(k, at)?;
                }
                0x94 => {
                    let k = self.memo.len() as u32;
                    self.memo_put(k, at)?;
                }
                b'h' => {
                    let k = u32::from(self.u8()?);
                    self.memo_get(k, at)?;
                }
                b'j' => {
                    let k = self.u32()?;
                    self.memo_get(k, at)?;
                }
                b'Q' => {
                    let pid = self.pop(at)?;
                    let storage = persistent_storage(&pid).map_err(|m| self.err(at, m))?;
                    self.storages
                        .entry(storage.key.clone())
                        .or_insert(storage.elem);
                    self.stack.push(Value::Storage(storage));
                }
                b'R' => {
                    let args = self.pop(at)?;
                    let callable = self.pop(at)?;
                    let v = reduce(callable, args).map_err(|m| self.err(at, m))?;
                    self.stack.push(v);
                }
                0x81 => {
                    let _args = self.pop(at)?;
                    let cls = self.pop(at)?;
                    self.stack.push(Value::Opaque(cls.describe()));
                }
                b'b' => {
                    // BUILD: set the state of the object below; dict attributes such as an
                    // OrderedDict's `_metadata` are not needed.
                    self.pop(at)?;
                    self.top(at)?;
                }
                other => {
                    return Err(self.err(at, format!("unsupported pickle opcode 0x{other:02x}")))
                }
            }
        }
    }
}

fn pairs(items: Vec<Value>) -> Option<Vec<(Value, Value)>> {
    if !items.len().is_multiple_of(2) {
        return None;
    }
    let mut it = items.into_iter();
    let mut out = Vec::new();
    while let (Some(k), Some(v)) = (it.next(), it.next()) {
        out.push((k, v));
    }
    Some(out)
}

fn as_usize_vec(v: &Value, what: &str) -> Result<Vec<usize>, String> {
    match v {
        Value::Tuple(items) => items
            .iter()
            .map(|i| match i {
                Value::Int(n) if *n >= 0 => Ok(*n as usize),
                _ => Err(format!("{what} holds a non-integer")),
            })
            .collect(),
        _ => Err(format!("{what} is not a tuple")),
    }
}

/// `('storage', torch.FloatStorage, key, location, numel)`; legacy files add a sixth
/// item, `None` or `(view_key, offset, size)` for a view into storage `key`.
fn persistent_storage(pid: &Value) -> Result<StorageRef, String> {
    let Value::Tuple(items) = pid else {
        return Err("persistent id is not a tuple".into());
    };
    match items.as_slice() {
        [Value::Str(tag), Value::Global(_, type_name), Value::Str(key), rest @ ..]
            if tag == "storage" =>
        {
            let view_offset = match rest.get(2) {
                Some(Value::Tuple(view)) => match view.get(1) {
                    Some(Value::Int(o)) if *o >= 0 => *o as usize,
                    _ => return Err("storage view without an offset".into()),
                },
                _ => 0,
            };
            Ok(StorageRef {
                // UntypedStorage (with _rebuild_tensor_v3) has its dtype on the tensor.
                elem: Elem::from_storage(type_name),
                key: key.clone(),
                view_offset,
            })
        }
        _ => Err(format!(
            "unsupported persistent id {}",
            Value::Tuple(items.clone()).describe()
        )),
    }
}

fn reduce(callable: Value, args: Value) -> Result<Value, String> {
    let Value::Global(module, name) = &callable else {
        return Ok(Value::Opaque(format!("call of {}", callable.describe())));
    };
    let args = match args {
        Value::Tuple(a) => a,
        other => return Err(format!("{module}.{name} called with {}", other.describe())),
    };
    match (module.as_str(), name.as_str()) {
        ("collections", "OrderedDict") | ("builtins" | "__builtin__", "dict") => {
            Ok(Value::Dict(Rc::new(RefCell::new(Vec::new()))))
        }
        ("torch._utils", "_rebuild_tensor_v2" | "_rebuild_tensor_v3") => {
            let [storage, offset, size, stride, ..] = args.as_slice() else {
                return Err(format!("{name} needs at least 4 arguments"));
            };
            let Value::Storage(storage) = storage else {
                return Err(format!("{name}: first argument is not a storage"));
            };
            let Value::Int(offset) = offset else {
                return Err(format!("{name}: storage offset is not an integer"));
            };
            let mut storage = storage.clone();
            if name == "_rebuild_tensor_v3" {
                if let Some(Value::Global(_, dtype)) = args.get(6) {
                    storage.elem = Elem::from_dtype(dtype);
                }
            }
            Ok(Value::Tensor(TensorRef {
                storage,
                offset: usize::try_from(*offset).map_err(|_| "negative storage offset")?,
                shape: as_usize_vec(size, "tensor size")?,
                stride: as_usize_vec(stride, "tensor stride")?,
            }))
        }
        ("torch._utils", "_rebuild_parameter" | "_rebuild_parameter_with_state") => args
            .into_iter()
            .next()
            .ok_or_else(|| format!("{name} without arguments")),
        _ => Ok(Value::Opaque(format!("{module}.{name}(...)"))),
    }
}

// ---------------------------------------------------------------------------
// From the unpickled object to named host tensors
// ---------------------------------------------------------------------------

/// Reads a torch zip-format file: every tensor of the state dict it holds, by name.
///
/// When the pickled object is a dict whose values are not tensors (a training
/// checkpoint), the first of `state_dict`, `model_state_dict`, `model`, `net` and
/// `module` that is a dict of tensors is used.
pub(super) fn read_torch_zip(bytes: &[u8]) -> Result<BTreeMap<String, HostTensor>, TorchError> {
    let dir = zip_directory(bytes)?;
    let pkl_name = dir
        .keys()
        .filter(|n| n.ends_with("/data.pkl") && n.matches('/').count() == 1)
        .min()
        .cloned()
        .ok_or_else(|| zip_err("no <archive>/data.pkl entry: not a torch.save file"))?;
    let archive = pkl_name.trim_end_matches("data.pkl").to_string();
    if let Some(e) = dir.get(&format!("{archive}byteorder")) {
        let order = zip_data(bytes, "byteorder", e)?;
        if order != b"little" {
            return Err(TorchError::Content(format!(
                "tensors are stored {}-endian; only little-endian files are supported",
                String::from_utf8_lossy(order)
            )));
        }
    }
    let pkl = zip_data(bytes, &pkl_name, &dir[&pkl_name])?;
    let root = Unpickler::new(pkl, &pkl_name).run()?;
    tensors_of(&root, |key| {
        let entry_name = format!("{archive}data/{key}");
        let entry = dir
            .get(&entry_name)
            .ok_or_else(|| TorchError::Content(format!("storage entry {entry_name} missing")))?;
        zip_data(bytes, &entry_name, entry)
    })
}

/// Reads a file in torch's legacy (pre-1.6) format: five pickles (magic number,
/// protocol version, system info, the object, the sorted storage keys), then each
/// storage as a little-endian u64 element count followed by its raw bytes.
pub(super) fn read_torch_legacy(bytes: &[u8]) -> Result<BTreeMap<String, HostTensor>, TorchError> {
    let mut u = Unpickler::new(bytes, "legacy pickle stream");
    for _ in 0..3 {
        u.run()?; // magic number, protocol version, sys_info
    }
    let root = u.run()?;
    let keys = match u.run()? {
        Value::List(l) => l
            .borrow()
            .iter()
            .map(|k| match k {
                Value::Str(s) => Ok(s.clone()),
                other => Err(TorchError::Content(format!(
                    "storage key {} is not a string",
                    other.describe()
                ))),
            })
            .collect::<Result<Vec<_>, _>>()?,
        other => {
            return Err(TorchError::Content(format!(
                "expected the list of storage keys, found {}",
                other.describe()
            )))
        }
    };
    let mut pos = u.pos;
    let mut raw: HashMap<String, &[u8]> = HashMap::new();
    for key in keys {
        let elem = u.storages.get(&key).copied().flatten().ok_or_else(|| {
            TorchError::Content(format!("storage {key} has an unknown element type"))
        })?;
        let numel = u64_at(bytes, pos).ok_or_else(|| {
            TorchError::Content(format!("storage {key}: file truncated at byte {pos}"))
        })?;
        let len = usize::try_from(numel)
            .ok()
            .and_then(|n| n.checked_mul(elem.size()))
            .ok_or_else(|| TorchError::Content(format!("storage {key}: bad size {numel}")))?;
        let start = pos + 8;
        let data = bytes.get(start..start + len).ok_or_else(|| {
            TorchError::Content(format!(
                "storage {key}: needs {len} bytes from byte {start}, the file has {}",
                bytes.len()
            ))
        })?;
        raw.insert(key, data);
        pos = start + len;
    }
    tensors_of(&root, |key| {
        raw.get(key)
            .copied()
            .ok_or_else(|| TorchError::Content(format!("storage {key} missing")))
    })
}

/// Every named tensor of the state dict in `root`, with storages from `storage`.
fn tensors_of<'b>(
    root: &Value,
    mut storage: impl FnMut(&str) -> Result<&'b [u8], TorchError>,
) -> Result<BTreeMap<String, HostTensor>, TorchError> {
    let dict = state_dict_of(root)?;
    let mut out = BTreeMap::new();
    for (k, v) in dict.borrow().iter() {
        let (Value::Str(name), Value::Tensor(t)) = (k, v) else {
            continue; // non-tensor entries (e.g. `_metadata`, hyperparameters)
        };
        let raw = storage(&t.storage.key)
            .map_err(|e| TorchError::Content(format!("tensor {name}: {e}")))?;
        let tensor =
            materialise(raw, t).map_err(|m| TorchError::Content(format!("tensor {name}: {m}")))?;
        out.insert(name.clone(), tensor);
    }
    Ok(out)
}

fn is_tensor_dict(d: &DictRc) -> bool {
    d.borrow()
        .iter()
        .any(|(_, v)| matches!(v, Value::Tensor(_)))
}

fn state_dict_of(root: &Value) -> Result<DictRc, TorchError> {
    let Value::Dict(d) = root else {
        return Err(TorchError::Content(format!(
            "the file holds {}, not a state dict (save model.state_dict(), not the model)",
            root.describe()
        )));
    };
    if is_tensor_dict(d) {
        return Ok(d.clone());
    }
    for wanted in ["state_dict", "model_state_dict", "model", "net", "module"] {
        for (k, v) in d.borrow().iter() {
            if let (Value::Str(k), Value::Dict(inner)) = (k, v) {
                if k == wanted && is_tensor_dict(inner) {
                    return Ok(inner.clone());
                }
            }
        }
    }
    let keys: Vec<String> = d
        .borrow()
        .iter()
        .filter_map(|(k, _)| match k {
            Value::Str(s) => Some(s.clone()),
            _ => None,
        })
        .take(10)
        .collect();
    Err(TorchError::Content(format!(
        "no tensors found in the saved dict (top-level keys: {})",
        keys.join(", ")
    )))
}

fn materialise(raw: &[u8], t: &TensorRef) -> Result<HostTensor, String> {
    let elem = t.storage.elem.ok_or("storage of unknown element type")?;
    if t.shape.len() != t.stride.len() {
        return Err("size and stride differ in length".into());
    }
    let numel: usize = t.shape.iter().product();
    let size = elem.size();
    // Element index (in the storage) of every element, in row-major order of `shape`.
    let mut indices = Vec::with_capacity(numel);
    let contiguous = {
        let mut expect = 1;
        let mut ok = true;
        for (d, s) in t.shape.iter().zip(&t.stride).rev() {
            if *d != 1 && *s != expect {
                ok = false;
            }
            expect *= d;
        }
        ok
    };
    let offset = t.offset + t.storage.view_offset;
    if contiguous {
        indices.extend(offset..offset + numel);
    } else if numel > 0 {
        let mut idx = vec![0usize; t.shape.len()];
        for _ in 0..numel {
            let at = offset + idx.iter().zip(&t.stride).map(|(i, s)| i * s).sum::<usize>();
            indices.push(at);
            for d in (0..idx.len()).rev() {
                idx[d] += 1;
                if idx[d] < t.shape[d] {
                    break;
                }
                idx[d] = 0;
            }
        }
    }
    let last = indices.iter().max().copied().unwrap_or(0);
    if numel > 0 && (last + 1) * size > raw.len() {
        return Err(format!(
            "needs {} bytes of storage, the archive holds {}",
            (last + 1) * size,
            raw.len()
        ));
    }
    let at = |i: usize| &raw[i * size..(i + 1) * size];
    let data = match elem {
        Elem::F32 => HostData::F32(
            indices
                .iter()
                .map(|&i| f32::from_le_bytes(at(i).try_into().expect("4")))
                .collect(),
        ),
        Elem::F64 => HostData::F32(
            indices
                .iter()
                .map(|&i| f64::from_le_bytes(at(i).try_into().expect("8")) as f32)
                .collect(),
        ),
        Elem::F16 => HostData::F32(
            indices
                .iter()
                .map(|&i| f16::from_le_bytes(at(i).try_into().expect("2")).to_f32())
                .collect(),
        ),
        Elem::Bf16 => HostData::F32(
            indices
                .iter()
                .map(|&i| bf16::from_le_bytes(at(i).try_into().expect("2")).to_f32())
                .collect(),
        ),
        Elem::I64 => HostData::I64(
            indices
                .iter()
                .map(|&i| i64::from_le_bytes(at(i).try_into().expect("8")))
                .collect(),
        ),
        Elem::I32 => HostData::I64(
            indices
                .iter()
                .map(|&i| i64::from(i32::from_le_bytes(at(i).try_into().expect("4"))))
                .collect(),
        ),
        Elem::I16 => HostData::I64(
            indices
                .iter()
                .map(|&i| i64::from(i16::from_le_bytes(at(i).try_into().expect("2"))))
                .collect(),
        ),
        Elem::I8 => HostData::I64(indices.iter().map(|&i| i64::from(raw[i] as i8)).collect()),
        Elem::U8 | Elem::Bool => {
            HostData::I64(indices.iter().map(|&i| i64::from(raw[i])).collect())
        }
    };
    Ok(HostTensor {
        shape: t.shape.clone(),
        data,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn long1_is_twos_complement() {
        // PROTO 2, LONG1 2 bytes 0xff 0xfe (= -257), STOP
        let b = [0x80, 2, 0x8a, 2, 0xff, 0xfe, b'.'];
        let v = Unpickler::new(&b, "t").run().unwrap();
        assert!(matches!(v, Value::Int(-257)), "{v:?}");
    }

    #[test]
    fn truncated_pickle_is_an_error_with_offset() {
        let b = [0x80, 2, b'X', 10, 0, 0, 0, b'a'];
        let e = Unpickler::new(&b, "a/data.pkl").run().unwrap_err();
        assert!(e.to_string().contains("a/data.pkl"), "{e}");
    }

    #[test]
    fn strided_tensors_are_gathered_in_row_major_order() {
        // Storage 0..6 as f32; a transposed 3×2 view of a 2×3 matrix.
        let raw: Vec<u8> = (0..6).flat_map(|i| (i as f32).to_le_bytes()).collect();
        let t = TensorRef {
            storage: StorageRef {
                elem: Some(Elem::F32),
                key: "0".into(),
                view_offset: 0,
            },
            offset: 0,
            shape: vec![3, 2],
            stride: vec![1, 3],
        };
        let h = materialise(&raw, &t).unwrap();
        assert_eq!(h.shape, vec![3, 2]);
        assert_eq!(h.data, HostData::F32(vec![0., 3., 1., 4., 2., 5.]));
    }

    #[test]
    fn not_a_zip_is_a_clear_error() {
        let e = read_torch_zip(b"definitely not a zip archive")
            .err()
            .unwrap();
        assert!(e.to_string().contains("zip"), "{e}");
    }
}
