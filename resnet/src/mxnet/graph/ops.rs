//! One function per MXNet operator (as burn's onnx-ir has one per node): its attributes
//! and parameters checked, its output shape computed, the [`Op`] that runs it.

use std::collections::HashMap;

use super::{Act, GraphError, Op, Shape};
use crate::mxnet::params::NdArray;
use crate::mxnet::symbol::{parse_bool, parse_tuple, Node};

/// A compiled operator: what runs, the slots it reads, its output shape.
pub(super) type Compiled = (Op, Vec<usize>, Shape);

/// A node being compiled, with what it reads: the graph's nodes, the shapes computed so
/// far (`None`: not computed from the input), and the parameter file.
pub(super) struct Ctx<'a> {
    pub(super) node: &'a Node,
    pub(super) nodes: &'a [Node],
    pub(super) shapes: &'a [Option<Shape>],
    pub(super) params: &'a HashMap<String, NdArray>,
}

impl Ctx<'_> {
    pub(super) fn err(&self, message: impl Into<String>) -> GraphError {
        GraphError::Node {
            node: self.node.name.clone(),
            op: self.node.op.clone(),
            message: message.into(),
        }
    }
    fn attr(&self, key: &str) -> Option<&str> {
        self.node.attrs.get(key).map(String::as_str)
    }
    fn pair(&self, key: &str, default: [usize; 2]) -> Result<[usize; 2], GraphError> {
        match self.attr(key) {
            None => Ok(default),
            Some(s) => match parse_tuple(s).as_deref() {
                Some([]) => Ok(default),
                Some(&[a, b]) => Ok([a, b]),
                _ => Err(self.err(format!("{key}={s}: only 2-D operators are supported"))),
            },
        }
    }
    fn boolean(&self, key: &str, default: bool) -> Result<bool, GraphError> {
        match self.attr(key) {
            None => Ok(default),
            Some(s) => parse_bool(s).ok_or_else(|| self.err(format!("{key}={s}: not a boolean"))),
        }
    }
    fn int(&self, key: &str) -> Result<Option<usize>, GraphError> {
        self.attr(key)
            .map(|s| {
                s.trim()
                    .parse::<usize>()
                    .map_err(|_| self.err(format!("{key}={s}: not a count")))
            })
            .transpose()
    }
    fn float(&self, key: &str, default: f64) -> Result<f64, GraphError> {
        match self.attr(key) {
            None => Ok(default),
            Some(s) => s
                .trim()
                .parse::<f64>()
                .map_err(|_| self.err(format!("{key}={s}: not a number"))),
        }
    }
    fn no_layout(&self) -> Result<(), GraphError> {
        match self.attr("layout") {
            None | Some("None") | Some("NCHW") => Ok(()),
            Some(l) => Err(self.err(format!("layout {l}: only NCHW is supported"))),
        }
    }

    /// Data input `k`: its slot and shape.
    fn data_in(&self, k: usize) -> Result<(usize, Shape), GraphError> {
        let &(j, _) = self
            .node
            .inputs
            .get(k)
            .ok_or_else(|| self.err(format!("input {k} is missing")))?;
        match &self.shapes[j] {
            Some(s) => Ok((j, s.clone())),
            None => Err(self.err(format!(
                "input {} is neither the data nor computed from it",
                self.nodes[j].name
            ))),
        }
    }

    /// Parameter input `k` (`what`, for messages) from the parameter file (`arg:`/`aux:`
    /// prefixes optional), which must have the shape `expected`.
    fn param(&self, k: usize, what: &str, expected: &[usize]) -> Result<NdArray, GraphError> {
        let &(j, _) = self
            .node
            .inputs
            .get(k)
            .ok_or_else(|| self.err(format!("the {what} input is missing")))?;
        let name = &self.nodes[j].name;
        let perr = |message: String| GraphError::Param {
            name: name.clone(),
            node: self.node.name.clone(),
            message,
        };
        if self.nodes[j].op != "null" {
            return Err(perr("computed weights are not supported".into()));
        }
        let a = self
            .params
            .get(&format!("arg:{name}"))
            .or_else(|| self.params.get(&format!("aux:{name}")))
            .or_else(|| self.params.get(name))
            .ok_or_else(|| perr("missing from the parameter file".into()))?;
        if a.shape != expected {
            return Err(perr(format!(
                "shape {:?} in the parameter file, the graph needs {expected:?}",
                a.shape
            )));
        }
        Ok(a.clone())
    }
}

/// The softmax-family operators.
pub(super) fn is_softmax(op: &str) -> bool {
    matches!(
        op,
        "SoftmaxOutput" | "Softmax" | "softmax" | "SoftmaxActivation"
    )
}

/// Compiles `cx`'s node by its operator.
pub(super) fn compile_node(cx: &Ctx<'_>) -> Result<Compiled, GraphError> {
    match cx.node.op.as_str() {
        "Convolution" => convolution(cx),
        "BatchNorm" => batch_norm(cx),
        "Activation" => activation(cx),
        "Pooling" => pooling(cx),
        "FullyConnected" => fully_connected(cx),
        "elemwise_add" | "_Plus" | "_plus" | "_add" | "broadcast_add" | "broadcast_plus"
        | "ElementWiseSum" | "add_n" => add(cx),
        "Flatten" | "flatten" => flatten(cx),
        "identity" | "_copy" | "Dropout" | "BlockGrad" => identity(cx),
        op if is_softmax(op) => softmax(cx),
        "Concat" | "concat" => concat(cx),
        other => Err(cx.err(format!(
            "operator {other} is not supported (supported: Convolution, BatchNorm, \
             Activation, Pooling, FullyConnected, elemwise_add, Flatten, identity, \
             Dropout, Concat, SoftmaxOutput, softmax)"
        ))),
    }
}

/// `Convolution`: weights `[filters, C/groups, kh, kw]`, optional bias.
fn convolution(cx: &Ctx<'_>) -> Result<Compiled, GraphError> {
    cx.no_layout()?;
    let (j, s) = cx.data_in(0)?;
    if s.len() != 4 {
        return Err(cx.err(format!("input shape {s:?} is not N×C×H×W")));
    }
    let kernel = cx.pair("kernel", [0, 0])?;
    let stride = cx.pair("stride", [1, 1])?;
    let pad = cx.pair("pad", [0, 0])?;
    let dilate = cx.pair("dilate", [1, 1])?;
    let groups = cx.int("num_group")?.unwrap_or(1);
    let filters = cx
        .int("num_filter")?
        .ok_or_else(|| cx.err("num_filter is missing"))?;
    let no_bias = cx.boolean("no_bias", false)?;
    if kernel.contains(&0) || stride.contains(&0) || dilate.contains(&0) || groups == 0 {
        return Err(cx.err("kernel, stride, dilate and num_group must be positive"));
    }
    let cin = s[1];
    if cin % groups != 0 || filters % groups != 0 {
        return Err(cx.err(format!(
            "{cin} input channels and num_filter {filters} do not divide into {groups} groups"
        )));
    }
    let mut out = vec![s[0], filters];
    for d in 0..2 {
        let span = dilate[d] * (kernel[d] - 1) + 1;
        let padded = s[2 + d] + 2 * pad[d];
        if padded < span {
            return Err(cx.err(format!(
                "the kernel {kernel:?} does not fit the input {s:?} with pad {pad:?}"
            )));
        }
        out.push((padded - span) / stride[d] + 1);
    }
    let weight = cx.param(1, "weight", &[filters, cin / groups, kernel[0], kernel[1]])?;
    let bias = if no_bias {
        None
    } else {
        Some(cx.param(2, "bias", &[filters])?)
    };
    Ok((
        Op::Conv {
            weight,
            bias,
            stride,
            pad,
            dilate,
            groups,
        },
        vec![j],
        out,
    ))
}

/// `BatchNorm` at inference: one scale and shift per channel from the moving statistics (γ = 1 with `fix_gamma`).
fn batch_norm(cx: &Ctx<'_>) -> Result<Compiled, GraphError> {
    let (j, s) = cx.data_in(0)?;
    let axis = cx.attr("axis").map(str::trim).unwrap_or("1");
    if axis != "1" && !(axis == "-1" && s.len() == 2) {
        return Err(cx.err(format!("axis {axis}: only the channel axis 1 is supported")));
    }
    let c = s[1];
    let eps = cx.float("eps", 1e-3)?;
    let fix_gamma = cx.boolean("fix_gamma", true)?;
    let gamma = cx.param(1, "gamma", &[c])?;
    let beta = cx.param(2, "beta", &[c])?;
    let mean = cx.param(3, "moving_mean", &[c])?;
    let var = cx.param(4, "moving_var", &[c])?;
    let mut scale = Vec::with_capacity(c);
    let mut shift = Vec::with_capacity(c);
    for k in 0..c {
        let g = if fix_gamma {
            1.0
        } else {
            f64::from(gamma.data[k])
        };
        let sc = g / (f64::from(var.data[k]) + eps).sqrt();
        scale.push(sc as f32);
        shift.push((f64::from(beta.data[k]) - f64::from(mean.data[k]) * sc) as f32);
    }
    Ok((Op::BatchNorm { scale, shift }, vec![j], s))
}

/// `Activation`: relu, sigmoid, tanh, softrelu, softsign.
fn activation(cx: &Ctx<'_>) -> Result<Compiled, GraphError> {
    let (j, s) = cx.data_in(0)?;
    let act = match cx.attr("act_type").unwrap_or("") {
        "relu" => Act::Relu,
        "sigmoid" => Act::Sigmoid,
        "tanh" => Act::Tanh,
        "softrelu" => Act::SoftRelu,
        "softsign" => Act::SoftSign,
        other => return Err(cx.err(format!("act_type {other:?} is not supported"))),
    };
    Ok((Op::Act(act), vec![j], s))
}

/// `Pooling`: max or average, global or windowed (`valid` or `full` convention).
fn pooling(cx: &Ctx<'_>) -> Result<Compiled, GraphError> {
    cx.no_layout()?;
    let (j, s) = cx.data_in(0)?;
    if s.len() != 4 {
        return Err(cx.err(format!("input shape {s:?} is not N×C×H×W")));
    }
    let max = match cx.attr("pool_type").unwrap_or("max") {
        "max" => true,
        "avg" => false,
        other => return Err(cx.err(format!("pool_type {other:?} is not supported"))),
    };
    Ok(if cx.boolean("global_pool", false)? {
        (Op::GlobalPool { max }, vec![j], vec![s[0], s[1], 1, 1])
    } else {
        let kernel = cx.pair("kernel", [0, 0])?;
        let stride = cx.pair("stride", [1, 1])?;
        let pad = cx.pair("pad", [0, 0])?;
        let ceil = match cx.attr("pooling_convention").unwrap_or("valid") {
            "valid" => false,
            "full" => true,
            other => return Err(cx.err(format!("pooling_convention {other:?} is not supported"))),
        };
        let count_include_pad = cx.boolean("count_include_pad", true)?;
        if kernel.contains(&0) || stride.contains(&0) {
            return Err(cx.err("kernel and stride must be positive"));
        }
        if ceil && !max && (pad != [0, 0] || !count_include_pad) {
            return Err(cx.err(
                "average pooling with pooling_convention=full is supported without padding only",
            ));
        }
        let mut out = vec![s[0], s[1]];
        for d in 0..2 {
            let padded = s[2 + d] + 2 * pad[d];
            if padded < kernel[d] {
                return Err(cx.err(format!(
                    "the kernel {kernel:?} does not fit the input {s:?} with pad {pad:?}"
                )));
            }
            let span = padded - kernel[d];
            out.push(if ceil {
                span.div_ceil(stride[d]) + 1
            } else {
                span / stride[d] + 1
            });
        }
        (
            Op::Pool {
                max,
                kernel,
                stride,
                pad,
                ceil,
                count_include_pad,
            },
            vec![j],
            out,
        )
    })
}

/// `FullyConnected`: weights `[hidden, features]`, optional bias; flattens its input.
fn fully_connected(cx: &Ctx<'_>) -> Result<Compiled, GraphError> {
    let (j, s) = cx.data_in(0)?;
    let flatten = cx.boolean("flatten", true)?;
    if !flatten && s.len() != 2 {
        return Err(cx.err(format!(
            "flatten=False on a {}-D input is not supported",
            s.len()
        )));
    }
    let hidden = cx
        .int("num_hidden")?
        .ok_or_else(|| cx.err("num_hidden is missing"))?;
    let features: usize = s[1..].iter().product();
    let weight = cx.param(1, "weight", &[hidden, features])?;
    let bias = if cx.boolean("no_bias", false)? {
        None
    } else {
        Some(cx.param(2, "bias", &[hidden])?)
    };
    Ok((Op::Fc { weight, bias }, vec![j], vec![s[0], hidden]))
}

/// The sums (`elemwise_add`, `_Plus`, `broadcast_add`, `ElementWiseSum`, `add_n`, ...): equal shapes, or broadcast ones for `broadcast_*`.
fn add(cx: &Ctx<'_>) -> Result<Compiled, GraphError> {
    if cx.node.inputs.len() < 2 {
        return Err(cx.err("needs at least two inputs"));
    }
    let mut js = Vec::new();
    let mut shape: Shape = Vec::new();
    for k in 0..cx.node.inputs.len() {
        let (j, s) = cx.data_in(k)?;
        if k == 0 {
            shape = s;
        } else {
            let broadcast = cx.node.op.starts_with("broadcast");
            let fits = s.len() == shape.len()
                && s.iter()
                    .zip(&shape)
                    .all(|(&a, &b)| a == b || (broadcast && (a == 1 || b == 1)));
            if !fits {
                return Err(cx.err(format!("input shapes {shape:?} and {s:?} do not match")));
            }
            shape = shape.iter().zip(&s).map(|(&a, &b)| a.max(b)).collect();
        }
        js.push(j);
    }
    Ok((Op::Add, js, shape))
}

/// `Flatten`: `[N, ...]` → `[N, product]`.
fn flatten(cx: &Ctx<'_>) -> Result<Compiled, GraphError> {
    let (j, s) = cx.data_in(0)?;
    Ok((Op::Flatten, vec![j], vec![s[0], s[1..].iter().product()]))
}

/// `identity`, `_copy`, `BlockGrad`, and `Dropout` (identity at inference).
fn identity(cx: &Ctx<'_>) -> Result<Compiled, GraphError> {
    let (j, s) = cx.data_in(0)?;
    Ok((Op::Identity, vec![j], s))
}

/// The softmax family: `softmax` over its `axis`, the others over the channels.
fn softmax(cx: &Ctx<'_>) -> Result<Compiled, GraphError> {
    let op = cx.node.op.as_str();
    let (j, s) = cx.data_in(0)?;
    let dim = if op == "softmax" {
        let axis: i64 = cx
            .attr("axis")
            .unwrap_or("-1")
            .trim()
            .parse()
            .map_err(|_| cx.err("axis is not an integer"))?;
        let rank = s.len() as i64;
        let a = if axis < 0 { axis + rank } else { axis };
        if !(0..rank).contains(&a) {
            return Err(cx.err(format!("axis {axis} for a {rank}-D input")));
        }
        a as usize
    } else {
        1
    };
    Ok((Op::Softmax { dim }, vec![j], s))
}

/// `Concat` along `dim`.
fn concat(cx: &Ctx<'_>) -> Result<Compiled, GraphError> {
    let dim: usize = match cx.attr("dim") {
        None => 1,
        Some(d) => d
            .trim()
            .parse()
            .map_err(|_| cx.err(format!("dim={d}: not supported")))?,
    };
    let mut js = Vec::new();
    let mut shape: Shape = Vec::new();
    for k in 0..cx.node.inputs.len() {
        let (j, s) = cx.data_in(k)?;
        if dim >= s.len() {
            return Err(cx.err(format!("dim {dim} for a {}-D input", s.len())));
        }
        if k == 0 {
            shape = s;
        } else {
            let fits = s.len() == shape.len() && (0..s.len()).all(|d| d == dim || s[d] == shape[d]);
            if !fits {
                return Err(cx.err(format!(
                    "input shapes {shape:?} and {s:?} do not concatenate"
                )));
            }
            shape[dim] += s[dim];
        }
        js.push(j);
    }
    if js.is_empty() {
        return Err(cx.err("no inputs"));
    }
    Ok((Op::Concat { dim }, js, shape))
}
