#!/usr/bin/env python3
"""Write PyTorch reference fixtures for every CPU op of gtadapt into tests/fixtures/.

Each fixture is a safetensors file: the op's inputs, parameters, the upstream gradient `gy`,
the outputs and the gradients PyTorch computes (f32, on the CPU). The torch version is stored
in the file's metadata. tests/torch_parity.rs compares our CPU ops against them.

    pip install torch safetensors   # CPU is enough; a large download, so not in CI
    python3 reference/make_fixtures.py [--out tests/fixtures]
"""
import argparse
import os

import torch
import torch.nn.functional as F
from safetensors.torch import save_file


def rnd(*shape, scale=1.0):
    return (torch.randn(*shape) * scale).float()


def grads_of(out, gy, *tensors):
    """Backpropagate `gy` from `out` and return the gradients of `tensors`."""
    return torch.autograd.grad(out, tensors, gy)


def save(out_dir, name, tensors, **meta):
    meta = {k: str(v) for k, v in meta.items()}
    meta["torch_version"] = torch.__version__
    tensors = {k: v.detach().clone().contiguous() for k, v in tensors.items()}
    save_file(tensors, os.path.join(out_dir, f"{name}.safetensors"), metadata=meta)


def conv_fixtures(out):
    for name, xs, ws, bias, stride, pad in [
        ("conv2d_k3s2p1", (3, 3, 7, 9), (5, 3, 3, 3), True, 2, 1),
        ("conv2d_k5s1p0", (2, 3, 11, 9), (7, 3, 5, 5), True, 1, 0),
        ("conv2d_k3s1p2_nobias", (3, 4, 5, 6), (3, 4, 3, 3), False, 1, 2),
    ]:
        x = rnd(*xs).requires_grad_()
        w = rnd(*ws, scale=0.3).requires_grad_()
        b = rnd(ws[0]).requires_grad_() if bias else None
        y = F.conv2d(x, w, b, stride=stride, padding=pad)
        gy = rnd(*y.shape)
        params = [x, w] + ([b] if bias else [])
        g = grads_of(y, gy, *params)
        t = {"x": x, "w": w, "y": y, "gy": gy, "dx": g[0], "dw": g[1]}
        if bias:
            t.update(b=b, db=g[2])
        save(out, name, t, stride=stride, padding=pad)
    for name, xs, ws, bias, stride, pad in [
        ("conv_transpose2d_k4s2p1", (3, 6, 3, 4), (6, 5, 4, 4), True, 2, 1),
        ("conv_transpose2d_k2s1p0_nobias", (3, 7, 1, 1), (7, 5, 2, 2), False, 1, 0),
    ]:
        x = rnd(*xs).requires_grad_()
        w = rnd(*ws, scale=0.3).requires_grad_()
        b = rnd(ws[1]).requires_grad_() if bias else None
        y = F.conv_transpose2d(x, w, b, stride=stride, padding=pad)
        gy = rnd(*y.shape)
        params = [x, w] + ([b] if bias else [])
        g = grads_of(y, gy, *params)
        t = {"x": x, "w": w, "y": y, "gy": gy, "dx": g[0], "dw": g[1]}
        if bias:
            t.update(b=b, db=g[2])
        save(out, name, t, stride=stride, padding=pad)


def batchnorm_fixtures(out):
    c = 5
    for training in (True, False):
        x = rnd(3, c, 4, 7, scale=2.0).add(0.5).requires_grad_()
        w = (1.0 + 0.1 * rnd(c)).requires_grad_()
        b = rnd(c, scale=0.1).requires_grad_()
        rm0, rv0 = rnd(c, scale=0.1), (1.0 + 0.2 * torch.rand(c)).float()
        rm, rv = rm0.clone(), rv0.clone()
        y = F.batch_norm(x, rm, rv, w, b, training=training, momentum=0.1, eps=1e-5)
        gy = rnd(*y.shape)
        dx, dw, db = grads_of(y, gy, x, w, b)
        save(out, "batch_norm2d_" + ("train" if training else "eval"),
             {"x": x, "w": w, "b": b, "running_mean_before": rm0, "running_var_before": rv0,
              "running_mean_after": rm, "running_var_after": rv, "y": y, "gy": gy,
              "dx": dx, "dw": dw, "db": db},
             eps=1e-5, momentum=0.1)


def pool_fixtures(out):
    for name, xs, k in [("max_pool2d_k2", (3, 5, 6, 10), 2), ("max_pool2d_k4", (2, 3, 8, 12), 4),
                        ("max_pool2d_k2_odd", (2, 3, 7, 9), 2)]:
        x = rnd(*xs).requires_grad_()
        y = F.max_pool2d(x, k)
        gy = rnd(*y.shape)
        (dx,) = grads_of(y, gy, x)
        save(out, name, {"x": x, "y": y, "gy": gy, "dx": dx}, kernel=k)


def linear_fixtures(out):
    for name, n, i, o, bias in [("linear", 3, 7, 5, True), ("linear_nobias", 4, 9, 2, False)]:
        x = rnd(n, i).requires_grad_()
        w = rnd(o, i, scale=0.3).requires_grad_()
        b = rnd(o).requires_grad_() if bias else None
        y = F.linear(x, w, b)
        gy = rnd(*y.shape)
        params = [x, w] + ([b] if bias else [])
        g = grads_of(y, gy, *params)
        t = {"x": x, "w": w, "y": y, "gy": gy, "dx": g[0], "dw": g[1]}
        if bias:
            t.update(b=b, db=g[2])
        save(out, name, t)


def activation_fixtures(out):
    for name, fn in [("relu", F.relu), ("leaky_relu", lambda v: F.leaky_relu(v, 0.2)),
                     ("tanh", torch.tanh), ("sigmoid", torch.sigmoid)]:
        x = rnd(3, 5, 7, scale=3.0).requires_grad_()
        y = fn(x)
        gy = rnd(*y.shape)
        (dx,) = grads_of(y, gy, x)
        save(out, name, {"x": x, "y": y, "gy": gy, "dx": dx})


def layout_fixtures(out):
    parts = [rnd(3, c, 2, 1).requires_grad_() for c in (2, 5, 4)]
    y = torch.cat(parts, dim=1)
    gy = rnd(*y.shape)
    g = grads_of(y, gy, *parts)
    t = {f"x{i}": p for i, p in enumerate(parts)}
    t.update({f"dx{i}": d for i, d in enumerate(g)})
    t.update(y=y, gy=gy)
    save(out, "concat_dim1", t)
    x = rnd(3, 4, 2, 5).requires_grad_()
    y = torch.flatten(x, 1)
    gy = rnd(*y.shape)
    (dx,) = grads_of(y, gy, x)
    save(out, "flatten", {"x": x, "y": y, "gy": gy, "dx": dx})


def loss_fixtures(out):
    for name, n, k in [("cross_entropy_k7", 3, 7), ("cross_entropy_k11", 5, 11)]:
        x = rnd(n, k, scale=3.0).requires_grad_()
        labels = torch.randint(0, k, (n,))
        loss = F.cross_entropy(x, labels)
        (dx,) = grads_of(loss, torch.tensor(1.0), x)
        save(out, name, {"x": x, "labels": labels.int(), "loss": loss.reshape(1), "dx": dx})
    for name, shape, target in [("bce_const1", (5, 1), 1.0), ("bce_const0", (5, 1), 0.0),
                                ("bce_per_element", (3, 7), None)]:
        x = rnd(*shape, scale=4.0).requires_grad_()
        t = torch.rand(*shape) if target is None else torch.full(shape, target)
        loss = F.binary_cross_entropy_with_logits(x, t)
        (dx,) = grads_of(loss, torch.tensor(1.0), x)
        save(out, name, {"x": x, "target": t, "loss": loss.reshape(1), "dx": dx})
    logits = rnd(9, 10)
    labels = torch.randint(0, 10, (9,))
    labels[:4] = logits[:4].argmax(1)  # some right, some (likely) wrong
    correct = (logits.argmax(1) == labels).sum()
    save(out, "accuracy", {"logits": logits, "labels": labels.int(),
                           "correct": correct.reshape(1).int()})


def adam_fixtures(out):
    p = torch.nn.Parameter(rnd(13))
    opt = torch.optim.Adam([p], lr=5e-4, betas=(0.8, 0.999), eps=1e-8)
    t = {"p0": p.detach().clone()}
    for step in range(1, 4):
        g = rnd(13)
        p.grad = g.clone()
        opt.step()
        t[f"g{step}"] = g
        t[f"p{step}"] = p.detach().clone()
    save(out, "adam", t, lr=5e-4, beta1=0.8, beta2=0.999, eps=1e-8, steps=3)


def composite_fixture(out):
    """conv → batch norm → LeakyReLU → max pool → linear → cross-entropy, one scalar loss."""
    x = rnd(4, 3, 8, 8).requires_grad_()
    cw = rnd(5, 3, 3, 3, scale=0.3).requires_grad_()
    cb = rnd(5, scale=0.1).requires_grad_()
    bw = (1.0 + 0.1 * rnd(5)).requires_grad_()
    bb = rnd(5, scale=0.1).requires_grad_()
    lw = rnd(7, 5 * 4 * 4, scale=0.1).requires_grad_()
    lb = rnd(7, scale=0.1).requires_grad_()
    labels = torch.randint(0, 7, (4,))
    rm, rv = torch.zeros(5), torch.ones(5)
    h = F.conv2d(x, cw, cb, padding=1)
    h = F.batch_norm(h, rm, rv, bw, bb, training=True, momentum=0.1, eps=1e-5)
    h = F.leaky_relu(h, 0.2)
    h = F.max_pool2d(h, 2)
    logits = F.linear(torch.flatten(h, 1), lw, lb)
    loss = F.cross_entropy(logits, labels)
    g = grads_of(loss, torch.tensor(1.0), x, cw, cb, bw, bb, lw, lb)
    names = ["x", "conv_w", "conv_b", "bn_w", "bn_b", "lin_w", "lin_b"]
    t = dict(zip(names, [x, cw, cb, bw, bb, lw, lb]))
    t.update({"d" + n: d for n, d in zip(names, g)})
    t.update(labels=labels.int(), loss=loss.reshape(1), running_mean=rm, running_var=rv)
    save(out, "composite_block", t, slope=0.2)


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", default=os.path.join(os.path.dirname(__file__), "..", "tests", "fixtures"))
    args = ap.parse_args()
    os.makedirs(args.out, exist_ok=True)
    torch.manual_seed(20180618)  # fixed: the fixtures are committed
    torch.set_num_threads(1)
    for make in [conv_fixtures, batchnorm_fixtures, pool_fixtures, linear_fixtures,
                 activation_fixtures, layout_fixtures, loss_fixtures, adam_fixtures,
                 composite_fixture]:
        make(args.out)
    print(f"wrote fixtures to {os.path.abspath(args.out)} (torch {torch.__version__})")


if __name__ == "__main__":
    main()
