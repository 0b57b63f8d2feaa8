//! Optimizer steps against numbers derived by hand and against an f64 transcription of
//! PyTorch's formulas written out independently of the implementation.

use super::*;

fn sgd(lr: f64, momentum: f64, nesterov: bool, weight_decay: f64) -> Optimizer {
    Optimizer::new(OptimizerConfig::Sgd(SgdConfig {
        lr,
        momentum,
        nesterov,
        weight_decay,
    }))
    .expect("valid config")
}

/// Runs `grads.len()` steps on a one-element tensor starting at `p0`; returns p after each.
fn trajectory(optimizer: &mut Optimizer, p0: f32, grads: &[f32]) -> Vec<f32> {
    let mut p = [p0];
    grads
        .iter()
        .map(|&g| {
            optimizer.step_tensor("w", &mut p, &[g]).expect("step");
            p[0]
        })
        .collect()
}

fn assert_close(found: &[f32], expected: &[f64], tolerance: f64) {
    assert_eq!(found.len(), expected.len());
    for (idx, (&f, &e)) in found.iter().zip(expected).enumerate() {
        assert!(
            (f as f64 - e).abs() <= tolerance * e.abs().max(1.0),
            "value {idx}: found {f}, expected {e}"
        );
    }
}

#[test]
fn sgd_momentum_and_weight_decay_by_hand() {
    // lr 0.1, momentum 0.9, wd 0.1, p0 = 1, gradients 0.5, 0.5, −1:
    // 1: g = 0.5 + 0.1·1 = 0.6; b = 0.6; p = 1 − 0.06 = 0.94
    // 2: g = 0.5 + 0.094 = 0.594; b = 0.54 + 0.594 = 1.134; p = 0.94 − 0.1134 = 0.8266
    // 3: g = −1 + 0.08266 = −0.91734; b = 1.0206 − 0.91734 = 0.10326; p = 0.816274
    let mut optimizer = sgd(0.1, 0.9, false, 0.1);
    let found = trajectory(&mut optimizer, 1.0, &[0.5, 0.5, -1.0]);
    assert_close(&found, &[0.94, 0.8266, 0.816274], 1e-6);
    let Some(ParamState::Sgd {
        momentum_buffer: Some(buffer),
    }) = optimizer.state("w")
    else {
        panic!("SGD with momentum keeps a buffer");
    };
    assert!((buffer[0] as f64 - 0.10326).abs() < 1e-6);
}

#[test]
fn sgd_nesterov_by_hand() {
    // lr 0.1, momentum 0.9, wd 0.1, p0 = 1, gradients 0.5, 0.5:
    // 1: g = 0.6; b = 0.6; update = 0.6 + 0.9·0.6 = 1.14; p = 0.886
    // 2: g = 0.5 + 0.0886 = 0.5886; b = 0.54 + 0.5886 = 1.1286;
    //    update = 0.5886 + 0.9·1.1286 = 1.60434; p = 0.886 − 0.160434 = 0.725566
    let mut optimizer = sgd(0.1, 0.9, true, 0.1);
    let found = trajectory(&mut optimizer, 1.0, &[0.5, 0.5]);
    assert_close(&found, &[0.886, 0.725566], 1e-6);
}

#[test]
fn plain_sgd_keeps_no_buffer() {
    // p = 2 − 0.5·(1 + 0.2·2) = 1.3, then 1.3 − 0.5·(1 + 0.26) = 0.67.
    let mut optimizer = sgd(0.5, 0.0, false, 0.2);
    let found = trajectory(&mut optimizer, 2.0, &[1.0, 1.0]);
    assert_close(&found, &[1.3, 0.67], 1e-6);
    assert_eq!(
        optimizer.state("w"),
        Some(&ParamState::Sgd {
            momentum_buffer: None
        })
    );
}

#[test]
fn adam_by_hand() {
    // lr 0.1, β = (0.9, 0.999), ε = 1e-8, p0 = 1, gradients 0.5, −0.25, 0.125.
    // 1: m = 0.05, v = 0.00025; step size 0.1/0.1 = 1; denom = √0.00025/√0.001 + ε = 0.5 + ε;
    //    p = 1 − 0.05/0.5 = 0.9
    // 2: m = 0.045 − 0.025 = 0.02; v = 0.00024975 + 0.0000625 = 0.00031225;
    //    step size 0.1/0.19 = 0.5263158; denom = 0.0176706/0.0447102 = 0.395226;
    //    p = 0.9 − 0.5263158·0.02/0.395226 = 0.9 − 0.0266337 = 0.8733663
    // 3 (the same arithmetic, done in Python floats): 0.8393233849
    let mut optimizer = Optimizer::new(OptimizerConfig::Adam(AdamConfig {
        lr: 0.1,
        ..AdamConfig::adam()
    }))
    .expect("valid");
    let found = trajectory(&mut optimizer, 1.0, &[0.5, -0.25, 0.125]);
    assert_close(&found, &[0.9, 0.8733663, 0.8393233849], 2e-6);
    let Some(ParamState::Adam { step, exp_avg, .. }) = optimizer.state("w") else {
        panic!("Adam keeps its moments");
    };
    assert_eq!(*step, 3);
    // m after the third step: 0.9·0.02 + 0.1·0.125 = 0.0305.
    assert!((exp_avg[0] as f64 - 0.0305).abs() < 1e-7);
}

#[test]
fn adamw_by_hand() {
    // As `adam_by_hand` with wd 0.1, decoupled: p is first multiplied by 1 − 0.1·0.1 = 0.99.
    // 1: p = 0.99 − 0.1 = 0.89        2: p = 0.89·0.99 − 0.0266337 = 0.8544663
    let mut optimizer = Optimizer::new(OptimizerConfig::AdamW(AdamConfig {
        lr: 0.1,
        weight_decay: 0.1,
        ..AdamConfig::adamw()
    }))
    .expect("valid");
    let found = trajectory(&mut optimizer, 1.0, &[0.5, -0.25]);
    assert_close(&found, &[0.89, 0.8544663], 2e-6);
}

#[test]
fn adam_with_coupled_weight_decay_by_hand() {
    // Adam adds wd·p to the gradient: 1: g = 0.6, m = 0.06, v = 0.00036, p = 1 − 0.06/0.6 = 0.9
    // 2: g = −0.25 + 0.09 = −0.16; m = 0.054 − 0.016 = 0.038; v = 0.00035964 + 0.0000256
    //    = 0.00038524; p = 0.9 − (0.1/0.19)·0.038/(√0.00038524/√0.001999 + ε) = 0.8544414
    let mut optimizer = Optimizer::new(OptimizerConfig::Adam(AdamConfig {
        lr: 0.1,
        weight_decay: 0.1,
        ..AdamConfig::adam()
    }))
    .expect("valid");
    let found = trajectory(&mut optimizer, 1.0, &[0.5, -0.25]);
    assert_close(&found, &[0.9, 0.8544414], 2e-6);
}

#[test]
fn defaults_are_pytorchs() {
    assert_eq!(
        AdamConfig::adam(),
        AdamConfig {
            lr: 1e-3,
            betas: (0.9, 0.999),
            eps: 1e-8,
            weight_decay: 0.0
        }
    );
    assert_eq!(AdamConfig::adamw().weight_decay, 0.01);
    assert_eq!(SgdConfig::default().lr, 1e-3);
    assert_eq!(SgdConfig::default().momentum, 0.0);
}

/// A small deterministic sequence of values in (−1, 1).
fn values(n: usize, seed: u64) -> Vec<f32> {
    let mut state = seed;
    (0..n)
        .map(|_| {
            state = state
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            ((state >> 40) as f64 / (1u64 << 24) as f64 * 2.0 - 1.0) as f32
        })
        .collect()
}

/// Adam and AdamW in f64, one element at a time, transcribed from the PyTorch docs' algorithm.
fn adam_reference(p0: &[f32], grads: &[Vec<f32>], c: &AdamConfig, decoupled: bool) -> Vec<f64> {
    let mut p: Vec<f64> = p0.iter().map(|&v| v as f64).collect();
    let mut m = vec![0.0f64; p.len()];
    let mut v = vec![0.0f64; p.len()];
    for (t, g) in grads.iter().enumerate() {
        let t = (t + 1) as i32;
        for i in 0..p.len() {
            let mut gi = g[i] as f64;
            if decoupled {
                p[i] *= 1.0 - c.lr * c.weight_decay;
            } else {
                gi += c.weight_decay * p[i];
            }
            m[i] = c.betas.0 * m[i] + (1.0 - c.betas.0) * gi;
            v[i] = c.betas.1 * v[i] + (1.0 - c.betas.1) * gi * gi;
            let m_hat = m[i] / (1.0 - c.betas.0.powi(t));
            let v_hat = v[i] / (1.0 - c.betas.1.powi(t));
            // PyTorch puts ε outside the bias-corrected root: √v̂ + ε, as written here.
            p[i] -= c.lr * m_hat / (v_hat.sqrt() + c.eps);
        }
    }
    p
}

#[test]
fn adam_and_adamw_match_an_f64_transcription_on_many_elements() {
    let p0 = values(257, 1);
    let grads: Vec<Vec<f32>> = (0..3).map(|s| values(257, 10 + s)).collect();
    for (config, decoupled) in [
        (
            AdamConfig {
                lr: 0.01,
                weight_decay: 0.05,
                ..AdamConfig::adam()
            },
            false,
        ),
        (AdamConfig::adamw(), true),
    ] {
        let expected = adam_reference(&p0, &grads, &config, decoupled);
        let mut optimizer = Optimizer::new(if decoupled {
            OptimizerConfig::AdamW(config)
        } else {
            OptimizerConfig::Adam(config)
        })
        .expect("valid");
        let mut p = p0.clone();
        for g in &grads {
            optimizer.step_tensor("t", &mut p, g).expect("step");
        }
        assert_close(&p, &expected, 1e-5);
    }
}

#[test]
fn sgd_matches_an_f64_transcription_on_many_elements() {
    let p0 = values(100, 2);
    let grads: Vec<Vec<f32>> = (0..3).map(|s| values(100, 20 + s)).collect();
    for nesterov in [false, true] {
        let (lr, mu, wd) = (0.05, 0.8, 0.01);
        let mut p: Vec<f64> = p0.iter().map(|&v| v as f64).collect();
        let mut b: Option<Vec<f64>> = None;
        for g in &grads {
            let d: Vec<f64> = g.iter().zip(&p).map(|(&g, &p)| g as f64 + wd * p).collect();
            let buffer = match b {
                None => d.clone(),
                Some(old) => old.iter().zip(&d).map(|(b, d)| mu * b + d).collect(),
            };
            for i in 0..p.len() {
                let update = if nesterov {
                    d[i] + mu * buffer[i]
                } else {
                    buffer[i]
                };
                p[i] -= lr * update;
            }
            b = Some(buffer);
        }
        let mut optimizer = sgd(lr, mu, nesterov, wd);
        let mut found = p0.clone();
        for g in &grads {
            optimizer.step_tensor("t", &mut found, g).expect("step");
        }
        assert_close(&found, &p, 1e-6);
    }
}

#[test]
fn tensors_keep_separate_state() {
    let mut optimizer = sgd(0.1, 0.9, false, 0.0);
    let (mut a, mut b) = ([1.0f32], [1.0f32]);
    optimizer.step_tensor("a", &mut a, &[1.0]).expect("step");
    optimizer.step_tensor("a", &mut a, &[1.0]).expect("step");
    optimizer.step_tensor("b", &mut b, &[1.0]).expect("step");
    // a: 1 − 0.1 − 0.19 = 0.71; b had only its first step: 0.9.
    assert_close(&a, &[0.71], 1e-6);
    assert_close(&b, &[0.9], 1e-6);
    let names: Vec<&str> = optimizer.states().iter().map(|(n, _)| *n).collect();
    assert_eq!(names, ["a", "b"]);
}

#[test]
fn mismatches_are_errors() {
    let mut optimizer = sgd(0.1, 0.9, false, 0.0);
    let error = optimizer
        .step_tensor("fc.weight", &mut [0.0; 3], &[0.0; 2])
        .unwrap_err();
    assert_eq!(
        error.to_string(),
        "tensor `fc.weight` has 3 values but its gradient has 2"
    );
    let restored = ParamState::Adam {
        step: 1,
        exp_avg: vec![0.0],
        exp_avg_sq: vec![0.0],
    };
    let error = optimizer.restore_state("fc.bias", restored).unwrap_err();
    assert_eq!(
        error.to_string(),
        "the optimizer state of `fc.bias` is adam state, but the optimizer is sgd"
    );
    optimizer
        .restore_state(
            "fc.bias",
            ParamState::Sgd {
                momentum_buffer: Some(vec![0.0; 4]),
            },
        )
        .expect("kind fits");
    let error = optimizer
        .step_tensor("fc.bias", &mut [0.0; 2], &[0.0; 2])
        .unwrap_err();
    assert_eq!(
        error.to_string(),
        "the optimizer state of `fc.bias` holds 4 values but the tensor has 2"
    );
    let error = Optimizer::new(OptimizerConfig::Adam(AdamConfig {
        betas: (0.9, 1.0),
        ..AdamConfig::adam()
    }))
    .unwrap_err();
    assert_eq!(
        error.to_string(),
        "the beta2 is 1, but it must be in [0, 1)"
    );
}

#[test]
fn tensors_updated_together_on_two_threads_are_updated_as_one_by_one() {
    // Over the size below which one thread does it all, so the two threads share the work.
    let sizes = [150_000, 90_000, 70_000, 7];
    let grads: Vec<Vec<f32>> = (0..sizes.len())
        .map(|t| values(sizes[t], 11 + t as u64))
        .collect();
    let configs = [
        OptimizerConfig::Sgd(SgdConfig {
            lr: 0.1,
            momentum: 0.9,
            nesterov: true,
            weight_decay: 1e-4,
        }),
        OptimizerConfig::AdamW(AdamConfig::adamw()),
    ];
    for config in configs {
        let mut one = Optimizer::new(config.clone()).expect("valid config");
        let mut together = Optimizer::new(config).expect("valid config");
        let mut alone: Vec<Vec<f32>> = sizes.iter().map(|&n| values(n, n as u64)).collect();
        let mut shared = alone.clone();
        for _ in 0..3 {
            for (t, (params, grad)) in alone.iter_mut().zip(&grads).enumerate() {
                one.step_tensor(&format!("t{t}"), params, grad)
                    .expect("step");
            }
            let names: Vec<String> = (0..sizes.len()).map(|t| format!("t{t}")).collect();
            let tensors = names
                .iter()
                .zip(shared.iter_mut())
                .zip(&grads)
                .map(|((name, params), grad)| {
                    (name.as_str(), params.as_mut_slice(), grad.as_slice())
                })
                .collect();
            together.step_tensors(tensors, 2).expect("step");
        }
        assert_eq!(alone, shared);
        assert_eq!(
            format!("{:?}", one.states()),
            format!("{:?}", together.states())
        );
    }
}

#[test]
fn a_refused_tensor_updates_none_of_the_others() {
    let mut optimizer = sgd(0.1, 0.9, false, 0.0);
    let (mut a, mut b) = ([1.0f32; 2], [1.0f32; 3]);
    let error = optimizer
        .step_tensors(vec![("a", &mut a, &[1.0; 2]), ("b", &mut b, &[1.0; 2])], 2)
        .unwrap_err();
    assert_eq!(
        error.to_string(),
        "tensor `b` has 3 values but its gradient has 2"
    );
    let (mut c, mut d) = ([1.0f32; 2], [1.0f32; 2]);
    let error = optimizer
        .step_tensors(vec![("a", &mut c, &[1.0; 2]), ("a", &mut d, &[1.0; 2])], 2)
        .unwrap_err();
    assert_eq!(error.to_string(), "tensor `a` is updated twice in one step");
    assert_eq!((a, c, d), ([1.0; 2], [1.0; 2], [1.0; 2]));
    assert!(optimizer.states().is_empty());
}
