//! Dilated max pooling (`maxpool(k, dilation: d)`, as `nn.MaxPool2d`) through the JIT against
//! the reference: generated odd shapes, strides, paddings, dilations and `ceil_mode`, at batch
//! 3, checked and unchecked, on one and two threads.

use super::{check_with, checked_and_on_two_threads, graphs_of, Rng};
use cnnc::driver::{self, Select};

#[test]
fn dilated_max_pooling_over_generated_shapes() {
    let mut rng = Rng(17);
    let mut n_checked = 0;
    for _ in 0..30 {
        let (h, w, c) = (
            *rng.pick(&[5, 7, 9, 13]),
            *rng.pick(&[6, 9, 11]),
            *rng.pick(&[1, 3, 5, 7, 21]),
        );
        let kernel = 2 + rng.below(3);
        let stride = 1 + rng.below(3);
        let pad = rng.below(kernel / 2 + 1);
        let dilation = [2 + rng.below(2), 1 + rng.below(3)];
        let ceil = *rng.pick(&["true", "false"]);
        let source = format!(
            "network t(x: {h}x{w}x{c}) {{ x -> maxpool({kernel}, stride: {stride}, pad: {pad}, \
             dilation: [{}, {}], ceil_mode: {ceil}) }}",
            dilation[0], dilation[1]
        );
        let compilation = driver::compile(driver::load_source("t.cnn", &source), &Select::All);
        if let Some(graph) = compilation
            .graphs()
            .next()
            .filter(|_| !compilation.has_errors())
        {
            check_with(graph, 3, &checked_and_on_two_threads(), &source);
            n_checked += 1;
        };
    }
    assert!(n_checked >= 20, "only {n_checked} shapes were valid");
}

#[test]
fn dilated_max_pool_between_convolutions() {
    // The pool reads a conv's output written into its padded frame, and a conv reads its own.
    for graph in graphs_of(
        "network t(x: 15x13x5) {
            x -> conv(7, 3, pad: 1) -> relu -> maxpool(3, stride: 1, pad: 1, dilation: 2)
              -> conv(6, 3, pad: 1) -> maxpool(2, dilation: [1, 2], ceil_mode: true)
        }",
    ) {
        check_with(
            &graph,
            3,
            &checked_and_on_two_threads(),
            "between convolutions",
        );
    }
}
