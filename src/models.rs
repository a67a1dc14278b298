//! The networks of the GTA experiments (DESIGN.md §1–2), built as [`Network`]s whose
//! parameter names are the PyTorch `state_dict` keys of the equivalent modules — for exp1
//! exactly the authors' (`feature.0.weight`, `main.1.running_mean`, `classifier_c.0.bias`, ...).
//!
//! | net | layers |
//! |---|---|
//! | F1 | conv k5 3→ndf, ReLU, pool 2, conv k5 ndf→ndf, ReLU, pool 2, conv k5 ndf→2ndf, ReLU → 2ndf |
//! | C1 | linear 2ndf→2ndf, ReLU, linear 2ndf→10 |
//! | F2 | conv k5 3→32, ReLU, pool 2, conv k5 32→48, ReLU, pool 2 → 1200 |
//! | C2 | linear 1200→100, ReLU, linear 100→100, ReLU, linear 100→10 |
//! | G  | convT k2 (11+emb+nz)→8ngf (1→2), then k4 s2 p1 8ngf→4ngf→2ngf→ngf→3, BN+ReLU between, tanh |
//! | D  | 4 × [conv k3 p1, BN, LeakyReLU 0.2, pool (2,2,2,4)] 3→ndf→2ndf→4ndf→2ndf; heads 2ndf→1 and 2ndf→10 |
//! | G4 | convT k4 s1 (11+emb+nz)→8ngf (1→4), then k4 s2 p1 8ngf→4ngf→2ngf→3, BN+ReLU between, tanh |
//! | D_src / D_tgt | conv k4 s2 p1 3→ndf, LReLU; ndf→2ndf, 2ndf→4ndf (BN, LReLU); conv k4 s1 p0 4ndf→K (K = 11 / 1) |
//!
//! The authors' D ends its real/fake head in a sigmoid and uses BCELoss; we keep the logit and
//! use BCE-with-logits (the same function, numerically stable). Convolutions of G, G4, D_src
//! and D_tgt have no biases (DCGAN convention); F, D and the linears have biases.

use crate::backend::{Backend, Cpu, TensorValue};
use crate::error::Result;
use crate::nn::init::Init;
use crate::nn::Network;
use crate::tape::{Tape, Var};

/// `$model<B2>` from `$model<B>`: the network's state moved to another backend, the other
/// fields as they are.
macro_rules! impl_to_backend {
    ($model:ident { $($field:ident),* }) => {
        impl<B: Backend> $model<B> {
            pub fn to_backend<B2: Backend>(&self, from: &B, to: &B2) -> Result<$model<B2>> {
                Ok($model {
                    net: self.net.to_backend(from, to)?,
                    $($field: self.$field,)*
                })
            }
        }
    };
}
impl_to_backend!(Embedder { dim });
impl_to_backend!(Classifier {});
impl_to_backend!(Generator { emb_dim, nz });
impl_to_backend!(Discriminator {});
impl_to_backend!(PatchDiscriminator { outputs });

/// Number of digit classes; the generator's one-hot has one more slot (index 10 = "target").
pub const CLASSES: usize = 10;
const SLOPE: f32 = 0.2;

/// Network widths (the authors' `ndf`, `ngf`, `nz`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Widths {
    pub ndf: usize,
    pub ngf: usize,
    pub nz: usize,
}

impl Default for Widths {
    fn default() -> Self {
        Widths {
            ndf: 64,
            ngf: 64,
            nz: 512,
        }
    }
}

/// Which embedder/classifier pair.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Backbone {
    /// F1 + C1, the authors' digit networks.
    F1C1,
    /// F2 + C2, the paper's second digit architecture (1200-d embedding).
    F2C2,
}

/// The embedder F: image [N,3,32,32] → embedding [N, dim].
#[derive(Debug)]
pub struct Embedder<B: Backend = Cpu> {
    pub net: Network<B>,
    pub dim: usize,
}

impl Embedder {
    pub fn new(backbone: Backbone, w: Widths, init: &Init) -> Self {
        let mut net = Network::new("netF");
        let ndf = w.ndf;
        let dim = match backbone {
            Backbone::F1C1 => {
                net.sequential("feature", init)
                    .conv2d(3, ndf, 5, 1, 0, true)
                    .relu()
                    .max_pool2d(2)
                    .conv2d(ndf, ndf, 5, 1, 0, true)
                    .relu()
                    .max_pool2d(2)
                    .conv2d(ndf, 2 * ndf, 5, 1, 0, true)
                    .relu();
                2 * ndf
            }
            Backbone::F2C2 => {
                net.sequential("feature", init)
                    .conv2d(3, 32, 5, 1, 0, true)
                    .relu()
                    .max_pool2d(2)
                    .conv2d(32, 48, 5, 1, 0, true)
                    .relu()
                    .max_pool2d(2);
                48 * 5 * 5
            }
        };
        Embedder { net, dim }
    }
}

impl<B: Backend> Embedder<B> {
    pub fn forward(
        &mut self,
        tape: &mut Tape<B>,
        vars: &[Var],
        x: Var,
        training: bool,
    ) -> Result<Var> {
        let h = self.net.run(tape, vars, 0, x, training)?;
        tape.flatten(h)
    }
}

/// The classifier C: embedding → 10 logits.
#[derive(Debug)]
pub struct Classifier<B: Backend = Cpu> {
    pub net: Network<B>,
}

impl Classifier {
    pub fn new(backbone: Backbone, w: Widths, init: &Init) -> Self {
        let mut net = Network::new("netC");
        match backbone {
            Backbone::F1C1 => {
                let d = 2 * w.ndf;
                net.sequential("main", init)
                    .linear(d, d, true)
                    .relu()
                    .linear(d, CLASSES, true);
            }
            Backbone::F2C2 => {
                net.sequential("main", init)
                    .linear(1200, 100, true)
                    .relu()
                    .linear(100, 100, true)
                    .relu()
                    .linear(100, CLASSES, true);
            }
        }
        Classifier { net }
    }
}

impl<B: Backend> Classifier<B> {
    pub fn forward(
        &mut self,
        tape: &mut Tape<B>,
        vars: &[Var],
        e: Var,
        training: bool,
    ) -> Result<Var> {
        self.net.run(tape, vars, 0, e, training)
    }
}

/// Which generator.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum GeneratorArch {
    /// The authors' G: 1 → 2 → 4 → 8 → 16 → 32.
    G,
    /// exp3's G4: 1 → 4 → 8 → 16 → 32.
    G4,
}

/// The generator: [one-hot (11), embedding, noise] as a 1×1 map → 32×32×3 image in [−1, 1].
#[derive(Debug)]
pub struct Generator<B: Backend = Cpu> {
    pub net: Network<B>,
    pub emb_dim: usize,
    pub nz: usize,
}

impl Generator {
    pub fn new(arch: GeneratorArch, emb_dim: usize, w: Widths, init: &Init) -> Self {
        let mut net = Network::new("netG");
        let (ngf, cin) = (w.ngf, CLASSES + 1 + emb_dim + w.nz);
        match arch {
            GeneratorArch::G => {
                net.sequential("main", init)
                    .conv_transpose2d(cin, 8 * ngf, 2, 1, 0, false)
                    .batch_norm2d(8 * ngf)
                    .relu()
                    .conv_transpose2d(8 * ngf, 4 * ngf, 4, 2, 1, false)
                    .batch_norm2d(4 * ngf)
                    .relu()
                    .conv_transpose2d(4 * ngf, 2 * ngf, 4, 2, 1, false)
                    .batch_norm2d(2 * ngf)
                    .relu()
                    .conv_transpose2d(2 * ngf, ngf, 4, 2, 1, false)
                    .batch_norm2d(ngf)
                    .relu()
                    .conv_transpose2d(ngf, 3, 4, 2, 1, false)
                    .tanh();
            }
            GeneratorArch::G4 => {
                net.sequential("main", init)
                    .conv_transpose2d(cin, 8 * ngf, 4, 1, 0, false)
                    .batch_norm2d(8 * ngf)
                    .relu()
                    .conv_transpose2d(8 * ngf, 4 * ngf, 4, 2, 1, false)
                    .batch_norm2d(4 * ngf)
                    .relu()
                    .conv_transpose2d(4 * ngf, 2 * ngf, 4, 2, 1, false)
                    .batch_norm2d(2 * ngf)
                    .relu()
                    .conv_transpose2d(2 * ngf, 3, 4, 2, 1, false)
                    .tanh();
            }
        }
        Generator {
            net,
            emb_dim,
            nz: w.nz,
        }
    }
}

impl<B: Backend> Generator<B> {
    /// G([onehot, e, z]): `onehot` [N,11] and `z` [N,nz] are inputs, `e` [N,emb] carries grad.
    pub fn forward(
        &mut self,
        tape: &mut Tape<B>,
        vars: &[Var],
        onehot: Var,
        e: Var,
        z: Var,
        training: bool,
    ) -> Result<Var> {
        let cat = tape.concat_dim1(&[onehot, e, z])?;
        let n = tape.value(cat).dims()[0];
        let c = tape.value(cat).dims()[1];
        let x = tape.reshape(cat, &[n, c, 1, 1])?;
        self.net.run(tape, vars, 0, x, training)
    }
}

/// exp1/exp2's discriminator: image → (real/fake logit [N,1], class logits [N,10]).
#[derive(Debug)]
pub struct Discriminator<B: Backend = Cpu> {
    pub net: Network<B>,
}

impl Discriminator {
    pub fn new(w: Widths, init: &Init) -> Self {
        let mut net = Network::new("netD");
        let ndf = w.ndf;
        net.sequential("feature", init)
            .conv2d(3, ndf, 3, 1, 1, true)
            .batch_norm2d(ndf)
            .leaky_relu(SLOPE)
            .max_pool2d(2)
            .conv2d(ndf, 2 * ndf, 3, 1, 1, true)
            .batch_norm2d(2 * ndf)
            .leaky_relu(SLOPE)
            .max_pool2d(2)
            .conv2d(2 * ndf, 4 * ndf, 3, 1, 1, true)
            .batch_norm2d(4 * ndf)
            .leaky_relu(SLOPE)
            .max_pool2d(2)
            .conv2d(4 * ndf, 2 * ndf, 3, 1, 1, true)
            .batch_norm2d(2 * ndf)
            .leaky_relu(SLOPE)
            .max_pool2d(4);
        net.sequential("classifier_c", init)
            .linear(2 * ndf, CLASSES, true);
        net.sequential("classifier_s", init)
            .linear(2 * ndf, 1, true);
        Discriminator { net }
    }
}

impl<B: Backend> Discriminator<B> {
    /// (real/fake logit [N,1], class logits [N,10]).
    pub fn forward(
        &mut self,
        tape: &mut Tape<B>,
        vars: &[Var],
        x: Var,
        training: bool,
    ) -> Result<(Var, Var)> {
        let h = self.net.run(tape, vars, 0, x, training)?;
        let h = tape.flatten(h)?;
        let c = self.net.run(tape, vars, 1, h, training)?;
        let s = self.net.run(tape, vars, 2, h, training)?;
        Ok((s, c))
    }
}

/// exp3's discriminators: image → K logits (D_src: 11 = 10 classes + fake; D_tgt: 1).
#[derive(Debug)]
pub struct PatchDiscriminator<B: Backend = Cpu> {
    pub net: Network<B>,
    pub outputs: usize,
}

impl PatchDiscriminator {
    pub fn new(name: &str, outputs: usize, w: Widths, init: &Init) -> Self {
        let mut net = Network::new(name);
        let ndf = w.ndf;
        net.sequential("main", init)
            .conv2d(3, ndf, 4, 2, 1, false)
            .leaky_relu(SLOPE)
            .conv2d(ndf, 2 * ndf, 4, 2, 1, false)
            .batch_norm2d(2 * ndf)
            .leaky_relu(SLOPE)
            .conv2d(2 * ndf, 4 * ndf, 4, 2, 1, false)
            .batch_norm2d(4 * ndf)
            .leaky_relu(SLOPE)
            .conv2d(4 * ndf, outputs, 4, 1, 0, false);
        PatchDiscriminator { net, outputs }
    }
}

impl<B: Backend> PatchDiscriminator<B> {
    /// Logits [N, K].
    pub fn forward(
        &mut self,
        tape: &mut Tape<B>,
        vars: &[Var],
        x: Var,
        training: bool,
    ) -> Result<Var> {
        let h = self.net.run(tape, vars, 0, x, training)?;
        tape.flatten(h)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn names(net: &Network) -> Vec<String> {
        net.named_tensors().into_iter().map(|(n, _, _)| n).collect()
    }

    #[test]
    fn exp1_names_are_the_authors_state_dict_keys() {
        let init = Init { seed: 0 };
        let w = Widths::default();
        let f = Embedder::new(Backbone::F1C1, w, &init);
        assert_eq!(
            names(&f.net),
            [
                "netF.feature.0.weight",
                "netF.feature.0.bias",
                "netF.feature.3.weight",
                "netF.feature.3.bias",
                "netF.feature.6.weight",
                "netF.feature.6.bias"
            ]
        );
        let d = Discriminator::new(w, &init);
        let dn = names(&d.net);
        for key in [
            "netD.feature.0.weight",
            "netD.feature.1.weight",
            "netD.feature.1.running_mean",
            "netD.feature.13.running_var",
            "netD.feature.12.bias",
            "netD.classifier_c.0.weight",
            "netD.classifier_s.0.bias",
        ] {
            assert!(dn.iter().any(|n| n == key), "missing {key} in {dn:?}");
        }
        let g = Generator::new(GeneratorArch::G, f.dim, w, &init);
        let gn = names(&g.net);
        for key in [
            "netG.main.0.weight",
            "netG.main.1.running_var",
            "netG.main.12.weight",
        ] {
            assert!(gn.iter().any(|n| n == key), "missing {key} in {gn:?}");
        }
        assert_eq!(g.net.params[0].value.dims(), &[651, 512, 2, 2]);
    }

    #[test]
    fn shapes_flow_through_every_network() {
        let init = Init { seed: 1 };
        let w = Widths {
            ndf: 4,
            ngf: 4,
            nz: 5,
        };
        for backbone in [Backbone::F1C1, Backbone::F2C2] {
            let mut f = Embedder::new(backbone, w, &init);
            let mut c = Classifier::new(backbone, w, &init);
            let mut tape = Tape::new();
            let x = tape.input(crate::Tensor::zeros([2, 3, 32, 32]).unwrap());
            let fv = f.net.bind(&mut tape).unwrap();
            let e = f.forward(&mut tape, &fv, x, true).unwrap();
            assert_eq!(tape.value(e).dims(), &[2, f.dim]);
            let cv = c.net.bind(&mut tape).unwrap();
            let y = c.forward(&mut tape, &cv, e, true).unwrap();
            assert_eq!(tape.value(y).dims(), &[2, 10]);
            for arch in [GeneratorArch::G, GeneratorArch::G4] {
                let mut g = Generator::new(arch, f.dim, w, &init);
                let gv = g.net.bind(&mut tape).unwrap();
                let oh = tape.input(crate::Tensor::zeros([2, 11]).unwrap());
                let z = tape.input(crate::Tensor::zeros([2, 5]).unwrap());
                let img = g.forward(&mut tape, &gv, oh, e, z, true).unwrap();
                assert_eq!(tape.value(img).dims(), &[2, 3, 32, 32]);
            }
        }
        let mut d = Discriminator::new(w, &init);
        let mut tape = Tape::new();
        let x = tape.input(crate::Tensor::zeros([2, 3, 32, 32]).unwrap());
        let dv = d.net.bind(&mut tape).unwrap();
        let (s, c) = d.forward(&mut tape, &dv, x, true).unwrap();
        assert_eq!(tape.value(s).dims(), &[2, 1]);
        assert_eq!(tape.value(c).dims(), &[2, 10]);
        let mut ds = PatchDiscriminator::new("netDsrc", 11, w, &init);
        let dsv = ds.net.bind(&mut tape).unwrap();
        let o = ds.forward(&mut tape, &dsv, x, true).unwrap();
        assert_eq!(tape.value(o).dims(), &[2, 11]);
    }
}
