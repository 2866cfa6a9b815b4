//! Turns a picture of a digit into the model's input, the way the training data was made: the
//! UCI digits are 32×32 black-and-white bitmaps, the digit scaled to fill the box, then counted
//! in 4×4 blocks, giving an 8×8 grid of ink levels from 0 to 16.

use image::imageops::{self, FilterType};
use image::{GrayImage, ImageReader, Luma};

use super::card::ImageSpec;

/// Largest width or height accepted, in pixels: checked from the file's header, before any
/// pixel is decoded.
pub const MAX_SIDE: u32 = 2048;
/// Most memory the decoder may take for one picture.
const MAX_DECODE_BYTES: u64 = 32 << 20;
/// Ink above this level (0–255) counts as part of the digit when looking for its outline.
const INK_THRESHOLD: u8 = 64;

/// Decodes `bytes` (PNG, JPEG, GIF, BMP or WebP) and returns `width × height` values in row order.
pub fn to_features(bytes: &[u8], spec: &ImageSpec) -> Result<Vec<f64>, String> {
    let mut reader = ImageReader::new(std::io::Cursor::new(bytes))
        .with_guessed_format()
        .map_err(|_| "The picture could not be read.".to_string())?;
    let mut limits = image::Limits::default();
    limits.max_image_width = Some(MAX_SIDE);
    limits.max_image_height = Some(MAX_SIDE);
    limits.max_alloc = Some(MAX_DECODE_BYTES);
    reader.limits(limits);
    let picture = reader.decode().map_err(|e| match e {
        image::ImageError::Limits(_) => {
            format!("The picture is too large: at most {MAX_SIDE}×{MAX_SIDE} pixels.")
        }
        e => format!("The picture could not be read as PNG, JPEG, GIF, BMP or WebP ({e})."),
    })?;

    // Transparent pixels (an untouched canvas) are paper: composite on white.
    let rgba = picture.to_luma_alpha8();
    let mut gray = GrayImage::new(rgba.width(), rgba.height());
    let mut total = 0u64;
    for (x, y, p) in rgba.enumerate_pixels() {
        let (l, a) = (p[0] as u32, p[1] as u32);
        let v = ((l * a + 255 * (255 - a)) / 255) as u8;
        total += v as u64;
        gray.put_pixel(x, y, Luma([v]));
    }
    // Ink is whatever differs from the background: dark-on-light pictures are inverted.
    let mean = total as f64 / (gray.width() as f64 * gray.height() as f64).max(1.0);
    if mean > 127.0 {
        imageops::invert(&mut gray);
    }

    let (mut x0, mut y0, mut x1, mut y1) = (u32::MAX, u32::MAX, 0, 0);
    for (x, y, p) in gray.enumerate_pixels() {
        if p[0] > INK_THRESHOLD {
            x0 = x0.min(x);
            y0 = y0.min(y);
            x1 = x1.max(x);
            y1 = y1.max(y);
        }
    }
    if x0 == u32::MAX {
        return Err("The picture is blank: draw or upload a digit.".into());
    }
    let digit = imageops::crop_imm(&gray, x0, y0, x1 - x0 + 1, y1 - y0 + 1).to_image();

    // Scale the digit to fill a 4·h × 4·w box, keeping its proportions, centred.
    let (box_w, box_h) = (spec.width * 4, spec.height * 4);
    let scale = (box_w as f64 / digit.width() as f64).min(box_h as f64 / digit.height() as f64);
    let w = ((digit.width() as f64 * scale).round() as u32).clamp(1, box_w);
    let h = ((digit.height() as f64 * scale).round() as u32).clamp(1, box_h);
    let scaled = imageops::resize(&digit, w, h, FilterType::Triangle);
    let mut canvas = GrayImage::new(box_w, box_h);
    imageops::overlay(
        &mut canvas,
        &scaled,
        ((box_w - w) / 2) as i64,
        ((box_h - h) / 2) as i64,
    );

    // The training digits were written with a broad pen (strokes about a quarter of the digit's
    // height); thicken thin strokes by one pixel all round so a fine pen reads the same way.
    let canvas = thicken(&canvas);

    // Count the ink pixels in each 4×4 block.
    let mut out = Vec::with_capacity((spec.width * spec.height) as usize);
    for by in 0..spec.height {
        for bx in 0..spec.width {
            let mut on = 0u32;
            for y in by * 4..by * 4 + 4 {
                for x in bx * 4..bx * 4 + 4 {
                    if canvas.get_pixel(x, y)[0] >= 128 {
                        on += 1;
                    }
                }
            }
            out.push(on as f64 / 16.0 * spec.max_value);
        }
    }
    Ok(out)
}

/// A 3×3 maximum filter: each pixel takes the darkest ink around it.
fn thicken(img: &GrayImage) -> GrayImage {
    let (w, h) = img.dimensions();
    GrayImage::from_fn(w, h, |x, y| {
        let mut max = 0u8;
        for ny in y.saturating_sub(1)..=(y + 1).min(h - 1) {
            for nx in x.saturating_sub(1)..=(x + 1).min(w - 1) {
                max = max.max(img.get_pixel(nx, ny)[0]);
            }
        }
        Luma([max])
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec() -> ImageSpec {
        ImageSpec {
            width: 8,
            height: 8,
            max_value: 16.0,
            invert: true,
        }
    }

    fn png(img: &GrayImage) -> Vec<u8> {
        let mut buf = Vec::new();
        img.write_to(&mut std::io::Cursor::new(&mut buf), image::ImageFormat::Png)
            .unwrap();
        buf
    }

    #[test]
    fn a_vertical_bar_becomes_a_centred_column_of_ink() {
        // Black bar on white paper, off-centre.
        let mut img = GrayImage::from_pixel(100, 100, Luma([255]));
        for y in 10..90 {
            for x in 10..22 {
                img.put_pixel(x, y, Luma([0]));
            }
        }
        let v = to_features(&png(&img), &spec()).unwrap();
        assert_eq!(v.len(), 64);
        assert!(v.iter().all(|x| (0.0..=16.0).contains(x)));
        // Full height, centred horizontally: the middle columns hold the ink.
        let column = |c: usize| (0..8).map(|r| v[r * 8 + c]).sum::<f64>();
        assert!(column(3) + column(4) > 100.0, "{v:?}");
        assert_eq!(column(0), 0.0);
        assert_eq!(column(7), 0.0);
    }

    #[test]
    fn blank_and_unreadable_pictures_are_refused() {
        let blank = GrayImage::from_pixel(20, 20, Luma([255]));
        assert!(to_features(&png(&blank), &spec())
            .unwrap_err()
            .contains("blank"));
        assert!(to_features(b"not a picture", &spec())
            .unwrap_err()
            .contains("could not be read"));
    }
}
