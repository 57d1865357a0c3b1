//! A restricted unpickler for the `data.pkl` of PyTorch checkpoints. It understands the
//! opcodes `torch.save` emits for state dicts (protocol 2, plus the few protocol 4 additions)
//! and resolves globals against an allowlist — the same policy as `torch.load(weights_only=True)`
//! and safetensors' converter. It never calls anything: allowed globals are data constructors
//! interpreted here, and any other global (`os.system`, `builtins.eval`...) is refused by name.

use std::collections::HashMap;
use std::rc::Rc;
use std::string::{String, ToString};
use std::vec::Vec;

use safetensors::tensor::Dtype;

use crate::error::{Error, Result};

/// The only globals a checkpoint may name.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Global {
    OrderedDict,
    RebuildTensorV2,
    RebuildParameter,
    /// `torch.FloatStorage` and friends: the element type of a storage.
    StorageType(Dtype),
}

fn lookup_global(module: &str, name: &str) -> Option<Global> {
    use Dtype::*;
    Some(match (module, name) {
        ("collections", "OrderedDict") => Global::OrderedDict,
        ("torch._utils", "_rebuild_tensor_v2") => Global::RebuildTensorV2,
        ("torch._utils", "_rebuild_parameter") => Global::RebuildParameter,
        ("torch", s) => Global::StorageType(match s {
            "FloatStorage" => F32,
            "HalfStorage" => F16,
            "BFloat16Storage" => BF16,
            "DoubleStorage" => F64,
            "LongStorage" => I64,
            "IntStorage" => I32,
            "ShortStorage" => I16,
            "CharStorage" => I8,
            "ByteStorage" => U8,
            "BoolStorage" => BOOL,
            _ => return None,
        }),
        _ => return None,
    })
}

const ALLOWED: &str = "collections.OrderedDict, torch._utils._rebuild_tensor_v2, \
torch._utils._rebuild_parameter, torch.<Float|Half|BFloat16|Double|Long|Int|Short|Char|Byte|Bool>Storage";

/// A storage reference from a persistent id: `('storage', torch.FloatStorage, '0', 'cpu', numel)`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StorageRef {
    pub dtype: Dtype,
    /// Entry name under `<archive>/data/`.
    pub key: String,
    /// Elements (of `dtype`) in the storage.
    pub numel: usize,
}

/// A tensor view on a storage, as `_rebuild_tensor_v2` describes it (sizes, strides and the
/// offset are in elements).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TensorRef {
    pub storage: StorageRef,
    pub offset: usize,
    pub shape: Vec<usize>,
    pub stride: Vec<usize>,
}

/// What the restricted unpickler produces.
#[derive(Clone, Debug)]
pub enum Value {
    None,
    Bool(bool),
    Int(i64),
    Float(f64),
    Str(String),
    Bytes(Vec<u8>),
    Tuple(Rc<Vec<Value>>),
    List(Rc<Vec<Value>>),
    /// Insertion-ordered, like Python dicts.
    Dict(Rc<Vec<(Value, Value)>>),
    Global(Global),
    Storage(StorageRef),
    Tensor(Rc<TensorRef>),
}

impl Value {
    fn kind(&self) -> &'static str {
        match self {
            Value::None => "None",
            Value::Bool(_) => "bool",
            Value::Int(_) => "int",
            Value::Float(_) => "float",
            Value::Str(_) => "str",
            Value::Bytes(_) => "bytes",
            Value::Tuple(_) => "tuple",
            Value::List(_) => "list",
            Value::Dict(_) => "dict",
            Value::Global(_) => "global",
            Value::Storage(_) => "storage",
            Value::Tensor(_) => "tensor",
        }
    }
}

/// Most stack items and memo entries one pickle may create, and most elements copied when a
/// shared container is modified: bounds memory on hostile input.
const MAX_ITEMS: usize = 1 << 24;

struct Machine<'a> {
    data: &'a [u8],
    pos: usize,
    path: &'a str,
    stack: Vec<Value>,
    marks: Vec<usize>,
    memo: HashMap<u32, Value>,
    /// Items created or copied so far.
    work: usize,
}

impl<'a> Machine<'a> {
    fn err(&self, msg: impl core::fmt::Display) -> Error {
        Error::checkpoint(
            self.path.to_string(),
            format!("data.pkl at byte {}: {msg}", self.pos),
        )
    }

    fn take(&mut self, n: usize) -> Result<&'a [u8]> {
        let end = self.pos.checked_add(n).filter(|&e| e <= self.data.len());
        match end {
            Some(e) => {
                let s = &self.data[self.pos..e];
                self.pos = e;
                Ok(s)
            }
            None => Err(self.err("truncated pickle")),
        }
    }
    fn u8(&mut self) -> Result<u8> {
        Ok(self.take(1)?[0])
    }
    fn u16(&mut self) -> Result<u16> {
        let b = self.take(2)?;
        Ok(u16::from_le_bytes([b[0], b[1]]))
    }
    fn u32(&mut self) -> Result<u32> {
        let b = self.take(4)?;
        Ok(u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
    }
    fn u64(&mut self) -> Result<u64> {
        let b = self.take(8)?;
        let mut a = [0u8; 8];
        a.copy_from_slice(b);
        Ok(u64::from_le_bytes(a))
    }
    fn line(&mut self) -> Result<&'a str> {
        let rest = &self.data[self.pos..];
        let n = rest
            .iter()
            .position(|&c| c == b'\n')
            .ok_or_else(|| self.err("unterminated GLOBAL line"))?;
        let s =
            core::str::from_utf8(&rest[..n]).map_err(|_| self.err("GLOBAL name is not UTF-8"))?;
        self.pos += n + 1;
        Ok(s)
    }
    fn string(&mut self, n: usize) -> Result<String> {
        let b = self.take(n)?;
        core::str::from_utf8(b)
            .map(|s| s.to_string())
            .map_err(|_| self.err("string is not UTF-8"))
    }

    fn charge(&mut self, n: usize) -> Result<()> {
        self.work = self.work.saturating_add(n);
        if self.work > MAX_ITEMS {
            return Err(self.err("pickle too large or too deeply shared"));
        }
        Ok(())
    }
    fn push(&mut self, v: Value) -> Result<()> {
        self.charge(1)?;
        self.stack.push(v);
        Ok(())
    }
    fn pop(&mut self) -> Result<Value> {
        if self.marks.last().is_some_and(|&m| m >= self.stack.len()) {
            return Err(self.err("stack underflow (popped past a MARK)"));
        }
        self.stack.pop().ok_or_else(|| self.err("stack underflow"))
    }
    fn top(&mut self) -> Result<&mut Value> {
        let e = self.err("stack underflow");
        self.stack.last_mut().ok_or(e)
    }
    fn pop_mark(&mut self) -> Result<Vec<Value>> {
        let m = self
            .marks
            .pop()
            .ok_or_else(|| self.err("no MARK on the stack"))?;
        if m > self.stack.len() {
            return Err(self.err("MARK past the end of the stack"));
        }
        Ok(self.stack.split_off(m))
    }
    fn memo_get(&mut self, i: u32) -> Result<()> {
        let v = self
            .memo
            .get(&i)
            .cloned()
            .ok_or_else(|| self.err(format!("memo key {i} was never stored")))?;
        self.push(v)
    }
    fn memo_put(&mut self, i: u32) -> Result<()> {
        let v = self
            .stack
            .last()
            .cloned()
            .ok_or_else(|| self.err("stack underflow"))?;
        self.charge(1)?;
        self.memo.insert(i, v);
        Ok(())
    }

    /// Resolve `module.name` against the allowlist; refusing here means nothing is ever called.
    fn global(&mut self, module: &str, name: &str) -> Result<()> {
        match lookup_global(module, name) {
            Some(g) => self.push(Value::Global(g)),
            None => Err(Error::checkpoint(
                self.path.to_string(),
                format!(
                    "refusing to load: the pickle references `{module}.{name}`, which is not allowed \
                     in a weights-only checkpoint (allowed: {ALLOWED}); nothing was executed"
                ),
            )),
        }
    }

    /// Append items to the list or dict on top of the stack.
    fn extend_top(&mut self, items: Vec<Value>, pairs: bool) -> Result<()> {
        let shared = match self.stack.last() {
            Some(Value::List(l)) if !pairs => Rc::strong_count(l) > 1,
            Some(Value::Dict(d)) if pairs => Rc::strong_count(d) > 1,
            Some(v) => {
                let k = v.kind();
                return Err(self.err(format!("cannot add items to a {k}")));
            }
            None => return Err(self.err("stack underflow")),
        };
        let copied = match self.stack.last() {
            Some(Value::List(l)) if shared => l.len(),
            Some(Value::Dict(d)) if shared => d.len(),
            _ => 0,
        };
        self.charge(copied + items.len())?;
        if pairs && !items.len().is_multiple_of(2) {
            return Err(self.err("SETITEMS with an odd number of items"));
        }
        match self.top()? {
            Value::List(l) => Rc::make_mut(l).extend(items),
            Value::Dict(d) => {
                let d = Rc::make_mut(d);
                let mut it = items.into_iter();
                while let (Some(k), Some(v)) = (it.next(), it.next()) {
                    d.push((k, v));
                }
            }
            _ => {}
        }
        Ok(())
    }

    fn reduce(&mut self, func: Value, args: Value) -> Result<Value> {
        let Value::Tuple(args) = args else {
            return Err(self.err(format!(
                "REDUCE arguments must be a tuple, not a {}",
                args.kind()
            )));
        };
        let g = match func {
            Value::Global(g) => g,
            other => {
                return Err(self.err(format!(
                    "REDUCE on a {} (only allowed globals may be called)",
                    other.kind()
                )))
            }
        };
        match g {
            Global::OrderedDict => match args.as_slice() {
                [] => Ok(Value::Dict(Rc::new(Vec::new()))),
                _ => Err(self.err("OrderedDict(...) with arguments is not supported")),
            },
            Global::RebuildParameter => match args.first() {
                Some(t @ Value::Tensor(_)) => Ok(t.clone()),
                _ => Err(self.err("_rebuild_parameter expects a tensor")),
            },
            Global::RebuildTensorV2 => {
                let (storage, offset, size, stride) = match args.as_slice() {
                    [Value::Storage(s), Value::Int(o), Value::Tuple(size), Value::Tuple(stride), ..]
                        if (6..=7).contains(&args.len()) =>
                    {
                        (s.clone(), *o, size.clone(), stride.clone())
                    }
                    _ => return Err(self.err("_rebuild_tensor_v2 expects (storage, offset, size, stride, requires_grad, hooks[, metadata])")),
                };
                let ints =
                    |t: &[Value], what: &str| -> Result<Vec<usize>> {
                        t.iter()
                            .map(|v| match v {
                                Value::Int(i) if *i >= 0 => Ok(*i as usize),
                                _ => Err(self
                                    .err(format!("tensor {what} must be non-negative integers"))),
                            })
                            .collect()
                    };
                let shape = ints(&size, "sizes")?;
                let stride = ints(&stride, "strides")?;
                if shape.len() != stride.len() {
                    return Err(self.err("tensor sizes and strides differ in length"));
                }
                let offset =
                    usize::try_from(offset).map_err(|_| self.err("negative storage offset"))?;
                Ok(Value::Tensor(Rc::new(TensorRef {
                    storage,
                    offset,
                    shape,
                    stride,
                })))
            }
            Global::StorageType(_) => Err(self.err("storage types cannot be called")),
        }
    }

    fn persistent_load(&mut self, pid: Value) -> Result<Value> {
        let bad = || "persistent id must be ('storage', torch.<Type>Storage, key, location, numel)";
        let Value::Tuple(t) = pid else {
            return Err(self.err(bad()));
        };
        match t.as_slice() {
            [Value::Str(tag), Value::Global(Global::StorageType(dtype)), Value::Str(key), Value::Str(_), Value::Int(n)]
                if tag == "storage" && *n >= 0 =>
            {
                if key.is_empty() || key.contains('/') || key.contains("..") {
                    return Err(self.err(format!("storage key `{key}` is not a plain name")));
                }
                Ok(Value::Storage(StorageRef {
                    dtype: *dtype,
                    key: key.clone(),
                    numel: *n as usize,
                }))
            }
            _ => Err(self.err(bad())),
        }
    }

    fn run(mut self) -> Result<Value> {
        loop {
            let op = self.u8()?;
            match op {
                0x80 => {
                    let proto = self.u8()?;
                    if proto > 5 {
                        return Err(self.err(format!("pickle protocol {proto} is not supported")));
                    }
                }
                0x95 => {
                    self.u64()?; // FRAME: a length hint only
                }
                b'.' => {
                    let v = self.pop()?;
                    return Ok(v);
                }
                b'(' => self.marks.push(self.stack.len()),
                b'}' => self.push(Value::Dict(Rc::new(Vec::new())))?,
                b']' => self.push(Value::List(Rc::new(Vec::new())))?,
                b')' => self.push(Value::Tuple(Rc::new(Vec::new())))?,
                b't' => {
                    let items = self.pop_mark()?;
                    self.push(Value::Tuple(Rc::new(items)))?;
                }
                b'l' => {
                    let items = self.pop_mark()?;
                    self.push(Value::List(Rc::new(items)))?;
                }
                b'd' => {
                    let items = self.pop_mark()?;
                    self.push(Value::Dict(Rc::new(Vec::new())))?;
                    self.extend_top(items, true)?;
                }
                0x85..=0x87 => {
                    let n = usize::from(op - 0x84);
                    if self.stack.len() < n
                        || self.marks.last().is_some_and(|&m| m + n > self.stack.len())
                    {
                        return Err(self.err("stack underflow"));
                    }
                    let items = self.stack.split_off(self.stack.len() - n);
                    self.push(Value::Tuple(Rc::new(items)))?;
                }
                b'q' => {
                    let i = u32::from(self.u8()?);
                    self.memo_put(i)?;
                }
                b'r' => {
                    let i = self.u32()?;
                    self.memo_put(i)?;
                }
                0x94 => {
                    let i =
                        u32::try_from(self.memo.len()).map_err(|_| self.err("memo too large"))?;
                    self.memo_put(i)?;
                }
                b'h' => {
                    let i = u32::from(self.u8()?);
                    self.memo_get(i)?;
                }
                b'j' => {
                    let i = self.u32()?;
                    self.memo_get(i)?;
                }
                b'J' => {
                    let v = self.u32()? as i32;
                    self.push(Value::Int(i64::from(v)))?;
                }
                b'K' => {
                    let v = self.u8()?;
                    self.push(Value::Int(i64::from(v)))?;
                }
                b'M' => {
                    let v = self.u16()?;
                    self.push(Value::Int(i64::from(v)))?;
                }
                0x8a => {
                    let n = usize::from(self.u8()?);
                    if n > 8 {
                        return Err(self.err("integer wider than 64 bits"));
                    }
                    let b = self.take(n)?;
                    let mut a = [0u8; 8];
                    a[..n].copy_from_slice(b);
                    if n > 0 && n < 8 && b[n - 1] & 0x80 != 0 {
                        a[n..].fill(0xFF); // sign-extend
                    }
                    self.push(Value::Int(i64::from_le_bytes(a)))?;
                }
                b'N' => self.push(Value::None)?,
                0x88 => self.push(Value::Bool(true))?,
                0x89 => self.push(Value::Bool(false))?,
                b'G' => {
                    let b = self.take(8)?;
                    let mut a = [0u8; 8];
                    a.copy_from_slice(b);
                    self.push(Value::Float(f64::from_be_bytes(a)))?; // BINFLOAT is big-endian
                }
                b'X' => {
                    let n = self.u32()? as usize;
                    let s = self.string(n)?;
                    self.push(Value::Str(s))?;
                }
                0x8c => {
                    let n = usize::from(self.u8()?);
                    let s = self.string(n)?;
                    self.push(Value::Str(s))?;
                }
                0x8d => {
                    let n =
                        usize::try_from(self.u64()?).map_err(|_| self.err("string too long"))?;
                    let s = self.string(n)?;
                    self.push(Value::Str(s))?;
                }
                b'U' | b'T' | b'C' | b'B' => {
                    let n = if op == b'U' || op == b'C' {
                        usize::from(self.u8()?)
                    } else {
                        self.u32()? as usize
                    };
                    let b = self.take(n)?.to_vec();
                    self.push(Value::Bytes(b))?;
                }
                b'c' => {
                    let module = self.line()?;
                    let name = self.line()?;
                    self.global(module, name)?;
                }
                0x93 => {
                    let name = self.pop()?;
                    let module = self.pop()?;
                    match (module, name) {
                        (Value::Str(m), Value::Str(n)) => self.global(&m, &n)?,
                        _ => return Err(self.err("STACK_GLOBAL needs two strings")),
                    }
                }
                b'R' => {
                    let args = self.pop()?;
                    let func = self.pop()?;
                    let v = self.reduce(func, args)?;
                    self.push(v)?;
                }
                b'b' => {
                    // BUILD: OrderedDict `_metadata` attributes; ignored, nothing is set.
                    let _state = self.pop()?;
                    match self.top()? {
                        Value::Dict(_) | Value::Tensor(_) => {}
                        other => {
                            let k = other.kind();
                            return Err(self.err(format!("BUILD on a {k} is not supported")));
                        }
                    }
                }
                b'Q' => {
                    let pid = self.pop()?;
                    let v = self.persistent_load(pid)?;
                    self.push(v)?;
                }
                b's' => {
                    let v = self.pop()?;
                    let k = self.pop()?;
                    self.extend_top(vec![k, v], true)?;
                }
                b'u' => {
                    let items = self.pop_mark()?;
                    self.extend_top(items, true)?;
                }
                b'a' => {
                    let v = self.pop()?;
                    self.extend_top(vec![v], false)?;
                }
                b'e' => {
                    let items = self.pop_mark()?;
                    self.extend_top(items, false)?;
                }
                b'0' => {
                    self.pop()?;
                }
                b'1' => {
                    self.pop_mark()?;
                }
                b'2' => {
                    let v = self
                        .stack
                        .last()
                        .cloned()
                        .ok_or_else(|| self.err("stack underflow"))?;
                    self.push(v)?;
                }
                other => {
                    self.pos -= 1;
                    return Err(self.err(format!(
                        "opcode 0x{other:02x} is not allowed in a weights-only checkpoint"
                    )));
                }
            }
        }
    }
}

/// Unpickle `data` (the bytes of `data.pkl`) without executing anything; `path` names the file
/// in errors.
pub fn unpickle(data: &[u8], path: &str) -> Result<Value> {
    Machine {
        data,
        pos: 0,
        path,
        stack: Vec::new(),
        marks: Vec::new(),
        memo: HashMap::new(),
        work: 0,
    }
    .run()
}

/// The `name -> tensor` pairs of an unpickled state dict, in file order.
pub fn state_dict(v: &Value, path: &str) -> Result<Vec<(String, TensorRef)>> {
    let Value::Dict(items) = v else {
        return Err(Error::checkpoint(
            path.to_string(),
            format!(
                "expected a state dict (a dict of tensors), found a {}",
                v.kind()
            ),
        ));
    };
    let mut out = Vec::with_capacity(items.len());
    for (k, v) in items.iter() {
        let Value::Str(name) = k else {
            return Err(Error::checkpoint(
                path.to_string(),
                "a state dict key is not a string",
            ));
        };
        match v {
            Value::Tensor(t) => out.push((name.clone(), (**t).clone())),
            other => {
                return Err(Error::checkpoint(
                    path.to_string(),
                    format!(
                        "`{name}` is a {}, not a tensor (not a plain state dict?)",
                        other.kind()
                    ),
                ))
            }
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refuses_os_system_and_names_it() {
        let p = b"\x80\x02cos\nsystem\nX\x02\x00\x00\x00ls\x85R.";
        let e = unpickle(p, "evil.bin").unwrap_err().to_string();
        assert!(e.contains("os.system") && e.contains("evil.bin"), "{e}");
    }

    #[test]
    fn refuses_stack_global_eval() {
        let p = b"\x80\x04\x8c\x08builtins\x8c\x04eval\x93\x8c\x031+1\x85R.";
        let e = unpickle(p, "x").unwrap_err().to_string();
        assert!(e.contains("builtins.eval"), "{e}");
    }

    #[test]
    fn plain_values() {
        // {'a': (1, -2, 300, True, None)}
        let p = b"\x80\x02}q\x00X\x01\x00\x00\x00a(K\x01J\xfe\xff\xff\xffM,\x01\x88Ntq\x01s.";
        let v = unpickle(p, "x").unwrap();
        let Value::Dict(d) = v else { panic!() };
        let Value::Tuple(t) = &d[0].1 else { panic!() };
        assert!(matches!(t[1], Value::Int(-2)) && matches!(t[2], Value::Int(300)));
    }

    #[test]
    fn truncated_and_garbage_do_not_panic() {
        for p in [
            &b""[..],
            b"\x80",
            b"X\xff\xff\xff\xff",
            b"(((t",
            b"h\x05",
            b"e",
            b"\x8a\x09",
            b"t.",
        ] {
            assert!(unpickle(p, "x").is_err());
        }
    }
}
