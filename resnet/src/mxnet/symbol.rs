//! MXNet's symbol JSON (`*-symbol.json`): the network as a list of nodes.
//!
//! `{"nodes": [{"op", "name", "attrs", "inputs": [[node, output, version], ...]}, ...],
//! "arg_nodes": [...], "heads": [[node, output, version]], "attrs": {...}}`. Nodes are
//! in topological order; `op: "null"` nodes are variables (the input `data`, labels and
//! parameters). Operator parameters are strings (`"(3, 3)"`, `"True"`, `"2e-05"`);
//! symbols saved by MXNet before 0.9 keep them under `param` (and `attr`) instead of
//! `attrs`, and may give inputs as `[node, output]` pairs — both are read.

use std::collections::BTreeMap;

use serde::Deserialize;
use serde_json::Value;

/// One node of the graph.
#[derive(Debug, Clone, PartialEq)]
pub struct Node {
    /// The operator (`"null"` for a variable).
    pub op: String,
    /// The node's name (parameter names derive from it).
    pub name: String,
    /// Operator parameters, as MXNet writes them (strings).
    pub attrs: BTreeMap<String, String>,
    /// `(node index, output index)` of each input.
    pub inputs: Vec<(usize, usize)>,
}

/// A parsed symbol file.
#[derive(Debug, Clone, PartialEq)]
pub struct Symbol {
    /// The nodes, in topological order.
    pub nodes: Vec<Node>,
    /// The graph's outputs, `(node index, output index)`.
    pub heads: Vec<(usize, usize)>,
}

/// Why a symbol file is unusable.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SymbolError {
    /// Not JSON, or not a symbol's JSON.
    #[error("not an MXNet symbol JSON: {0}")]
    Json(#[from] serde_json::Error),
    /// The graph is inconsistent.
    #[error("{0}")]
    Graph(String),
}

#[derive(Deserialize)]
struct RawNode {
    op: String,
    name: String,
    #[serde(default)]
    attrs: Option<BTreeMap<String, Value>>,
    #[serde(default)]
    attr: Option<BTreeMap<String, Value>>,
    #[serde(default)]
    param: Option<BTreeMap<String, Value>>,
    #[serde(default)]
    inputs: Vec<Vec<i64>>,
}

#[derive(Deserialize)]
struct RawSymbol {
    nodes: Vec<RawNode>,
    heads: Vec<Vec<i64>>,
}

fn text(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

fn entry(
    e: &[i64],
    n_nodes: usize,
    limit: usize,
    what: &str,
) -> Result<(usize, usize), SymbolError> {
    let (Some(&node), Some(&out)) = (e.first(), e.get(1)) else {
        return Err(SymbolError::Graph(format!(
            "{what}: an entry {e:?} without node and output"
        )));
    };
    if node < 0 || node as usize >= limit.min(n_nodes) || out < 0 {
        return Err(SymbolError::Graph(format!(
            "{what}: entry {e:?} refers to no earlier node"
        )));
    }
    Ok((node as usize, out as usize))
}

/// Parse a symbol file's JSON. Inputs must refer to earlier nodes.
pub fn parse_symbol(json: &[u8]) -> Result<Symbol, SymbolError> {
    let raw: RawSymbol = serde_json::from_slice(json)?;
    let n = raw.nodes.len();
    let mut nodes = Vec::with_capacity(n);
    for (i, rn) in raw.nodes.into_iter().enumerate() {
        let mut attrs = BTreeMap::new();
        for map in [rn.attr, rn.param, rn.attrs].into_iter().flatten() {
            for (k, v) in map {
                attrs.insert(k, text(&v));
            }
        }
        let inputs = rn
            .inputs
            .iter()
            .map(|e| entry(e, n, i, &format!("node {i} ({})", rn.name)))
            .collect::<Result<_, _>>()?;
        nodes.push(Node {
            op: rn.op,
            name: rn.name,
            attrs,
            inputs,
        });
    }
    let heads = raw
        .heads
        .iter()
        .map(|e| entry(e, n, n, "heads"))
        .collect::<Result<Vec<_>, _>>()?;
    if heads.is_empty() {
        return Err(SymbolError::Graph(
            "the graph has no output (heads is empty)".into(),
        ));
    }
    Ok(Symbol { nodes, heads })
}

/// An integer tuple attribute such as `"(3, 3)"`, `"[1,1]"`, `"(2,)"` or `"3"`.
pub fn parse_tuple(s: &str) -> Option<Vec<usize>> {
    let t = s
        .trim()
        .trim_start_matches(['(', '['])
        .trim_end_matches([')', ']']);
    t.split(',')
        .map(str::trim)
        .filter(|p| !p.is_empty())
        .map(|p| p.trim_end_matches('L').parse::<usize>().ok())
        .collect()
}

/// A boolean attribute: `True`/`true`/`1` or `False`/`false`/`0`.
pub fn parse_bool(s: &str) -> Option<bool> {
    match s.trim() {
        "True" | "true" | "1" => Some(true),
        "False" | "false" | "0" => Some(false),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_new_and_old_style_nodes() {
        let json = br#"{"nodes": [
            {"op": "null", "name": "data", "inputs": []},
            {"op": "null", "name": "w", "attrs": {"__shape__": "(4, 3, 3, 3)"}, "inputs": []},
            {"op": "Convolution", "name": "c", "attrs": {"kernel": "(3, 3)", "no_bias": "True", "num_filter": "4"}, "inputs": [[0, 0, 0], [1, 0, 0]]},
            {"op": "Activation", "name": "r", "param": {"act_type": "relu"}, "inputs": [[2, 0]]}
          ], "arg_nodes": [0, 1], "heads": [[3, 0, 0]], "attrs": {"mxnet_version": ["int", 10901]}}"#;
        let s = parse_symbol(json).unwrap();
        assert_eq!(s.nodes.len(), 4);
        assert_eq!(s.nodes[2].attrs["kernel"], "(3, 3)");
        assert_eq!(s.nodes[2].inputs, vec![(0, 0), (1, 0)]);
        assert_eq!(s.nodes[3].attrs["act_type"], "relu");
        assert_eq!(s.heads, vec![(3, 0)]);
    }

    #[test]
    fn refuses_forward_references_and_garbage() {
        let json = br#"{"nodes": [{"op": "Flatten", "name": "f", "inputs": [[1, 0, 0]]},
            {"op": "null", "name": "data", "inputs": []}], "heads": [[0, 0, 0]]}"#;
        let e = parse_symbol(json).unwrap_err().to_string();
        assert!(e.contains("node 0 (f)"), "{e}");
        assert!(parse_symbol(b"{\"nodes\": 3}").is_err());
        assert!(parse_symbol(b"").is_err());
    }

    #[test]
    fn attribute_values() {
        assert_eq!(parse_tuple("(3, 3)"), Some(vec![3, 3]));
        assert_eq!(parse_tuple("(2,)"), Some(vec![2]));
        assert_eq!(parse_tuple("[1,1]"), Some(vec![1, 1]));
        assert_eq!(parse_tuple("()"), Some(vec![]));
        assert_eq!(parse_tuple("(a, 1)"), None);
        assert_eq!(parse_bool("True"), Some(true));
        assert_eq!(parse_bool("0"), Some(false));
        assert_eq!(parse_bool("yes"), None);
    }
}
