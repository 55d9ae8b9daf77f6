//! Event files written by the real writers (TensorBoard's own
//! `EventFileWriter` and tensorboardX's `SummaryWriter`, via
//! tests/py/tb_write.py) read back with `tfrecord::split`,
//! `tfevents::decode`, `Plugins` and `metric_name`, point by point against
//! what the writer was given.

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;

use mosaic_shipper::format::tfrecord::split;
use mosaic_shipper::source::tfevents::{decode, metric_name, Content, Plugins};
use rand::{Rng, SeedableRng};

/// One scalar as read: (metric, tag, step, wall_time, value).
type Point = (String, String, i64, f64, f64);

const MAX_RECORD: usize = 1 << 20;

/// Reads one event file's scalars, and how many summary values were not
/// scalars. The buffer grows in random chunks and only the consumed
/// offset is kept between reads, as a follower of a live file does.
fn read(tb_root: &Path, file: &Path, rng: &mut impl Rng) -> (Vec<Point>, usize) {
    let bytes = std::fs::read(file).unwrap();
    let mut plugins = Plugins::default();
    let mut points = Vec::new();
    let mut ignored = 0;
    let mut records = 0;
    let mut offset = 0usize;
    let mut visible = 0usize;
    // Bounded: each round shows at least one more byte or consumes.
    for _ in 0..=2 * bytes.len() + 2 {
        if offset == bytes.len() {
            break;
        }
        visible = (visible + rng.gen_range(1..200)).min(bytes.len());
        let s = split(&bytes[offset..visible], offset as u64, MAX_RECORD);
        assert!(s.damage.is_empty(), "{}: {:?}", file.display(), s.damage);
        for f in &s.frames {
            let d = decode(&bytes[offset..][f.data.clone()]).unwrap();
            if records == 0 {
                assert_eq!(d.content, Content::FileVersion("brain.Event:2".into()));
            }
            records += 1;
            let (scalars, n) = plugins.scalars(&d);
            ignored += n;
            for (tag, v) in scalars {
                points.push((
                    metric_name(tb_root, file, tag),
                    tag.to_string(),
                    d.step,
                    d.wall_time,
                    v,
                ));
            }
        }
        offset += usize::try_from(s.consumed).unwrap();
    }
    assert_eq!(offset, bytes.len(), "{}", file.display());
    (points, ignored)
}

fn same_value(got: f64, want: f64, precision: &str) -> bool {
    match precision {
        "f32" => {
            let (g, w) = (got as f32, want as f32);
            g.to_bits() == w.to_bits() || (g.is_nan() && w.is_nan())
        }
        "f64" | "f16" => got.to_bits() == want.to_bits() || (got.is_nan() && want.is_nan()),
        other => panic!("precision {other}"),
    }
}

#[test]
fn real_writers_files_read_point_by_point() {
    let dir = tempfile::tempdir().unwrap();
    let tb_root = dir.path().join("tensorboard");
    let expected_path = dir.path().join("expected.json");
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/py/tb_write.py");
    let out = Command::new(common::python())
        .arg(&script)
        .arg(&tb_root)
        .arg(&expected_path)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "tb_write.py failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let expected: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&expected_path).unwrap()).unwrap();
    let dirs = expected["dirs"].as_object().unwrap();
    assert_eq!(dirs.len(), 4, "{dirs:?}");
    let mut rng = rand::rngs::StdRng::seed_from_u64(1);
    let mut total = 0;
    for (rel, want) in dirs {
        let files: Vec<PathBuf> = std::fs::read_dir(tb_root.join(rel))
            .unwrap()
            .map(|e| e.unwrap().path())
            .filter(|p| p.is_file() && p.to_string_lossy().contains("tfevents"))
            .collect();
        assert_eq!(files.len(), 1, "{rel}: {files:?}");
        let (got, ignored) = read(&tb_root, &files[0], &mut rng);
        let want_points = want["points"].as_array().unwrap();
        assert_eq!(got.len(), want_points.len(), "{rel}: {got:?}");
        for (i, (g, w)) in got.iter().zip(want_points).enumerate() {
            let w = w.as_array().unwrap();
            let want_value: f64 = w[4].as_str().unwrap().parse().unwrap();
            let precision = w[5].as_str().unwrap();
            assert_eq!(g.0, w[0].as_str().unwrap(), "{rel} #{i} metric");
            assert_eq!(g.1, w[1].as_str().unwrap(), "{rel} #{i} tag");
            assert_eq!(g.2, w[2].as_i64().unwrap(), "{rel} #{i} step");
            assert_eq!(
                g.3.to_bits(),
                w[3].as_f64().unwrap().to_bits(),
                "{rel} #{i} wall time"
            );
            assert!(
                same_value(g.4, want_value, precision),
                "{rel} #{i} {}: got {} want {want_value} ({precision})",
                g.1,
                g.4
            );
        }
        assert_eq!(
            ignored as u64,
            want["ignored"].as_u64().unwrap(),
            "{rel} ignored"
        );
        total += got.len();
    }
    // Non-finite values came through: the writer was given NaN and ±inf.
    assert!(total > 80, "{total}");
}
