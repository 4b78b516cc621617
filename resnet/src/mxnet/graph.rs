//! A symbol plus its parameters, checked and compiled into a [`Plan`]: the operators
//! in order, with their settings parsed and their weights checked against the shapes
//! that flow through the graph (shape inference from the input `[C, H, W]`).
//!
//! Operators (MXNet 1.x names and defaults): `Convolution` (2-D, `stride`, `pad`,
//! `dilate`, `num_group`, `no_bias`), `BatchNorm` (inference: moving statistics;
//! `fix_gamma` — default true — means γ = 1; `eps` default 1e-3; axis 1),
//! `Activation` (`relu`, `sigmoid`, `tanh`, `softrelu`, `softsign`), `Pooling`
//! (`max`/`avg`, `global_pool`, `pooling_convention` `valid`/`full`, `stride` default
//! 1, `pad`, `count_include_pad` default true), `FullyConnected` (`flatten`,
//! `no_bias`), `elemwise_add`/`_Plus`/`_plus`/`broadcast_add`/`ElementWiseSum`/`add_n`,
//! `Flatten`, `identity`/`_copy`/`BlockGrad`, `Dropout` (identity at inference),
//! `Concat`, and the softmax family (`SoftmaxOutput`, `softmax`, `SoftmaxActivation`);
//! `null` nodes are variables. Anything else is refused by name.
//!
//! The graph's output must be a softmax (single-label probabilities) or a sigmoid /
//! `LogisticRegressionOutput` (multi-label); that last operator is left to the caller
//! ([`Plan::output`]), which computes it in f64 from the logits like
//! [`crate::infer::probabilities_from_logits`].

use std::collections::HashMap;

use super::params::NdArray;
use super::symbol::{parse_bool, parse_tuple, Node, Symbol};

/// An activation function.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Act {
    /// `max(x, 0)`.
    Relu,
    /// `1 / (1 + e^-x)`.
    Sigmoid,
    /// `tanh(x)`.
    Tanh,
    /// `ln(1 + e^x)`.
    SoftRelu,
    /// `x / (1 + |x|)`.
    SoftSign,
}

/// One compiled operator.
#[derive(Debug, Clone)]
pub enum Op {
    /// 2-D convolution; `weight` is `[out, in/groups, kh, kw]`.
    Conv {
        /// The kernel.
        weight: NdArray,
        /// `[out]`, unless `no_bias`.
        bias: Option<NdArray>,
        /// `(y, x)`.
        stride: [usize; 2],
        /// `(y, x)`, both sides.
        pad: [usize; 2],
        /// `(y, x)`.
        dilate: [usize; 2],
        /// Channel groups.
        groups: usize,
    },
    /// Inference batch norm folded to `x · scale + shift` per channel.
    BatchNorm {
        /// `γ / sqrt(var + eps)` per channel.
        scale: Vec<f32>,
        /// `β − mean · scale` per channel.
        shift: Vec<f32>,
    },
    /// Element-wise activation.
    Act(Act),
    /// 2-D pooling.
    Pool {
        /// Max (else average).
        max: bool,
        /// `(y, x)`.
        kernel: [usize; 2],
        /// `(y, x)`.
        stride: [usize; 2],
        /// `(y, x)`.
        pad: [usize; 2],
        /// `pooling_convention=full` (output sizes rounded up).
        ceil: bool,
        /// Average pooling counts padded positions.
        count_include_pad: bool,
    },
    /// Mean or max over the whole H×W (`global_pool`).
    GlobalPool {
        /// Max (else average).
        max: bool,
    },
    /// `x · Wᵀ + b` on the flattened input; `weight` is `[out, in]`.
    Fc {
        /// The weights.
        weight: NdArray,
        /// `[out]`, unless `no_bias`.
        bias: Option<NdArray>,
    },
    /// Sum of the inputs (broadcasting size-1 dimensions).
    Add,
    /// `[N, C, H, W]` → `[N, C·H·W]`.
    Flatten,
    /// Passes its input on.
    Identity,
    /// Softmax along a dimension.
    Softmax {
        /// The dimension.
        dim: usize,
    },
    /// Concatenation along a dimension.
    Concat {
        /// The dimension.
        dim: usize,
    },
}

/// One step of the plan: `slots[out] = op(slots[inputs])`.
#[derive(Debug, Clone)]
pub struct Step {
    /// The node's name.
    pub name: String,
    /// The operator.
    pub op: Op,
    /// Input slots.
    pub inputs: Vec<usize>,
    /// Output slot.
    pub out: usize,
}

/// What turns the plan's output into probabilities.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Output {
    /// Softmax over the classes (single-label).
    Softmax,
    /// Per-class sigmoid (multi-label).
    Sigmoid,
}

/// A compiled network.
#[derive(Debug, Clone)]
pub struct Plan {
    /// The input `[C, H, W]`.
    pub input_shape: [usize; 3],
    /// The slot the input goes into.
    pub input: usize,
    /// Steps in order.
    pub steps: Vec<Step>,
    /// The slot holding the logits (`[N, classes]`).
    pub logits: usize,
    /// How the logits become probabilities.
    pub output: Output,
    /// Classes.
    pub num_classes: usize,
    /// Slots (one per node).
    pub slots: usize,
}

/// Why a graph cannot be compiled; the caller adds the file name.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[non_exhaustive]
pub enum GraphError {
    /// A node cannot be used.
    #[error("node {node} ({op}): {message}")]
    Node {
        /// Its name.
        node: String,
        /// Its operator.
        op: String,
        /// What is wrong.
        message: String,
    },
    /// A parameter is missing from, or mismatched in, the parameter file.
    #[error("parameter {name} (of node {node}): {message}")]
    Param {
        /// The parameter's name.
        name: String,
        /// The node using it.
        node: String,
        /// What is wrong.
        message: String,
    },
    /// The graph as a whole.
    #[error("{0}")]
    Graph(String),
}

/// Shapes are tracked with MXNet's rank (2 or 4); tensors are always 4-D with trailing 1s.
type Shape = Vec<usize>;

struct Ctx<'a> {
    node: &'a Node,
}

impl Ctx<'_> {
    fn err(&self, message: impl Into<String>) -> GraphError {
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
}

/// The softmax-family operators.
fn is_softmax(op: &str) -> bool {
    matches!(
        op,
        "SoftmaxOutput" | "Softmax" | "softmax" | "SoftmaxActivation"
    )
}

/// Compile `symbol` with the named parameters (`arg:`/`aux:` prefixes optional) for
/// inputs of `input_shape` fed to the variable `data_name`.
pub fn compile(
    symbol: &Symbol,
    params: &HashMap<String, NdArray>,
    data_name: &str,
    input_shape: [usize; 3],
) -> Result<Plan, GraphError> {
    let nodes = &symbol.nodes;
    let (head, head_out) = symbol.heads[0];
    if head_out != 0 {
        return Err(GraphError::Graph(format!(
            "the graph's output is output {head_out} of node {}; only first outputs are supported",
            nodes[head].name
        )));
    }
    // Which of the head's inputs carry the logits, and what makes them probabilities.
    let head_node = &nodes[head];
    let (logits_node, output) = if is_softmax(&head_node.op) {
        (head_node.inputs.first().map(|e| e.0), Output::Softmax)
    } else if head_node.op == "LogisticRegressionOutput"
        || (head_node.op == "Activation"
            && head_node.attrs.get("act_type").map(String::as_str) == Some("sigmoid"))
    {
        (head_node.inputs.first().map(|e| e.0), Output::Sigmoid)
    } else {
        return Err(GraphError::Graph(format!(
            "the graph's output is node {} ({}); recpredict needs class probabilities: a \
             softmax (SoftmaxOutput, softmax) or a sigmoid (LogisticRegressionOutput) at the end",
            head_node.name, head_node.op
        )));
    };
    let logits_node = logits_node.ok_or_else(|| {
        GraphError::Graph(format!("the output node {} has no input", head_node.name))
    })?;

    // The nodes the logits depend on (labels and loss heads are not run).
    let mut needed = vec![false; nodes.len()];
    needed[logits_node] = true;
    for (i, node) in nodes.iter().enumerate().rev() {
        if needed[i] && node.op != "null" {
            for &(j, _) in &node.inputs {
                needed[j] = true;
            }
        }
    }

    let mut shapes: Vec<Option<Shape>> = vec![None; nodes.len()];
    let mut input = None;
    let mut steps = Vec::new();
    let lookup = |name: &str| {
        params
            .get(&format!("arg:{name}"))
            .or_else(|| params.get(&format!("aux:{name}")))
            .or_else(|| params.get(name))
    };
    for (i, node) in nodes.iter().enumerate() {
        if !needed[i] {
            continue;
        }
        let cx = Ctx { node };
        if node.op == "null" {
            if node.name == data_name {
                let [c, h, w] = input_shape;
                shapes[i] = Some(vec![1, c, h, w]);
                input = Some(i);
            }
            // Parameters are read by the operators that use them.
            continue;
        }
        for &(j, out) in &node.inputs {
            if out != 0 {
                return Err(cx.err(format!(
                    "uses output {out} of node {}; only first outputs are supported",
                    nodes[j].name
                )));
            }
        }
        // The data input(s) and their shapes; parameter inputs by name.
        let data_in = |k: usize| -> Result<(usize, Shape), GraphError> {
            let &(j, _) = node
                .inputs
                .get(k)
                .ok_or_else(|| cx.err(format!("input {k} is missing")))?;
            match &shapes[j] {
                Some(s) => Ok((j, s.clone())),
                None => Err(cx.err(format!(
                    "input {} is neither the data nor computed from it",
                    nodes[j].name
                ))),
            }
        };
        let param = |k: usize, what: &str, expected: &[usize]| -> Result<NdArray, GraphError> {
            let &(j, _) = node
                .inputs
                .get(k)
                .ok_or_else(|| cx.err(format!("the {what} input is missing")))?;
            let name = &nodes[j].name;
            let perr = |message: String| GraphError::Param {
                name: name.clone(),
                node: node.name.clone(),
                message,
            };
            if nodes[j].op != "null" {
                return Err(perr("computed weights are not supported".into()));
            }
            let a = lookup(name).ok_or_else(|| perr("missing from the parameter file".into()))?;
            if a.shape != expected {
                return Err(perr(format!(
                    "shape {:?} in the parameter file, the graph needs {expected:?}",
                    a.shape
                )));
            }
            Ok(a.clone())
        };
        let (op, inputs, shape): (Op, Vec<usize>, Shape) = match node.op.as_str() {
            "Convolution" => {
                cx.no_layout()?;
                let (j, s) = data_in(0)?;
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
                if kernel.contains(&0) || stride.contains(&0) || dilate.contains(&0) || groups == 0
                {
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
                let weight = param(1, "weight", &[filters, cin / groups, kernel[0], kernel[1]])?;
                let bias = if no_bias {
                    None
                } else {
                    Some(param(2, "bias", &[filters])?)
                };
                (
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
                )
            }
            "BatchNorm" => {
                let (j, s) = data_in(0)?;
                let axis = cx.attr("axis").map(str::trim).unwrap_or("1");
                if axis != "1" && !(axis == "-1" && s.len() == 2) {
                    return Err(
                        cx.err(format!("axis {axis}: only the channel axis 1 is supported"))
                    );
                }
                let c = s[1];
                let eps = cx.float("eps", 1e-3)?;
                let fix_gamma = cx.boolean("fix_gamma", true)?;
                let gamma = param(1, "gamma", &[c])?;
                let beta = param(2, "beta", &[c])?;
                let mean = param(3, "moving_mean", &[c])?;
                let var = param(4, "moving_var", &[c])?;
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
                (Op::BatchNorm { scale, shift }, vec![j], s)
            }
            "Activation" => {
                let (j, s) = data_in(0)?;
                let act = match cx.attr("act_type").unwrap_or("") {
                    "relu" => Act::Relu,
                    "sigmoid" => Act::Sigmoid,
                    "tanh" => Act::Tanh,
                    "softrelu" => Act::SoftRelu,
                    "softsign" => Act::SoftSign,
                    other => return Err(cx.err(format!("act_type {other:?} is not supported"))),
                };
                (Op::Act(act), vec![j], s)
            }
            "Pooling" => {
                cx.no_layout()?;
                let (j, s) = data_in(0)?;
                if s.len() != 4 {
                    return Err(cx.err(format!("input shape {s:?} is not N×C×H×W")));
                }
                let max = match cx.attr("pool_type").unwrap_or("max") {
                    "max" => true,
                    "avg" => false,
                    other => return Err(cx.err(format!("pool_type {other:?} is not supported"))),
                };
                if cx.boolean("global_pool", false)? {
                    (Op::GlobalPool { max }, vec![j], vec![s[0], s[1], 1, 1])
                } else {
                    let kernel = cx.pair("kernel", [0, 0])?;
                    let stride = cx.pair("stride", [1, 1])?;
                    let pad = cx.pair("pad", [0, 0])?;
                    let ceil = match cx.attr("pooling_convention").unwrap_or("valid") {
                        "valid" => false,
                        "full" => true,
                        other => {
                            return Err(
                                cx.err(format!("pooling_convention {other:?} is not supported"))
                            )
                        }
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
                }
            }
            "FullyConnected" => {
                let (j, s) = data_in(0)?;
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
                let weight = param(1, "weight", &[hidden, features])?;
                let bias = if cx.boolean("no_bias", false)? {
                    None
                } else {
                    Some(param(2, "bias", &[hidden])?)
                };
                (Op::Fc { weight, bias }, vec![j], vec![s[0], hidden])
            }
            "elemwise_add" | "_Plus" | "_plus" | "_add" | "broadcast_add" | "broadcast_plus"
            | "ElementWiseSum" | "add_n" => {
                if node.inputs.len() < 2 {
                    return Err(cx.err("needs at least two inputs"));
                }
                let mut js = Vec::new();
                let mut shape: Shape = Vec::new();
                for k in 0..node.inputs.len() {
                    let (j, s) = data_in(k)?;
                    if k == 0 {
                        shape = s;
                    } else {
                        let broadcast = node.op.starts_with("broadcast");
                        let fits = s.len() == shape.len()
                            && s.iter()
                                .zip(&shape)
                                .all(|(&a, &b)| a == b || (broadcast && (a == 1 || b == 1)));
                        if !fits {
                            return Err(
                                cx.err(format!("input shapes {shape:?} and {s:?} do not match"))
                            );
                        }
                        shape = shape.iter().zip(&s).map(|(&a, &b)| a.max(b)).collect();
                    }
                    js.push(j);
                }
                (Op::Add, js, shape)
            }
            "Flatten" | "flatten" => {
                let (j, s) = data_in(0)?;
                (Op::Flatten, vec![j], vec![s[0], s[1..].iter().product()])
            }
            "identity" | "_copy" | "Dropout" | "BlockGrad" => {
                let (j, s) = data_in(0)?;
                (Op::Identity, vec![j], s)
            }
            op if is_softmax(op) => {
                let (j, s) = data_in(0)?;
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
                (Op::Softmax { dim }, vec![j], s)
            }
            "Concat" | "concat" => {
                let dim: usize = match cx.attr("dim") {
                    None => 1,
                    Some(d) => d
                        .trim()
                        .parse()
                        .map_err(|_| cx.err(format!("dim={d}: not supported")))?,
                };
                let mut js = Vec::new();
                let mut shape: Shape = Vec::new();
                for k in 0..node.inputs.len() {
                    let (j, s) = data_in(k)?;
                    if dim >= s.len() {
                        return Err(cx.err(format!("dim {dim} for a {}-D input", s.len())));
                    }
                    if k == 0 {
                        shape = s;
                    } else {
                        let fits = s.len() == shape.len()
                            && (0..s.len()).all(|d| d == dim || s[d] == shape[d]);
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
                (Op::Concat { dim }, js, shape)
            }
            other => {
                return Err(cx.err(format!(
                    "operator {other} is not supported (supported: Convolution, BatchNorm, \
                     Activation, Pooling, FullyConnected, elemwise_add, Flatten, identity, \
                     Dropout, Concat, SoftmaxOutput, softmax)"
                )))
            }
        };
        shapes[i] = Some(shape);
        steps.push(Step {
            name: node.name.clone(),
            op,
            inputs,
            out: i,
        });
    }
    let input = input.ok_or_else(|| {
        GraphError::Graph(format!(
            "the graph has no input variable named {data_name:?} that the output depends on"
        ))
    })?;
    let out_shape = shapes[logits_node].clone().ok_or_else(|| {
        GraphError::Graph(format!(
            "the output node {} is not computed from the input",
            head_node.name
        ))
    })?;
    if out_shape.len() != 2 && !(out_shape.len() == 4 && out_shape[2] == 1 && out_shape[3] == 1) {
        return Err(GraphError::Graph(format!(
            "the network's output has shape {out_shape:?}, not N×classes"
        )));
    }
    Ok(Plan {
        input_shape,
        input,
        steps,
        logits: logits_node,
        output,
        num_classes: out_shape[1],
        slots: nodes.len(),
    })
}
