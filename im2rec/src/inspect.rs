//! `im2rec --inspect FILE.rec`: one JSON object per record on stdout, for `jq`.
//!
//! The `.rec` is read sequentially, so `-` (stdin) works. Each line is an object with
//! these fields (additions only in future versions):
//!
//! | field | type | meaning |
//! |---|---|---|
//! | `record` | int | 0-based position of the record in the file |
//! | `offset` | int | byte offset of its first part (what `.idx` stores) |
//! | `length` | int | payload length in bytes (header + labels + image) |
//! | `flag` | int | IRHeader flag: 0 = one label in `label`, n = n labels follow |
//! | `label` | float | IRHeader label field as stored (0.0 from im2rec.py when `flag > 0`) |
//! | `labels` | array of float | the labels: the `flag` floats, or `[label]` when `flag = 0` |
//! | `id`, `id2` | int | IRHeader ids (`id` = the `.lst` index for im2rec output) |
//! | `image_bytes` | int | size of the encoded image |
//! | `format` | string/null | `jpeg`, `png`, ... (null: not a recognised image) |
//! | `width`, `height`, `channels` | int/null | from the image header (no pixel decode) |
//!
//! A payload too short for an IRHeader gives `{"record", "offset", "length", "error"}`
//! and counts as a failure. A broken RecordIO framing stops the run with an error
//! naming the byte offset, after the records before it were printed.

use std::io::{Read, Write};

use serde::Serialize;

use crate::imageops;
use crate::recordio::{unpack_image_record, RecordIoError, RecordReader};

/// One line of `--inspect` output.
#[derive(Debug, Serialize, PartialEq)]
pub struct RecordSummary {
    /// 0-based record number.
    pub record: u64,
    /// Byte offset of the record.
    pub offset: u64,
    /// Payload length.
    pub length: u64,
    /// IRHeader flag.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub flag: Option<u32>,
    /// IRHeader label field.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub label: Option<f32>,
    /// All labels.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub labels: Option<Vec<f32>>,
    /// IRHeader id.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub id: Option<u64>,
    /// IRHeader id2.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub id2: Option<u64>,
    /// Encoded image size.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub image_bytes: Option<u64>,
    /// Image format, when recognised.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub format: Option<Option<String>>,
    /// Image width.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub width: Option<Option<u32>>,
    /// Image height.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub height: Option<Option<u32>>,
    /// Image channels.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub channels: Option<Option<u8>>,
    /// Why the payload is not an image record.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

/// Describe one record payload.
pub fn summarize(record: u64, offset: u64, payload: &[u8]) -> RecordSummary {
    let mut s = RecordSummary {
        record,
        offset,
        length: payload.len() as u64,
        flag: None,
        label: None,
        labels: None,
        id: None,
        id2: None,
        image_bytes: None,
        format: None,
        width: None,
        height: None,
        channels: None,
        error: None,
    };
    match unpack_image_record(payload) {
        Err(e) => s.error = Some(e.to_string()),
        Ok(r) => {
            let info = imageops::probe(r.image);
            let format = info.as_ref().map(|i| i.format.clone()).or_else(|| {
                (!r.image.is_empty())
                    .then(|| image::guess_format(r.image).ok())
                    .flatten()
                    .map(imageops::format_name)
            });
            s.flag = Some(r.header.flag);
            s.label = Some(r.header.label);
            s.labels = Some(r.labels);
            s.id = Some(r.header.id);
            s.id2 = Some(r.header.id2);
            s.image_bytes = Some(r.image.len() as u64);
            s.format = Some(format);
            s.width = Some(info.as_ref().map(|i| i.width));
            s.height = Some(info.as_ref().map(|i| i.height));
            s.channels = Some(info.as_ref().map(|i| i.channels));
        }
    }
    s
}

/// Print one JSON line per record of `rec` to `out`. Returns `(records, failures)`;
/// an I/O error on `out` or a RecordIO framing error stops the run.
pub fn inspect<R: Read>(rec: R, out: &mut dyn Write) -> Result<(u64, u64), InspectError> {
    let mut reader = RecordReader::new(rec);
    let (mut count, mut failures) = (0u64, 0u64);
    while let Some(r) = reader.next_record()? {
        let summary = summarize(count, r.offset, &r.payload);
        failures += u64::from(summary.error.is_some());
        serde_json::to_writer(&mut *out, &summary).map_err(std::io::Error::from)?;
        out.write_all(b"\n")?;
        count += 1;
    }
    out.flush()?;
    Ok((count, failures))
}

/// Why `--inspect` stopped.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum InspectError {
    /// The `.rec` framing is broken.
    #[error(transparent)]
    Record(#[from] RecordIoError),
    /// Writing the output failed.
    #[error("writing output: {0}")]
    Output(#[from] std::io::Error),
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::recordio::{pack_image_record, RecordWriter};

    #[test]
    fn one_json_line_per_record() {
        let img = image::DynamicImage::new_rgb8(5, 3);
        let jpg = imageops::encode(&img, imageops::Encoding::Jpg, 90).unwrap();
        let mut w = RecordWriter::new(Vec::new());
        w.write_record(&pack_image_record(4, &[2.0], false, &jpg))
            .unwrap();
        w.write_record(&pack_image_record(5, &[1.0, 0.0], true, b"xyz"))
            .unwrap();
        w.write_record(b"short").unwrap();
        let rec = w.into_inner().unwrap();
        let mut out = Vec::new();
        assert_eq!(inspect(&rec[..], &mut out).unwrap(), (3, 1));
        let lines: Vec<serde_json::Value> = String::from_utf8(out)
            .unwrap()
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect();
        assert_eq!(lines[0]["id"], 4);
        assert_eq!(lines[0]["flag"], 0);
        assert_eq!(lines[0]["labels"], serde_json::json!([2.0]));
        assert_eq!(lines[0]["format"], "jpeg");
        assert_eq!(
            (
                lines[0]["width"].clone(),
                lines[0]["height"].clone(),
                lines[0]["channels"].clone()
            ),
            (5.into(), 3.into(), 3.into())
        );
        assert_eq!(lines[1]["flag"], 2);
        assert_eq!(lines[1]["label"], 0.0);
        assert_eq!(lines[1]["labels"], serde_json::json!([1.0, 0.0]));
        assert_eq!(lines[1]["format"], serde_json::Value::Null);
        assert_eq!(lines[1]["image_bytes"], 3);
        assert_eq!(lines[1]["offset"], 8 + ((24 + jpg.len() as u64 + 3) & !3));
        assert!(lines[2]["error"].is_string());
        assert_eq!(lines[2]["length"], 5);
    }
}
