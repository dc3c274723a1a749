//! Helpers shared by the integration tests.
#![allow(dead_code)]

use rgnn::runtime::io::TensorFile;
use std::path::{Path, PathBuf};

pub fn fixtures_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures")
}

/// Case names from every `manifest*.json` in the fixtures folder.
pub fn fixture_cases() -> Vec<String> {
    let mut cases = vec![];
    let mut manifests: Vec<_> = std::fs::read_dir(fixtures_dir())
        .expect("tests/fixtures exists")
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.file_name().unwrap().to_string_lossy().starts_with("manifest") && p.extension().is_some_and(|e| e == "json"))
        .collect();
    manifests.sort();
    for m in manifests {
        let v: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(&m).unwrap()).unwrap();
        for case in v.as_array().expect("manifest is a list") {
            cases.push(case["name"].as_str().expect("case name").to_string());
        }
    }
    cases
}

/// Normwise relative error: max |a − b| / max |b| (max |b| floored at 1e-6).
pub fn rel_err(got: &[f32], want: &[f32]) -> f64 {
    assert_eq!(got.len(), want.len());
    let scale = want.iter().fold(0f64, |m, &v| m.max(v.abs() as f64)).max(1e-6);
    let diff = got.iter().zip(want).fold(0f64, |m, (&a, &b)| m.max((a as f64 - b as f64).abs()));
    diff / scale
}

/// Expected outputs of a case, by tensor name.
pub fn expected(case: &str) -> Vec<(String, rgnn::Tensor)> {
    let f = TensorFile::open(fixtures_dir().join(format!("{case}.expected.safetensors"))).unwrap();
    f.names().into_iter().map(|n| (n.clone(), f.floats(&n).unwrap())).collect()
}
