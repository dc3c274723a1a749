//! Every WGSL module generated for every fixture parses and validates with naga (wgpu's shader
//! compiler front end) — in f32 and f16 storage, and with arrays split across small bindings.
//! No GPU needed.

mod common;
use common::*;
use rgnn::codegen::{CompileOptions, LowerOptions};
use rgnn::ir::level2::DType;
use rgnn::kernels::wgsl::WgslOptions;

fn validate(label: &str, source: &str) -> Result<(), String> {
    let module = naga::front::wgsl::parse_str(source).map_err(|e| format!("{label}: parse error: {}", e.emit_to_string(source)))?;
    naga::valid::Validator::new(naga::valid::ValidationFlags::all(), naga::valid::Capabilities::all())
        .validate(&module)
        .map_err(|e| format!("{label}: invalid: {}", e.emit_to_string(source)))?;
    Ok(())
}

#[test]
fn every_generated_module_validates() {
    let variants = [
        ("f32", CompileOptions::default(), WgslOptions::default()),
        ("f16", CompileOptions { storage: DType::F16, ..Default::default() }, WgslOptions { storage: DType::F16, ..Default::default() }),
        (
            "two-pass softmax",
            CompileOptions { lower: LowerOptions { online_softmax: false }, ..Default::default() },
            WgslOptions::default(),
        ),
        ("1 KiB bindings", CompileOptions::default(), WgslOptions { max_binding_bytes: 1024, ..Default::default() }),
    ];
    let mut failures = vec![];
    let (mut modules, mut chunked) = (0, 0);
    for case in fixture_cases() {
        let (model, graph) = load_case(&case);
        for (variant, options, wgsl) in &variants {
            let generated = rgnn::runtime::emit_wgsl_for(&model, &graph, *options, wgsl).unwrap();
            for d in &generated.dispatches {
                modules += 1;
                chunked += d.bindings.iter().any(|b| b.chunk > 0) as usize;
                if let Err(e) = validate(&format!("{case} ({variant}) {}", d.label), &d.source) {
                    failures.push(e);
                }
            }
        }
    }
    println!("{modules} modules validated, {chunked} with chunked bindings");
    assert!(chunked > 0, "the 1 KiB variant should split arrays into chunks");
    assert!(failures.is_empty(), "{} of {modules} modules failed:\n{}", failures.len(), failures.join("\n\n"));
}
