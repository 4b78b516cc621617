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
//! ([`Plan::head`]), which computes it in f64 from the logits, as every
//! [`crate::Head`] does.

use std::collections::HashMap;

mod ops;

use super::params::NdArray;
use super::symbol::Symbol;
use crate::Head;
use ops::{is_softmax, Ctx};

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
    pub head: Head,
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
    let (logits_node, output_head) = if is_softmax(&head_node.op) {
        (head_node.inputs.first().map(|e| e.0), Head::Softmax)
    } else if head_node.op == "LogisticRegressionOutput"
        || (head_node.op == "Activation"
            && head_node.attrs.get("act_type").map(String::as_str) == Some("sigmoid"))
    {
        (head_node.inputs.first().map(|e| e.0), Head::Sigmoid)
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
    for (i, node) in nodes.iter().enumerate() {
        if !needed[i] {
            continue;
        }
        if node.op == "null" {
            if node.name == data_name {
                let [c, h, w] = input_shape;
                shapes[i] = Some(vec![1, c, h, w]);
                input = Some(i);
            }
            // Parameters are read by the operators that use them.
            continue;
        }
        let cx = Ctx {
            node,
            nodes,
            shapes: &shapes,
            params,
        };
        for &(j, out) in &node.inputs {
            if out != 0 {
                return Err(cx.err(format!(
                    "uses output {out} of node {}; only first outputs are supported",
                    nodes[j].name
                )));
            }
        }
        let (op, inputs, shape) = ops::compile_node(&cx)?;
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
        head: output_head,
        num_classes: out_shape[1],
        slots: nodes.len(),
    })
}
