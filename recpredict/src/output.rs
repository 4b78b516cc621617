//! The output formats. The default is JSON Lines, one object per input image, in
//! input order, followed (with `--evaluate`) by one summary object.
//!
//! # Wire format (version 1; fields are only ever added, never renamed or removed)
//!
//! A **prediction line** (an image that was predicted) has these fields, in this order:
//!
//! | field | type | meaning |
//! |-------|------|---------|
//! | `path` | string | the input file: as given on the command line or stdin, the directory joined with the file's path under it, or the `.lst` path column (relative to `--root`) |
//! | `path_bytes` | array of integers | instead of `path` when the path is not valid UTF-8: its raw bytes (Unix) |
//! | `id` | integer | instead of `path` for `--rec` input: the record's IRHeader id (the `.lst` index it was packed from) |
//! | `prediction` | array of numbers | the probability of every class, index = class (SageMaker's key); softmax, or independent sigmoids for a multi-label model |
//! | `class` | integer | the most probable class (the lowest index on a tie) |
//! | `label` | string or null | that class's name from the model's `class_names`, null when the model has none |
//! | `probability` | number | that class's probability |
//! | `top_k` | array of objects | the `--top-k` most probable classes, most probable first: `{"class": int, "label": string or null, "probability": number}` |
//! | `true_class` | integer, number or array | only for `.lst`/`.rec` input: the true label. An integer for a single-label model (a label that is not a whole number is written as a number; a multi-label row's first label is used), the whole label vector for a multi-label model |
//!
//! An **error line** (an image that could not be read, decoded or predicted) carries
//! the input field(s) (`path`/`path_bytes`, or `id` plus `offset` for a record; `id`
//! is null when even the record header is unreadable) and `error` (a message), and
//! no probabilities. The same message is printed on stderr, and the exit code is 1.
//!
//! A **summary line** (with `--evaluate`) is the only object with a `type` field:
//! `{"type": "summary", ...}`, see [`crate::evaluate::SingleLabelSummary`] (and
//! [`crate::evaluate::MultiLabelSummary`], marked `"multi_label": true`). Prediction and
//! error lines have no `type`, so a consumer tells them apart by `"type" in obj`.
//!
//! With `--sagemaker` each image gives exactly `{"prediction": [p0, p1, ...]}`, the
//! line SageMaker's endpoint returns for `Accept: application/jsonlines` (with
//! Python's `json.dumps` spacing), and a failed image gives `{"error": "..."}` so that
//! line *n* still belongs to input *n*. With `--output-dir DIR` nothing is printed:
//! each image gives `DIR/<name>.out` holding that same object and a newline, like a
//! batch transform (`name.jpg` → `name.jpg.out`; a record → `<id>.out`; a directory
//! argument keeps the file's path under it, a `.lst` its path column).

use std::borrow::Cow;
use std::io::{self, Write};
use std::path::Path;

use resnet::{metrics, Head};
use serde::Serialize;

use crate::input::ItemKey;

/// One class of a `top_k` list.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Ranked<'a> {
    /// The class index.
    pub class: usize,
    /// Its name, when the model has class names.
    pub label: Option<&'a str>,
    /// Its probability.
    pub probability: f32,
}

/// A true label as written in the `true_class` field.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(untagged)]
pub enum TrueClass {
    /// A class index.
    Class(u64),
    /// A single label that is not a class index (negative or not a whole number).
    Value(f32),
    /// A multi-label vector.
    Vector(Vec<f32>),
}

impl TrueClass {
    /// The `true_class` of an item with these labels, for a single- or multi-label model.
    pub fn from_labels(labels: &[f32], head: Head) -> Option<Self> {
        if head.is_multi_label() {
            return Some(TrueClass::Vector(labels.to_vec()));
        }
        let &first = labels.first()?;
        Some(class_index(first).map_or(TrueClass::Value(first), TrueClass::Class))
    }
}

/// `v` as a class index when it is a non-negative whole number.
pub fn class_index(v: f32) -> Option<u64> {
    (v.is_finite() && v >= 0.0 && v.fract() == 0.0 && v < u64::MAX as f32).then_some(v as u64)
}

/// The input fields of a line.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
struct InputFields<'a> {
    #[serde(skip_serializing_if = "Option::is_none")]
    path: Option<Cow<'a, str>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    path_bytes: Option<Vec<u8>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    id: Option<Option<u64>>,
}

impl<'a> InputFields<'a> {
    fn of(key: &'a ItemKey) -> Self {
        match key {
            ItemKey::Path(p) => match p.to_str() {
                Some(s) => InputFields {
                    path: Some(Cow::Borrowed(s)),
                    path_bytes: None,
                    id: None,
                },
                None => InputFields {
                    path: None,
                    path_bytes: Some(path_bytes(p)),
                    id: None,
                },
            },
            ItemKey::Record { id, .. } => InputFields {
                path: None,
                path_bytes: None,
                id: Some(*id),
            },
        }
    }
}

#[cfg(unix)]
fn path_bytes(p: &Path) -> Vec<u8> {
    use std::os::unix::ffi::OsStrExt;
    p.as_os_str().as_bytes().to_vec()
}

#[cfg(not(unix))]
fn path_bytes(p: &Path) -> Vec<u8> {
    p.to_string_lossy().as_bytes().to_vec()
}

#[derive(Serialize)]
struct PredictionLine<'a> {
    #[serde(flatten)]
    input: InputFields<'a>,
    prediction: &'a [f32],
    class: usize,
    label: Option<&'a str>,
    probability: f32,
    top_k: Vec<Ranked<'a>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    true_class: Option<&'a TrueClass>,
}

#[derive(Serialize)]
struct ErrorLine<'a> {
    #[serde(flatten)]
    input: InputFields<'a>,
    #[serde(skip_serializing_if = "Option::is_none")]
    offset: Option<u64>,
    error: &'a str,
}

/// Write one prediction line (JSON, `\n`-terminated). Without a `key` (an image
/// posted to the server) the line has no input fields.
pub fn write_prediction(
    w: &mut dyn Write,
    key: Option<&ItemKey>,
    probs: &[f32],
    class_names: Option<&[String]>,
    k: usize,
    true_class: Option<&TrueClass>,
) -> io::Result<()> {
    let name = |c: usize| class_names.and_then(|n| n.get(c)).map(String::as_str);
    let ranked = metrics::ranked(probs, k.max(1));
    let best = metrics::argmax(probs);
    let line = PredictionLine {
        input: key.map(InputFields::of).unwrap_or_default(),
        prediction: probs,
        class: best,
        label: name(best),
        probability: probs.get(best).copied().unwrap_or(f32::NAN),
        top_k: ranked
            .iter()
            .take(k)
            .map(|&c| Ranked {
                class: c,
                label: name(c),
                probability: probs[c],
            })
            .collect(),
        true_class,
    };
    serde_json::to_writer(&mut *w, &line).map_err(io::Error::from)?;
    w.write_all(b"\n")
}

/// Write one error line (JSON, `\n`-terminated).
pub fn write_error(w: &mut dyn Write, key: &ItemKey, error: &str) -> io::Result<()> {
    let offset = match key {
        ItemKey::Record { offset, .. } => Some(*offset),
        ItemKey::Path(_) => None,
    };
    let line = ErrorLine {
        input: InputFields::of(key),
        offset,
        error,
    };
    serde_json::to_writer(&mut *w, &line).map_err(io::Error::from)?;
    w.write_all(b"\n")
}

/// Write SageMaker's `{"prediction": [p0, p1, ...]}` line (Python `json.dumps`
/// spacing; numbers in their shortest round-trip form), `\n`-terminated.
pub fn write_sagemaker(w: &mut dyn Write, probs: &[f32]) -> io::Result<()> {
    w.write_all(b"{\"prediction\": ")?;
    write_python_list(w, probs)?;
    w.write_all(b"}\n")
}

/// Write `[p0, p1, ...]` as Python's `json.dumps` spaces a list (numbers in their
/// shortest round-trip form), no newline: the body of SageMaker's
/// `application/json` answer.
pub fn write_python_list(w: &mut dyn Write, probs: &[f32]) -> io::Result<()> {
    w.write_all(b"[")?;
    for (i, p) in probs.iter().enumerate() {
        if i > 0 {
            w.write_all(b", ")?;
        }
        serde_json::to_writer(&mut *w, p).map_err(io::Error::from)?;
    }
    w.write_all(b"]")
}

/// Write `{"error": "..."}`: the `--sagemaker` line of an image that failed.
pub fn write_sagemaker_error(w: &mut dyn Write, error: &str) -> io::Result<()> {
    w.write_all(b"{\"error\": ")?;
    serde_json::to_writer(&mut *w, error).map_err(io::Error::from)?;
    w.write_all(b"}\n")
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::PathBuf;

    fn text(f: impl FnOnce(&mut dyn Write) -> io::Result<()>) -> String {
        let mut buf = Vec::new();
        f(&mut buf).unwrap();
        String::from_utf8(buf).unwrap()
    }

    #[test]
    fn prediction_line_has_every_field_in_order() {
        let key = ItemKey::Path(PathBuf::from("a/b.jpg"));
        let names = vec!["cat".to_string(), "dog".to_string(), "eel".to_string()];
        let tc = TrueClass::Class(1);
        let line = text(|w| {
            write_prediction(
                w,
                Some(&key),
                &[0.25, 0.5, 0.25],
                Some(&names),
                2,
                Some(&tc),
            )
        });
        assert_eq!(
            line,
            "{\"path\":\"a/b.jpg\",\"prediction\":[0.25,0.5,0.25],\"class\":1,\"label\":\"dog\",\
             \"probability\":0.5,\"top_k\":[{\"class\":1,\"label\":\"dog\",\"probability\":0.5},\
             {\"class\":0,\"label\":\"cat\",\"probability\":0.25}],\"true_class\":1}\n"
        );
    }

    #[test]
    fn record_lines_carry_the_id_and_null_labels_without_names() {
        let key = ItemKey::Record {
            id: Some(7),
            offset: 64,
        };
        let line = text(|w| write_prediction(w, Some(&key), &[0.9, 0.1], None, 1, None));
        assert_eq!(
            line,
            "{\"id\":7,\"prediction\":[0.9,0.1],\"class\":0,\"label\":null,\"probability\":0.9,\
             \"top_k\":[{\"class\":0,\"label\":null,\"probability\":0.9}]}\n"
        );
    }

    #[test]
    fn error_lines() {
        let key = ItemKey::Record {
            id: None,
            offset: 128,
        };
        assert_eq!(
            text(|w| write_error(w, &key, "bad \"magic\"")),
            "{\"id\":null,\"offset\":128,\"error\":\"bad \\\"magic\\\"\"}\n"
        );
        let key = ItemKey::Path(PathBuf::from("x.png"));
        assert_eq!(
            text(|w| write_error(w, &key, "truncated")),
            "{\"path\":\"x.png\",\"error\":\"truncated\"}\n"
        );
    }

    #[cfg(unix)]
    #[test]
    fn non_utf8_paths_are_written_as_bytes() {
        use std::os::unix::ffi::OsStrExt;
        let key = ItemKey::Path(PathBuf::from(std::ffi::OsStr::from_bytes(b"a\xff.jpg")));
        assert_eq!(
            text(|w| write_error(w, &key, "e")),
            "{\"path_bytes\":[97,255,46,106,112,103],\"error\":\"e\"}\n"
        );
    }

    #[test]
    fn sagemaker_lines_use_python_spacing() {
        assert_eq!(
            text(|w| write_sagemaker(w, &[0.125, 0.875, 1.0])),
            "{\"prediction\": [0.125, 0.875, 1.0]}\n"
        );
        assert_eq!(
            text(|w| write_sagemaker_error(w, "x")),
            "{\"error\": \"x\"}\n"
        );
        let parsed: serde_json::Value =
            serde_json::from_str(&text(|w| write_sagemaker(w, &[1e-9, 0.1]))).unwrap();
        assert_eq!(parsed["prediction"][1].as_f64().unwrap() as f32, 0.1);
    }

    #[test]
    fn true_class_forms() {
        assert_eq!(
            TrueClass::from_labels(&[2.0, 5.0], Head::Softmax),
            Some(TrueClass::Class(2))
        );
        assert_eq!(
            TrueClass::from_labels(&[0.5], Head::Softmax),
            Some(TrueClass::Value(0.5))
        );
        assert_eq!(
            TrueClass::from_labels(&[1.0, 0.0], Head::Sigmoid),
            Some(TrueClass::Vector(vec![1.0, 0.0]))
        );
        assert_eq!(TrueClass::from_labels(&[], Head::Softmax), None);
        assert_eq!(class_index(-1.0), None);
    }
}
