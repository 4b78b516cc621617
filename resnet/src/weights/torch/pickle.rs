//! Pickle (the subset torch.save produces): an unpickler that builds [`Value`]s and
//! never executes anything; torch's tensor and storage references are recognised.

use std::cell::RefCell;
use std::collections::HashMap;
use std::rc::Rc;

use super::TorchError;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Elem {
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
    pub(super) fn size(self) -> usize {
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
pub(super) struct StorageRef {
    pub(super) elem: Option<Elem>,
    pub(super) key: String,
    /// Legacy files only: element offset of a storage view into its root storage.
    pub(super) view_offset: usize,
}

#[derive(Clone, Debug)]
pub(super) struct TensorRef {
    pub(super) storage: StorageRef,
    pub(super) offset: usize,
    pub(super) shape: Vec<usize>,
    pub(super) stride: Vec<usize>,
}

pub(super) type DictRc = Rc<RefCell<Vec<(Value, Value)>>>;
pub(super) type ListRc = Rc<RefCell<Vec<Value>>>;

// Scalar payloads are only read through `Debug` (in error messages).
#[allow(dead_code)]
#[derive(Clone, Debug)]
pub(super) enum Value {
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
    pub(super) fn describe(&self) -> String {
        match self {
            Value::Opaque(s) => s.clone(),
            Value::Global(m, n) => format!("{m}.{n}"),
            other => format!("{other:?}").chars().take(60).collect(),
        }
    }
}

pub(super) struct Unpickler<'a> {
    b: &'a [u8],
    pub(super) pos: usize,
    entry: &'a str,
    stack: Vec<Value>,
    marks: Vec<usize>,
    memo: HashMap<u32, Value>,
    /// Element type of every storage key seen in a persistent id.
    pub(super) storages: HashMap<String, Option<Elem>>,
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
        // `n` comes from the file (an 8-byte length): `pos + n` may overflow.
        let s = self
            .pos
            .checked_add(n)
            .and_then(|end| self.b.get(self.pos..end))
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

    pub(super) fn new(b: &'a [u8], entry: &'a str) -> Self {
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
    pub(super) fn run(&mut self) -> Result<Value, TorchError> {
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

    /// Found by the `weights` fuzz target: BINUNICODE8 (0x8d) whose 8-byte length is
    /// 2^64 − 2 made `pos + n` overflow (a panic with overflow checks on).
    #[test]
    fn a_length_near_u64_max_is_an_error() {
        let mut b = vec![0x80, 2, b']', 0x8d];
        b.extend_from_slice(&u64::MAX.wrapping_sub(1).to_le_bytes());
        b.extend_from_slice(b"rrrr.");
        let e = Unpickler::new(&b, "t").run().unwrap_err();
        assert!(e.to_string().contains("unexpected end of pickle"), "{e}");
    }

    #[test]
    fn truncated_pickle_is_an_error_with_offset() {
        let b = [0x80, 2, b'X', 10, 0, 0, 0, b'a'];
        let e = Unpickler::new(&b, "a/data.pkl").run().unwrap_err();
        assert!(e.to_string().contains("a/data.pkl"), "{e}");
    }
}
