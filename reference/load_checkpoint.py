#!/usr/bin/env python3
"""Load a gtadapt checkpoint into the PyTorch reference networks (strict load_state_dict), and
optionally write the PyTorch state back in gtadapt's naming.

    python3 reference/load_checkpoint.py runs/exp1-quick/checkpoints/last.safetensors [--out back.safetensors]

The experiment and widths come from the checkpoint's metadata. Tensors named adam.* (optimizer
state) are gtadapt's own and are skipped here.
"""
import argparse
import os
import sys

import torch
from safetensors import safe_open
from safetensors.torch import save_file

sys.path.insert(0, os.path.dirname(__file__))
import gta_torch  # noqa: E402


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("checkpoint")
    ap.add_argument("--out", help="write the loaded PyTorch state back to this safetensors file")
    args = ap.parse_args()
    with safe_open(args.checkpoint, "pt") as f:
        meta = f.metadata()
        tensors = {k: f.get_tensor(k) for k in f.keys() if not k.startswith("adam.")}
    exp = meta["experiment"].replace("source-only", "sourceonly")
    cfg = gta_torch.Config(ndf=int(meta["ndf"]), ngf=int(meta["ngf"]), nz=int(meta["nz"]))
    nets = gta_torch.build_networks(exp, cfg)
    back = {}
    for name, net in nets.items():
        sd = {k[len(name) + 1:]: v for k, v in tensors.items() if k.startswith(name + ".")}
        net.load_state_dict(sd, strict=True)
        n = sum(p.numel() for p in net.parameters())
        print(f"{name}: loaded {len(sd)} tensors strictly ({n:,} parameters)")
        back.update({f"{name}.{k}": v.detach().clone() for k, v in net.state_dict().items()})
    used = {k for k in back}
    extra = set(tensors) - used
    if extra:
        sys.exit(f"checkpoint tensors no network took: {sorted(extra)[:5]} ...")
    for k, v in back.items():
        if not torch.equal(v, tensors[k]):
            sys.exit(f"{k}: changed on the way through PyTorch")
    print(f"{exp}: every tensor of {args.checkpoint} loaded, and reads back bit for bit")
    if args.out:
        save_file(back, args.out, metadata={"experiment": meta["experiment"]})
        print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
