//! The autograd tape.
//!
//! A `Tape` records a forward pass as a list of nodes in execution order. Each node holds its
//! value, the indices of its inputs and, when it needs one, a dedicated backward routine
//! (`BackwardOp`). Because nodes are appended in execution order, the list is already a
//! topological order: backward walks it once in reverse.
//!
//! Semantics (what the GTA iteration relies on):
//! - `backward(loss, wrt)` returns one fresh gradient per requested `Var`, in order. Nothing is
//!   accumulated into parameters or kept between calls: callers own the gradients. A requested
//!   `Var` the loss does not depend on gets zeros.
//! - Only nodes that lie on a path from a requested `Var` to the loss are visited, and each op's
//!   backward is told which of its inputs need a gradient, so e.g. the F step's backward
//!   through D computes no weight gradients for D.
//! - The tape is not consumed or changed by `backward`: several backward passes over one tape
//!   (sharing forward results) give the same gradients as separate tapes would.
//! - Within one pass, gradients reaching a node along several paths are summed in node order,
//!   so results are deterministic.
//! - `no_grad` records values without backward routines (evaluation).

use crate::backend::{Backend, Cpu, TensorValue};
use crate::error::{Error, Result};
use std::sync::atomic::{AtomicU64, Ordering};

/// A handle to a value on one tape.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Var {
    index: usize,
    tape: u64,
}

/// The backward routine of one recorded op, on backend `B`.
pub trait BackwardOp<B: Backend = Cpu> {
    /// Name for error messages.
    fn name(&self) -> &'static str;
    /// Gradients of the loss with respect to each input for which `need[i]` is true (`None`
    /// elsewhere), given the forward inputs and output and the gradient of the loss with
    /// respect to the output.
    fn backward(
        &self,
        backend: &B,
        inputs: &[&B::Tensor],
        output: &B::Tensor,
        grad_output: &B::Tensor,
        need: &[bool],
    ) -> Result<Vec<Option<B::Tensor>>>;
}

struct Node<B: Backend> {
    value: B::Tensor,
    inputs: Vec<usize>,
    /// `None` for leaves and for ops recorded without gradient tracking.
    backward: Option<Box<dyn BackwardOp<B>>>,
    requires_grad: bool,
}

/// A tape of ops on backend `B` (the CPU unless said otherwise).
pub struct Tape<B: Backend = Cpu> {
    id: u64,
    nodes: Vec<Node<B>>,
    grad_enabled: bool,
    backend: B,
}

impl Default for Tape {
    fn default() -> Self {
        Self::new()
    }
}

static NEXT_TAPE_ID: AtomicU64 = AtomicU64::new(1);

impl Tape {
    /// A tape on the CPU backend.
    pub fn new() -> Self {
        Tape::on(Cpu)
    }
}

impl<B: Backend> Tape<B> {
    /// A tape whose ops run on `backend`.
    pub fn on(backend: B) -> Self {
        Tape {
            id: NEXT_TAPE_ID.fetch_add(1, Ordering::Relaxed),
            nodes: Vec::new(),
            grad_enabled: true,
            backend,
        }
    }

    /// The backend the ops run on.
    pub fn backend(&self) -> &B {
        &self.backend
    }

    /// A leaf that gradients can be requested for (a parameter, or anything to differentiate).
    pub fn param(&mut self, value: B::Tensor) -> Var {
        let requires_grad = self.grad_enabled;
        self.push(value, Vec::new(), None, requires_grad)
    }

    /// A constant leaf (data, labels, noise): never differentiated.
    pub fn input(&mut self, value: B::Tensor) -> Var {
        self.push(value, Vec::new(), None, false)
    }

    pub fn value(&self, v: Var) -> &B::Tensor {
        self.check(v).expect("Var from another tape");
        &self.nodes[v.index].value
    }

    /// Whether a gradient can flow to `v` (a parameter, or computed from one with tracking on).
    pub fn requires_grad(&self, v: Var) -> bool {
        self.nodes[v.index].requires_grad
    }

    /// Number of recorded nodes.
    pub fn len(&self) -> usize {
        self.nodes.len()
    }

    pub fn is_empty(&self) -> bool {
        self.nodes.is_empty()
    }

    /// Run `f` with gradient tracking off: ops record values only (evaluation).
    pub fn no_grad<R>(&mut self, f: impl FnOnce(&mut Tape<B>) -> R) -> R {
        let saved = self.grad_enabled;
        self.grad_enabled = false;
        let r = f(self);
        self.grad_enabled = saved;
        r
    }

    /// Record an op's output. Ops call this; `backward` is kept only when gradient tracking is
    /// on and some input requires a gradient.
    pub fn record(
        &mut self,
        inputs: &[Var],
        output: B::Tensor,
        backward: impl BackwardOp<B> + 'static,
    ) -> Result<Var> {
        for &v in inputs {
            self.check(v)?;
        }
        let requires_grad =
            self.grad_enabled && inputs.iter().any(|v| self.nodes[v.index].requires_grad);
        let backward: Option<Box<dyn BackwardOp<B>>> = if requires_grad {
            Some(Box::new(backward))
        } else {
            None
        };
        let idx = inputs.iter().map(|v| v.index).collect();
        Ok(self.push(output, idx, backward, requires_grad))
    }

    /// Gradients of the scalar `loss` with respect to each of `wrt`, in order.
    pub fn backward(&self, loss: Var, wrt: &[Var]) -> Result<Vec<B::Tensor>> {
        self.check(loss)?;
        for &v in wrt {
            self.check(v)?;
        }
        let loss_value = &self.nodes[loss.index].value;
        if loss_value.numel() != 1 {
            return Err(Error::Autograd(format!(
                "backward needs a scalar loss, got shape {}",
                loss_value.shape()
            )));
        }

        // reach[i]: node i is requested, or depends (through tracked ops) on a requested node.
        let last = loss.index;
        let mut requested = vec![false; last + 1];
        for v in wrt {
            if v.index <= last {
                requested[v.index] = true;
            }
        }
        let mut reach = requested.clone();
        for i in 0..=last {
            let node = &self.nodes[i];
            if !reach[i] && node.backward.is_some() {
                reach[i] = node.inputs.iter().any(|&j| reach[j]);
            }
        }

        let b = &self.backend;
        let mut grads: Vec<Option<B::Tensor>> = (0..=last).map(|_| None).collect();
        let mut results: Vec<Option<B::Tensor>> = wrt.iter().map(|_| None).collect();
        if reach[last] {
            grads[last] = Some(b.full(loss_value.shape(), 1.0)?);
        }
        for i in (0..=last).rev() {
            if !reach[i] {
                continue;
            }
            let Some(grad) = grads[i].take() else {
                continue;
            };
            let node = &self.nodes[i];
            if let Some(op) = &node.backward {
                let need: Vec<bool> = node.inputs.iter().map(|&j| reach[j]).collect();
                if need.iter().any(|&n| n) {
                    let inputs: Vec<&B::Tensor> =
                        node.inputs.iter().map(|&j| &self.nodes[j].value).collect();
                    let input_grads = op.backward(b, &inputs, &node.value, &grad, &need)?;
                    if input_grads.len() != node.inputs.len() {
                        return Err(Error::Autograd(format!(
                            "{}: backward returned {} gradients for {} inputs",
                            op.name(),
                            input_grads.len(),
                            node.inputs.len()
                        )));
                    }
                    for ((&j, g), &needed) in node.inputs.iter().zip(input_grads).zip(&need) {
                        let Some(g) = g else {
                            if needed {
                                return Err(Error::Autograd(format!(
                                    "{}: backward omitted a needed gradient",
                                    op.name()
                                )));
                            }
                            continue;
                        };
                        if !needed {
                            continue;
                        }
                        if g.shape() != self.nodes[j].value.shape() {
                            return Err(Error::Autograd(format!(
                                "{}: gradient shape {} for an input of shape {}",
                                op.name(),
                                g.shape(),
                                self.nodes[j].value.shape()
                            )));
                        }
                        grads[j] = Some(match grads[j].take() {
                            Some(acc) => b.add(&acc, &g)?,
                            None => g,
                        });
                    }
                }
            }
            if requested[i] {
                for (k, v) in wrt.iter().enumerate() {
                    if v.index == i {
                        results[k] = Some(grad.clone());
                    }
                }
            }
        }

        wrt.iter()
            .zip(results)
            .map(|(v, g)| match g {
                Some(g) => Ok(g),
                None => b.full(self.nodes[v.index].value.shape(), 0.0),
            })
            .collect()
    }

    fn push(
        &mut self,
        value: B::Tensor,
        inputs: Vec<usize>,
        backward: Option<Box<dyn BackwardOp<B>>>,
        requires_grad: bool,
    ) -> Var {
        self.nodes.push(Node {
            value,
            inputs,
            backward,
            requires_grad,
        });
        Var {
            index: self.nodes.len() - 1,
            tape: self.id,
        }
    }

    fn check(&self, v: Var) -> Result<()> {
        if v.tape != self.id || v.index >= self.nodes.len() {
            return Err(Error::Autograd(
                "a Var from another tape was used".to_string(),
            ));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tensor::Tensor;
    use std::cell::RefCell;
    use std::rc::Rc;

    /// (op name, need flags) of every backward call, in order.
    type CallLog = Rc<RefCell<Vec<(&'static str, Vec<bool>)>>>;

    /// y = a·x (elementwise, scalar a per input 0) — records which input gradients were asked.
    struct Scale {
        factor: f32,
        log: CallLog,
        name: &'static str,
    }

    impl BackwardOp for Scale {
        fn name(&self) -> &'static str {
            self.name
        }
        fn backward(
            &self,
            _backend: &crate::backend::Cpu,
            inputs: &[&Tensor],
            _output: &Tensor,
            grad_output: &Tensor,
            need: &[bool],
        ) -> Result<Vec<Option<Tensor>>> {
            self.log.borrow_mut().push((self.name, need.to_vec()));
            let g: Vec<f32> = grad_output.data().iter().map(|v| v * self.factor).collect();
            Ok(inputs
                .iter()
                .zip(need)
                .map(|(x, &n)| n.then(|| Tensor::new(x.shape().clone(), g.clone()).unwrap()))
                .collect())
        }
    }

    fn scale(tape: &mut Tape, x: Var, factor: f32, name: &'static str, log: &CallLog) -> Var {
        let y: Vec<f32> = tape.value(x).data().iter().map(|v| v * factor).collect();
        let y = Tensor::new(tape.value(x).shape().clone(), y).unwrap();
        let op = Scale {
            factor,
            log: log.clone(),
            name,
        };
        tape.record(&[x], y, op).unwrap()
    }

    #[test]
    fn backward_visits_only_the_part_that_reaches_the_requested_vars() {
        let log = Rc::new(RefCell::new(Vec::new()));
        let mut tape = Tape::new();
        let a = tape.param(Tensor::scalar(1.0));
        let b = tape.param(Tensor::scalar(2.0));
        // chain: a → ×3 (f) → ×5 (g) = loss;  b → ×7 (h) (not on the loss path)
        let fa = scale(&mut tape, a, 3.0, "f", &log);
        let _hb = scale(&mut tape, b, 7.0, "h", &log);
        let loss = scale(&mut tape, fa, 5.0, "g", &log);

        // Requesting only fa (an intermediate): g runs, f must not (nothing below fa asked).
        let g = tape.backward(loss, &[fa]).unwrap();
        assert_eq!(g[0].data(), &[5.0]);
        assert_eq!(*log.borrow(), vec![("g", vec![true])]);
        log.borrow_mut().clear();

        // Requesting a and b: b gets zeros, h is never visited.
        let g = tape.backward(loss, &[a, b]).unwrap();
        assert_eq!(g[0].data(), &[15.0]);
        assert_eq!(g[1].data(), &[0.0]);
        assert_eq!(*log.borrow(), vec![("g", vec![true]), ("f", vec![true])]);
    }

    #[test]
    fn gradients_from_several_paths_are_summed_and_duplicates_answered() {
        let log = Rc::new(RefCell::new(Vec::new()));
        let mut tape = Tape::new();
        let a = tape.param(Tensor::scalar(1.0));
        let p1 = scale(&mut tape, a, 2.0, "p1", &log);
        let p2 = scale(&mut tape, a, 3.0, "p2", &log);
        let sum_out =
            Tensor::scalar(tape.value(p1).item().unwrap() + tape.value(p2).item().unwrap());
        struct Add;
        impl BackwardOp for Add {
            fn name(&self) -> &'static str {
                "add"
            }
            fn backward(
                &self,
                _backend: &crate::backend::Cpu,
                _i: &[&Tensor],
                _o: &Tensor,
                g: &Tensor,
                need: &[bool],
            ) -> Result<Vec<Option<Tensor>>> {
                Ok(need.iter().map(|&n| n.then(|| g.clone())).collect())
            }
        }
        let loss = tape.record(&[p1, p2], sum_out, Add).unwrap();
        let g = tape.backward(loss, &[a, a]).unwrap();
        assert_eq!(g[0].data(), &[5.0]);
        assert_eq!(g[1].data(), &[5.0]);
    }

    #[test]
    fn inputs_are_not_differentiated_and_no_grad_drops_backward() {
        let log = Rc::new(RefCell::new(Vec::new()));
        let mut tape = Tape::new();
        let x = tape.input(Tensor::scalar(1.0));
        let y = scale(&mut tape, x, 2.0, "y", &log);
        assert!(!tape.requires_grad(y));
        let a = tape.param(Tensor::scalar(1.0));
        let z = tape.no_grad(|t| scale(t, a, 2.0, "z", &log));
        assert!(!tape.requires_grad(z));
        assert_eq!(tape.backward(z, &[a]).unwrap()[0].data(), &[0.0]);
        assert!(log.borrow().is_empty());
    }
}
