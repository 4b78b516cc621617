//! The image record payload: a 24-byte IRHeader (`struct IRHeader { u32 flag; f32
//! label; u64 id; u64 id2; }`, little-endian, no padding), then `flag` float32 labels
//! when `flag > 0`, then the encoded image.

use super::RecordIoError;

/// Bytes in an IRHeader.
pub const IR_HEADER_LEN: usize = 24;

/// MXNet's `IRHeader` (`_IR_FORMAT = 'IfQQ'`).
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct IrHeader {
    /// 0: one label, in `label`. N > 0: N float32 labels follow the header.
    pub flag: u32,
    /// The label when `flag == 0`. When `flag > 0` Python writes 0.0 here and
    /// im2rec.cc the first label; readers should ignore it then.
    pub label: f32,
    /// The image id (im2rec: the `.lst` index).
    pub id: u64,
    /// The high half of a 128-bit id; 0 in practice.
    pub id2: u64,
}

impl IrHeader {
    /// The 24 header bytes.
    pub fn to_bytes(&self) -> [u8; IR_HEADER_LEN] {
        let mut out = [0u8; IR_HEADER_LEN];
        out[0..4].copy_from_slice(&self.flag.to_le_bytes());
        out[4..8].copy_from_slice(&self.label.to_le_bytes());
        out[8..16].copy_from_slice(&self.id.to_le_bytes());
        out[16..24].copy_from_slice(&self.id2.to_le_bytes());
        out
    }

    /// Decodes the first 24 bytes of `payload`.
    pub fn from_bytes(payload: &[u8]) -> Result<Self, RecordIoError> {
        let Some(bytes) = payload.get(..IR_HEADER_LEN) else {
            return Err(RecordIoError::ImageRecordTooShort {
                length: payload.len(),
            });
        };
        let u32_at =
            |i: usize| u32::from_le_bytes([bytes[i], bytes[i + 1], bytes[i + 2], bytes[i + 3]]);
        let u64_at = |i: usize| u64::from(u32_at(i)) | (u64::from(u32_at(i + 4)) << 32);
        Ok(IrHeader {
            flag: u32_at(0),
            label: f32::from_bits(u32_at(4)),
            id: u64_at(8),
            id2: u64_at(16),
        })
    }
}

/// A decoded image record, borrowing the image bytes from the payload.
#[derive(Debug, Clone, PartialEq)]
pub struct ImageRecord<'a> {
    /// The header as stored.
    pub header: IrHeader,
    /// The labels: the `flag` floats after the header when `flag > 0`, otherwise
    /// `vec![header.label]`.
    pub labels: Vec<f32>,
    /// The encoded image (or whatever content follows the labels).
    pub image: &'a [u8],
}

/// Builds an image record payload the way `mx.recordio.pack` does.
///
/// `multi == false`: `flag = 0`, `label = labels[0]` (0.0 when `labels` is empty).
/// `multi == true`: Python's list form: `flag = labels.len()`, header `label = 0.0`,
/// the labels follow as little-endian float32 (a one-element list gives `flag = 1`).
/// `id2` is always 0.
///
/// # Panics
/// If `multi` and there are more than `u32::MAX` labels.
pub fn pack_image_record(id: u64, labels: &[f32], multi: bool, image: &[u8]) -> Vec<u8> {
    let header = if multi {
        let flag = u32::try_from(labels.len()).expect("more than u32::MAX labels");
        IrHeader {
            flag,
            label: 0.0,
            id,
            id2: 0,
        }
    } else {
        IrHeader {
            flag: 0,
            label: labels.first().copied().unwrap_or(0.0),
            id,
            id2: 0,
        }
    };
    let label_bytes = if multi { labels.len() * 4 } else { 0 };
    let mut out = Vec::with_capacity(IR_HEADER_LEN + label_bytes + image.len());
    out.extend_from_slice(&header.to_bytes());
    if multi {
        for label in labels {
            out.extend_from_slice(&label.to_le_bytes());
        }
    }
    out.extend_from_slice(image);
    out
}

/// Splits an image record payload into header, labels and image bytes
/// (`mx.recordio.unpack`). Fails if the payload is shorter than 24 bytes or the
/// `flag` labels run past its end.
pub fn unpack_image_record(payload: &[u8]) -> Result<ImageRecord<'_>, RecordIoError> {
    let header = IrHeader::from_bytes(payload)?;
    if header.flag == 0 {
        return Ok(ImageRecord {
            header,
            labels: vec![header.label],
            image: &payload[IR_HEADER_LEN..],
        });
    }
    let image_start = IR_HEADER_LEN as u64 + 4 * u64::from(header.flag);
    if image_start > payload.len() as u64 {
        return Err(RecordIoError::LabelsPastEnd {
            flag: header.flag,
            length: payload.len(),
        });
    }
    // image_start <= payload.len(), so it fits in usize.
    let image_start = image_start as usize;
    let labels = payload[IR_HEADER_LEN..image_start]
        .chunks_exact(4)
        .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
        .collect();
    Ok(ImageRecord {
        header,
        labels,
        image: &payload[image_start..],
    })
}
