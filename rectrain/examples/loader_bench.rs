//! Decode + augment throughput of the training loader.
//!
//! Packs `N` photo-like 500×375 JPEGs (gradients plus noise, quality 90) into a
//! temporary `.rec`, then runs whole epochs of `rectrain::loader::epoch_batches` with
//! `resize = 256`, `image_shape = 3,224,224`, batch 32, for each augmentation level
//! and worker count, and prints images per second (one line per configuration).
//!
//! `cargo run -p rectrain --example loader_bench [N] [max_workers]`
//! (defaults: 256 images, workers 1..=available CPUs).

use std::fs::File;
use std::io::{BufWriter, Cursor, Write};
use std::sync::Arc;
use std::time::Instant;

use anyhow::{Context, Result};
use im2rec::recordio::{pack_image_record, IndexWriter, RecordWriter};
use image::{DynamicImage, ImageFormat, Rgb, RgbImage};
use rectrain::augment::AugmentationType;
use rectrain::loader::{epoch_batches, LoaderConfig, RecDataset};
use resnet::preprocess::PreprocessConfig;

fn photo(i: u32) -> Result<Vec<u8>> {
    let mut state = 0x9E37_79B9u32.wrapping_mul(i + 1);
    let img = RgbImage::from_fn(500, 375, |x, y| {
        state ^= state << 13;
        state ^= state >> 17;
        state ^= state << 5;
        let noise = (state % 48) as i32 - 24;
        let base = [
            (x * 255 / 500) as i32,
            (y * 255 / 375) as i32,
            ((x + y + i * 40) % 256) as i32,
        ];
        Rgb(base.map(|v| (v + noise).clamp(0, 255) as u8))
    });
    let mut buf = Cursor::new(Vec::new());
    DynamicImage::ImageRgb8(img).write_to(&mut buf, ImageFormat::Jpeg)?;
    Ok(buf.into_inner())
}

fn main() -> Result<()> {
    let mut args = std::env::args().skip(1);
    let n: u32 = args.next().map_or(Ok(256), |a| a.parse())?;
    let cpus = std::thread::available_parallelism().map_or(1, |c| c.get());
    let max_workers: usize = args.next().map_or(Ok(cpus), |a| a.parse())?;

    let dir = tempfile::tempdir()?;
    let rec = dir.path().join("bench.rec");
    let idx = dir.path().join("bench.idx");
    let mut w = RecordWriter::new(BufWriter::new(File::create(&rec)?));
    let mut iw = IndexWriter::new(BufWriter::new(File::create(&idx)?));
    let mut bytes = 0usize;
    for i in 0..n {
        let jpg = photo(i)?;
        bytes += jpg.len();
        let offset = w.write_record(&pack_image_record(
            u64::from(i),
            &[(i % 10) as f32],
            false,
            &jpg,
        ))?;
        iw.write(u64::from(i), offset)?;
    }
    w.into_inner()?.flush()?;
    iw.into_inner()?.flush()?;
    let ds = Arc::new(RecDataset::open(&rec, Some(&idx)).context("opening the bench .rec")?);
    println!(
        "{n} JPEGs 500x375 (mean {} KB) -> resize 256 -> 3x224x224, batch 32, {cpus} CPUs",
        bytes / n as usize / 1024
    );
    println!("augmentation          workers  images/s");
    for aug in [
        AugmentationType::None,
        AugmentationType::Crop,
        AugmentationType::CropColor,
        AugmentationType::CropColorTransform,
    ] {
        let mut workers = 1;
        while workers <= max_workers {
            let mut cfg = LoaderConfig::new(PreprocessConfig::new([3, 224, 224], Some(256)), 32);
            cfg.shuffle = true;
            cfg.augmentation = aug;
            cfg.workers = workers;
            let start = Instant::now();
            let mut images = 0;
            for batch in epoch_batches(Arc::clone(&ds), &cfg, 0) {
                images += batch?.n;
            }
            let secs = start.elapsed().as_secs_f64();
            println!(
                "{:<21} {workers:>7}  {:>8.1}",
                aug.as_str(),
                images as f64 / secs
            );
            workers *= 2;
        }
    }
    Ok(())
}
