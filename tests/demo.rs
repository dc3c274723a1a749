//! The embedded demo reproduces what PyG computed when the model was trained.

#[test]
fn demo_reproduces_pyg_embeddings_and_metrics() {
    let r = rgnn::demo::compute().expect("demo runs");
    assert!(r.max_embedding_diff < 1e-5, "embeddings differ from PyG by {}", r.max_embedding_diff);
    let pyg = r.reference.expect("training metrics are recorded in the task file");
    assert!((r.metrics.mrr - pyg.mrr).abs() < 1e-3, "{:?} vs {:?}", r.metrics, pyg);
    assert!((r.metrics.hits_at_10 - pyg.hits_at_10).abs() < 1e-3);
    // Far above chance (≈ 0.05 for 104 candidates): the model really was trained.
    assert!(r.metrics.mrr > 0.5, "{:?}", r.metrics);
    assert_eq!(r.lines.len(), 5);
}
